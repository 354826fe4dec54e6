//! The pages: each reads what it shows (through the view models, the diagnostics snapshot
//! and the shared error groups), never changes anything, and renders a template.

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use jiff::Timestamp;
use rota_core::{Job, JobId, JobState};
use rota_store::{
    JobFilter, JobGetParams, JobListParams, JobListRunningParams, ScheduleListParams,
    WorkerListParams,
};
use serde::Deserialize;

use super::charts::{self, Window};
use super::live::Groups;
use super::session::{self, Viewer};
use super::{render, store_error_page};
use crate::diagnostics::Snapshot;
use crate::state::AppState;

/// The states in the order pages show them.
pub const STATES: [JobState; 7] = [
    JobState::Available,
    JobState::Scheduled,
    JobState::Running,
    JobState::Retryable,
    JobState::Completed,
    JobState::Dead,
    JobState::Cancelled,
];

/// Longest an args or result value is shown inline before the raw link.
pub const VALUE_SHOWN_MAX: usize = 4096;
/// Most jobs one listing looks through (newest first): a filter that matches few answers
/// in bounded time, and the page offers to search on from where it stopped.
pub const JOBS_SCANNED: usize = 100_000;
/// Longest args are shown in a list.
pub const ARGS_IN_LIST_MAX: usize = 120;

/// What every page shows around its content.
#[derive(Debug, Clone)]
pub struct Chrome {
    /// The page in the navigation.
    pub nav: &'static str,
    /// Who is looking.
    pub viewer: Viewer,
    /// Whether tokens are required (then there is a log-out button).
    pub auth_on: bool,
    /// What the last action did.
    pub flash: Option<String>,
}

impl Chrome {
    /// The server's version (asset links carry it, so a new binary's files are fetched).
    pub fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }
}

/// A page's live part by id (rendered and escaped by its own template).
fn part<'a>(parts: &'a BTreeMap<&'static str, String>, id: &str) -> &'a str {
    parts.get(id).map_or("", String::as_str)
}

fn chrome(state: &AppState, viewer: Viewer, nav: &'static str, flash: Option<String>) -> Chrome {
    Chrome {
        nav,
        viewer,
        auth_on: state.config.auth.enabled(),
        flash,
    }
}

/// The viewer, or the response that sends them to log in.
fn looker(state: &AppState, headers: &HeaderMap, here: &str) -> Result<Viewer, Response> {
    session::viewer(state, headers).map_err(|refusal| {
        if refusal == session::Refusal::NotLoggedIn || refusal == session::Refusal::UnknownToken {
            Redirect::to(&format!("/login?next={}", encode(here))).into_response()
        } else {
            super::message_page(refusal.status(), "Refused", &refusal.message())
        }
    })
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    serde_urlencoded::to_string([("", value)])
        .map(|s| s.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

/// A query string from pairs (empty values left out).
pub fn query_string(pairs: &[(&str, &str)]) -> String {
    let kept: Vec<(&str, &str)> = pairs
        .iter()
        .copied()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    serde_urlencoded::to_string(kept).unwrap_or_default()
}

/// A count with thousands separated: `100,000`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// How long ago, in a few characters.
pub fn ago(now: Timestamp, then: Timestamp) -> String {
    let secs = now.as_second() - then.as_second();
    if secs < 0 {
        return format!("in {}", short_duration(-secs));
    }
    format!("{} ago", short_duration(secs))
}

/// Seconds as `42s`, `5m`, `3h`, `2d`.
pub fn short_duration(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// A time to the second, UTC.
pub fn when(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `text` cut to `max` bytes (on a character boundary), with an ellipsis when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

// ---------------------------------------------------------------- live parts

/// One state's count.
#[derive(Debug, Clone)]
pub struct StateCount {
    /// The state.
    pub state: &'static str,
    /// How many.
    pub count: u64,
}

/// One queue's row.
#[derive(Debug, Clone)]
pub struct QueueRow {
    /// Its name.
    pub name: String,
    /// Paused?
    pub paused: bool,
    /// Counts in [`STATES`] order.
    pub counts: Vec<u64>,
    /// Oldest ready job's age.
    pub oldest_ready: Option<String>,
    /// Completed here in the last hour.
    pub completed_hour: u64,
}

/// One error group's row.
#[derive(Debug, Clone)]
pub struct GroupRow {
    /// Its fingerprint.
    pub group: String,
    /// An example message.
    pub message: String,
    /// Dead jobs in it.
    pub count: u64,
    /// Their kinds.
    pub kinds: String,
    /// First death (of those read).
    pub first: String,
    /// Latest death.
    pub latest: String,
    /// Deaths per hour.
    pub sparkline: String,
    /// The link to the group.
    pub href: String,
}

/// One doctor finding that needs attention.
#[derive(Debug, Clone)]
pub struct FindingRow {
    /// `warn` or `fail`.
    pub severity: &'static str,
    /// The check.
    pub check: String,
    /// What it found.
    pub message: String,
    /// How to fix it.
    pub fix: Option<String>,
}

/// The parts of the pages that change by themselves.
#[derive(Debug, Clone)]
pub struct LiveParts {
    /// Totals per state.
    pub states: Vec<StateCount>,
    /// Every queue.
    pub queues: Vec<QueueRow>,
    /// Error groups, largest first.
    pub groups: Vec<GroupRow>,
    /// Whether the groups come from the latest dead jobs only.
    pub sampled: bool,
    /// Findings that need attention.
    pub findings: Vec<FindingRow>,
    /// When the counts were read.
    pub taken: String,
}

#[derive(Template)]
#[template(path = "parts/states.html")]
struct StatesPart<'a> {
    p: &'a LiveParts,
}

#[derive(Template)]
#[template(path = "parts/queues.html")]
struct QueuesPart<'a> {
    p: &'a LiveParts,
    states: [JobState; 7],
}

#[derive(Template)]
#[template(path = "parts/groups.html")]
struct GroupsPart<'a> {
    groups: &'a [GroupRow],
    sampled: bool,
}

#[derive(Template)]
#[template(path = "parts/findings.html")]
struct FindingsPart<'a> {
    p: &'a LiveParts,
}

impl LiveParts {
    /// The parts as of `snapshot` and `groups`.
    pub fn new(snapshot: &Snapshot, groups: &Groups, state: &AppState, now: Timestamp) -> Self {
        let mut totals: HashMap<JobState, u64> = HashMap::new();
        for c in &snapshot.counts {
            *totals.entry(c.state).or_default() += c.count;
        }
        let states = STATES
            .iter()
            .map(|s| StateCount {
                state: s.as_str(),
                count: totals.get(s).copied().unwrap_or(0),
            })
            .collect();
        let queues = snapshot
            .queues
            .iter()
            .map(|q| queue_row(q, state))
            .collect();
        let findings = snapshot
            .findings
            .iter()
            .filter(|f| f.severity != rota_engine::doctor::Severity::Ok)
            .map(|f| FindingRow {
                severity: match f.severity {
                    rota_engine::doctor::Severity::Fail => "fail",
                    _ => "warn",
                },
                check: f.check.to_owned(),
                message: f.message.clone(),
                fix: f.fix.clone(),
            })
            .collect();
        Self {
            states,
            queues,
            groups: group_rows(groups, now),
            sampled: groups.sampled,
            findings,
            taken: when(snapshot.taken_at),
        }
    }

    /// Each part's HTML by the `data-live` id of the element it fills.
    pub fn render(&self) -> BTreeMap<&'static str, String> {
        let mut out = BTreeMap::new();
        let mut put = |id: &'static str, html: askama::Result<String>| {
            out.insert(id, html.unwrap_or_default());
        };
        put("states", StatesPart { p: self }.render());
        put(
            "queues",
            QueuesPart {
                p: self,
                states: STATES,
            }
            .render(),
        );
        put(
            "top-groups",
            GroupsPart {
                groups: &self.groups[..self.groups.len().min(5)],
                sampled: self.sampled,
            }
            .render(),
        );
        put(
            "groups",
            GroupsPart {
                groups: &self.groups[..self.groups.len().min(100)],
                sampled: self.sampled,
            }
            .render(),
        );
        put("findings", FindingsPart { p: self }.render());
        out
    }
}

fn queue_row(q: &rota_store::QueueStats, state: &AppState) -> QueueRow {
    QueueRow {
        name: q.queue.name.clone(),
        paused: q.queue.paused,
        counts: STATES
            .iter()
            .map(|s| q.counts.get(s).copied().unwrap_or(0))
            .collect(),
        oldest_ready: q
            .oldest_ready_age
            .map(|d| short_duration(d.as_secs() as i64)),
        completed_hour: state
            .dashboard
            .timeline
            .queue_completed_last_hour(&q.queue.name),
    }
}

fn group_rows(groups: &Groups, now: Timestamp) -> Vec<GroupRow> {
    groups
        .groups
        .iter()
        .map(|g| GroupRow {
            href: format!("/errors?{}", query_string(&[("group", &g.fingerprint)])),
            group: g.fingerprint.clone(),
            message: truncate(&g.message, 300),
            count: g.count,
            kinds: g.kinds.join(", "),
            first: ago(now, g.first),
            latest: ago(now, g.latest),
            sparkline: charts::sparkline(&g.recent, now),
        })
        .collect()
}

async fn live_parts(state: &AppState) -> Result<LiveParts, rota_store::StoreError> {
    let snapshot = state.diagnostics.snapshot().await?;
    let groups = state.dashboard.live.groups(state).await?;
    Ok(LiveParts::new(&snapshot, &groups, state, state.clock.now()))
}

// ---------------------------------------------------------------- overview

/// `?window=` and `?done=` of the overview.
#[derive(Debug, Default, Deserialize)]
pub struct OverviewQuery {
    window: Option<String>,
    done: Option<String>,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    chrome: Chrome,
    parts: BTreeMap<&'static str, String>,
    charts: [String; 3],
    window: &'static str,
    windows: [&'static str; 3],
}

impl OverviewPage {
    fn part(&self, id: &str) -> &str {
        part(&self.parts, id)
    }
}

/// `GET /`: counts, charts, top error groups and the doctor's warnings.
pub async fn overview(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<OverviewQuery>,
) -> Response {
    let viewer = match looker(&state, &headers, "/") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let parts = match live_parts(&state).await {
        Ok(p) => p,
        Err(e) => return store_error_page(&e),
    };
    let window = Window::parse(q.window.as_deref());
    let (count, width) = window.shape();
    let series = state.dashboard.timeline.series(count, width);
    render(&OverviewPage {
        chrome: chrome(&state, viewer, "overview", q.done),
        parts: parts.render(),
        charts: charts::overview(&series, width),
        window: window.as_str(),
        windows: ["1h", "24h", "7d"],
    })
}

// ---------------------------------------------------------------- jobs

/// The jobs page's filters (all optional; bookmarkable).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct JobsQuery {
    /// One state.
    pub state: Option<String>,
    /// One queue.
    pub queue: Option<String>,
    /// One kind.
    pub kind: Option<String>,
    /// One tag.
    pub tag: Option<String>,
    /// One job id.
    pub id: Option<String>,
    /// One error group.
    pub group: Option<String>,
    /// Created at or after.
    pub from: Option<String>,
    /// Created before.
    pub to: Option<String>,
    /// The previous page's last job.
    pub after: Option<String>,
    /// Page size.
    pub limit: Option<String>,
    /// What the last action did.
    pub done: Option<String>,
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().map(str::trim).unwrap_or("")
}

/// A time filter: RFC 3339, or a browser's `datetime-local` (read as UTC).
fn time_filter(field: &str, raw: &str) -> Result<Option<Timestamp>, String> {
    if raw.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = raw.parse::<Timestamp>() {
        return Ok(Some(t));
    }
    raw.parse::<jiff::civil::DateTime>()
        .ok()
        .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| Some(z.timestamp()))
        .ok_or_else(|| format!("{field}: {raw:?} is not a time (use 2026-12-04T10:00 or RFC 3339)"))
}

impl JobsQuery {
    /// The filter these fields describe, or what is wrong with one.
    pub fn filter(&self) -> Result<JobFilter, String> {
        let states = match opt(&self.state) {
            "" | "all" => vec![],
            s => vec![s.parse::<JobState>().map_err(|e| format!("state: {e}"))?],
        };
        let non_empty = |s: &Option<String>| Some(opt(s).to_owned()).filter(|s| !s.is_empty());
        Ok(JobFilter {
            queues: non_empty(&self.queue).into_iter().collect(),
            kinds: non_empty(&self.kind).into_iter().collect(),
            states,
            tag: non_empty(&self.tag),
            created_after: time_filter("from", opt(&self.from))?,
            created_before: time_filter("to", opt(&self.to))?,
            error_group: non_empty(&self.group),
        })
    }

    /// The filter fields as query pairs (without the cursor).
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("state", opt(&self.state).to_owned()),
            ("queue", opt(&self.queue).to_owned()),
            ("kind", opt(&self.kind).to_owned()),
            ("tag", opt(&self.tag).to_owned()),
            ("group", opt(&self.group).to_owned()),
            ("from", opt(&self.from).to_owned()),
            ("to", opt(&self.to).to_owned()),
        ]
    }

    fn url_with(&self, key: &str, value: &str) -> String {
        let mut pairs = self.pairs();
        pairs.retain(|(k, _)| *k != key);
        pairs.push((
            if key == "state" { "state" } else { "after" },
            value.to_owned(),
        ));
        let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        format!("/jobs?{}", query_string(&borrowed))
    }
}

/// A row of the jobs list.
#[derive(Debug, Clone)]
pub struct JobRow {
    /// Its id.
    pub id: String,
    /// Its queue.
    pub queue: String,
    /// Its kind.
    pub kind: String,
    /// Its state.
    pub state: &'static str,
    /// Attempts so far, of the limit.
    pub attempts: String,
    /// Its tags.
    pub tags: String,
    /// Its args, cut short.
    pub args: String,
    /// When it was enqueued.
    pub created: String,
    /// Its last error, cut short.
    pub error: String,
}

fn job_row(job: &Job, now: Timestamp) -> JobRow {
    JobRow {
        id: job.id.to_string(),
        queue: job.queue.clone(),
        kind: job.kind.clone(),
        state: job.state.as_str(),
        attempts: format!("{}/{}", job.attempt, job.max_attempts),
        tags: job.tags.join(", "),
        args: truncate(&job.args.to_string(), ARGS_IN_LIST_MAX),
        created: ago(now, job.created_at),
        error: job
            .errors
            .last()
            .map(|e| truncate(&e.message, 120))
            .unwrap_or_default(),
    }
}

/// A state tab.
#[derive(Debug, Clone)]
pub struct Tab {
    /// Its label.
    pub label: &'static str,
    /// Its link.
    pub href: String,
    /// Whether it is the one shown.
    pub current: bool,
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    chrome: Chrome,
    q: JobsQuery,
    tabs: Vec<Tab>,
    rows: Vec<JobRow>,
    next: Option<String>,
    error: Option<String>,
    hidden: Vec<(&'static str, String)>,
    limit: usize,
    partial: bool,
    scanned: String,
}

impl JobsPage {
    fn value(&self, name: &str) -> String {
        self.q
            .pairs()
            .into_iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
            .unwrap_or_default()
    }

    fn here(&self) -> String {
        let pairs = self.q.pairs();
        let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        format!("/jobs?{}", query_string(&borrowed))
    }
}

/// `GET /jobs`: jobs matching the filters, newest first, a page at a time (keyset).
pub async fn jobs(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<JobsQuery>,
) -> Response {
    let here = format!(
        "/jobs?{}",
        query_string(
            &q.pairs()
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>()
        )
    );
    let viewer = match looker(&state, &headers, &here) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let id = opt(&q.id).to_owned();
    if !id.is_empty() {
        return match id.parse::<JobId>() {
            Ok(id) => Redirect::to(&format!("/jobs/{id}")).into_response(),
            Err(_) => super::message_page(
                422,
                "Not a job id",
                &format!("id: {id:?} is not a job id (a UUID)"),
            ),
        };
    }
    let current = opt(&q.state).to_owned();
    let mut tabs = vec![Tab {
        label: "all",
        href: q.url_with("state", ""),
        current: current.is_empty() || current == "all",
    }];
    for s in STATES {
        tabs.push(Tab {
            label: s.as_str(),
            href: q.url_with("state", s.as_str()),
            current: current == s.as_str(),
        });
    }
    let limit = opt(&q.limit).parse::<usize>().unwrap_or(50).clamp(1, 500);
    let mut page = JobsPage {
        hidden: q
            .pairs()
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .collect(),
        chrome: chrome(&state, viewer, "jobs", q.done.clone()),
        q: q.clone(),
        tabs,
        rows: vec![],
        next: None,
        error: None,
        limit,
        partial: false,
        scanned: thousands(JOBS_SCANNED),
    };
    let filter = match q.filter() {
        Ok(f) => f,
        Err(e) => {
            page.error = Some(e);
            let mut r = render(&page);
            *r.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
            return r;
        }
    };
    let after = match opt(&q.after) {
        "" => None,
        raw => match raw.parse::<JobId>() {
            Ok(id) => Some(id),
            Err(_) => {
                page.error = Some(format!("after: {raw:?} is not a job id"));
                return render(&page);
            }
        },
    };
    let listed = state
        .store
        .job_list(JobListParams {
            filter,
            after,
            limit,
            scan: Some(JOBS_SCANNED),
        })
        .await;
    match listed {
        Ok(list) => {
            let now = state.clock.now();
            page.rows = list.jobs.iter().map(|j| job_row(j, now)).collect();
            page.next = list.next.map(|n| q.url_with("after", &n.to_string()));
            page.partial = list.partial;
            render(&page)
        }
        Err(e) => store_error_page(&e),
    }
}

// ---------------------------------------------------------------- job

/// One line of a job's timeline.
#[derive(Debug, Clone)]
pub struct TimelineRow {
    /// When.
    pub at: String,
    /// What.
    pub what: String,
    /// More.
    pub detail: String,
}

/// One attempt.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    /// Its number.
    pub attempt: u32,
    /// Its worker.
    pub worker: String,
    /// When it ended.
    pub ended: String,
    /// How long it ran, when known.
    pub duration: String,
    /// Its outcome or error.
    pub outcome: String,
    /// The backtrace, if any.
    pub backtrace: Option<String>,
}

/// A JSON value shown on the job page.
#[derive(Debug, Clone)]
pub struct ShownValue {
    /// Pretty, cut to [`VALUE_SHOWN_MAX`].
    pub text: String,
    /// Whether it was cut.
    pub cut: bool,
    /// Its size in bytes.
    pub bytes: usize,
}

fn shown(value: &serde_json::Value) -> ShownValue {
    let pretty = serde_json::to_string_pretty(value).unwrap_or_default();
    ShownValue {
        bytes: pretty.len(),
        cut: pretty.len() > VALUE_SHOWN_MAX,
        text: truncate(&pretty, VALUE_SHOWN_MAX),
    }
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    chrome: Chrome,
    id: String,
    job: Job,
    state: &'static str,
    live: bool,
    timeline: Vec<TimelineRow>,
    attempts: Vec<AttemptRow>,
    args: ShownValue,
    result: Option<ShownValue>,
    checkpoint: Option<ShownValue>,
    progress: Option<(u8, String)>,
    waiting: Option<String>,
    can_retry: bool,
    can_cancel: bool,
    back: String,
}

impl JobPage {
    fn when(&self, t: &Timestamp) -> String {
        when(*t)
    }
}

/// The job's timeline: the state changes its history keeps (with each failure's message
/// and each snooze's wake-up beside the change it caused), and those its row records (the
/// enqueue, the latest start, the completion); jobs stored before histories existed get the
/// timeline their row implies.
fn job_timeline(job: &Job, history: &[rota_store::StateChange]) -> Vec<TimelineRow> {
    if history.is_empty() {
        return implied_timeline(job);
    }
    let mut rows: Vec<(Timestamp, TimelineRow)> = vec![(
        job.created_at,
        TimelineRow {
            at: when(job.created_at),
            what: "enqueued".into(),
            detail: job
                .origin
                .as_ref()
                .map(|o| format!("by schedule {} for slot {}", o.schedule, when(o.slot)))
                .unwrap_or_default(),
        },
    )];
    for change in history {
        let mut detail = change.cause.clone();
        if let Some(worker) = &change.worker {
            detail.push_str(&format!(" · worker {worker}"));
        }
        if let Some(error) = job.errors.iter().find(|e| e.at == change.at) {
            detail.push_str(&format!(
                " · attempt {}: {}",
                error.attempt,
                truncate(&error.message, 200)
            ));
        }
        if let Some(snooze) = job.snooze_log.iter().find(|s| s.at == change.at) {
            detail.push_str(&format!(" · until {}", when(snooze.until)));
        }
        rows.push((
            change.at,
            TimelineRow {
                at: when(change.at),
                what: format!("{} → {}", change.from.as_str(), change.to.as_str()),
                detail,
            },
        ));
    }
    if let Some(at) = job.attempted_at {
        let worker = job
            .lease
            .as_ref()
            .map(|l| format!(" · worker {}", l.worker))
            .unwrap_or_default();
        rows.push((
            at,
            TimelineRow {
                at: when(at),
                what: "→ running".into(),
                detail: format!("fetched · attempt {}{worker}", job.attempt),
            },
        ));
    }
    if let (JobState::Completed, Some(at)) = (job.state, job.finished_at) {
        rows.push((
            at,
            TimelineRow {
                at: when(at),
                what: "running → completed".into(),
                detail: "completed".into(),
            },
        ));
    }
    rows.sort_by_key(|(at, _)| *at);
    rows.into_iter().map(|(_, row)| row).collect()
}

fn implied_timeline(job: &Job) -> Vec<TimelineRow> {
    let mut rows: Vec<(Timestamp, TimelineRow)> = Vec::new();
    let mut row = |at: Timestamp, what: &str, detail: String| {
        rows.push((
            at,
            TimelineRow {
                at: when(at),
                what: what.to_owned(),
                detail,
            },
        ))
    };
    let origin = job
        .origin
        .as_ref()
        .map(|o| format!("by schedule {} for slot {}", o.schedule, when(o.slot)))
        .unwrap_or_default();
    row(job.created_at, "enqueued", origin);
    if job.run_at > job.created_at && job.attempt == 0 {
        row(job.run_at, "due", String::new());
    }
    for e in &job.errors {
        row(
            e.at,
            "attempt failed",
            format!(
                "attempt {} on {}: {}",
                e.attempt,
                e.worker,
                truncate(&e.message, 200)
            ),
        );
    }
    for s in &job.snooze_log {
        row(
            s.at,
            "snoozed",
            format!("attempt {}, until {}", s.attempt, when(s.until)),
        );
    }
    if let Some(at) = job.attempted_at {
        let by = job
            .lease
            .as_ref()
            .map(|l| format!("attempt {} on {}", job.attempt, l.worker))
            .unwrap_or_else(|| format!("attempt {}", job.attempt));
        row(at, "started", by);
    }
    if job.cancel_requested {
        row(
            job.attempted_at.unwrap_or(job.created_at),
            "cancel requested",
            String::new(),
        );
    }
    if let Some(at) = job.finished_at {
        row(at, job.state.as_str(), String::new());
    }
    rows.sort_by_key(|(at, _)| *at);
    rows.into_iter().map(|(_, r)| r).collect()
}

fn job_attempts(job: &Job) -> Vec<AttemptRow> {
    let mut rows: Vec<AttemptRow> = job
        .errors
        .iter()
        .map(|e| AttemptRow {
            attempt: e.attempt,
            worker: e.worker.clone(),
            ended: when(e.at),
            duration: String::new(),
            outcome: e.message.clone(),
            backtrace: e.backtrace.clone(),
        })
        .collect();
    let last_failed = job.errors.last().map_or(0, |e| e.attempt);
    if job.attempt > last_failed {
        if let Some(start) = job.attempted_at {
            let end = job.finished_at;
            rows.push(AttemptRow {
                attempt: job.attempt,
                worker: job
                    .lease
                    .as_ref()
                    .map(|l| l.worker.clone())
                    .unwrap_or_default(),
                ended: end.map(when).unwrap_or_else(|| "running".into()),
                duration: end
                    .map(|e| format!("{:.2}s", e.duration_since(start).as_secs_f64()))
                    .unwrap_or_default(),
                outcome: job.state.as_str().to_owned(),
                backtrace: None,
            });
        }
    }
    rows
}

/// `?done=` after an action.
#[derive(Debug, Default, Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
    group: Option<String>,
}

/// `GET /jobs/{id}`: everything about one job.
pub async fn job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<DoneQuery>,
) -> Response {
    let viewer = match looker(&state, &headers, &format!("/jobs/{}", encode(&id))) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Ok(job_id) = id.parse::<JobId>() else {
        return super::message_page(
            404,
            "No such job",
            &format!("{id:?} is not a job id (a UUID)"),
        );
    };
    let job = match state.store.job_get(JobGetParams { id: job_id }).await {
        Ok(job) => job,
        Err(e) => return store_error_page(&e),
    };
    let history = match state
        .store
        .job_history(rota_store::JobHistoryParams { id: job_id })
        .await
    {
        Ok(history) => history,
        Err(e) => return store_error_page(&e),
    };
    let now = state.clock.now();
    let waiting = crate::view::job_waiting(&*state.store, &job, now)
        .await
        .ok()
        .flatten();
    render(&JobPage {
        chrome: chrome(&state, viewer, "jobs", q.done),
        id: job.id.to_string(),
        state: job.state.as_str(),
        live: !job.state.is_final(),
        timeline: job_timeline(&job, &history),
        attempts: job_attempts(&job),
        args: shown(&job.args),
        result: job.result.as_ref().map(shown),
        checkpoint: job.checkpoint.as_ref().map(shown),
        progress: job
            .progress
            .as_ref()
            .map(|p| (p.percent, p.message.clone().unwrap_or_default())),
        waiting,
        can_retry: matches!(
            job.state,
            JobState::Dead | JobState::Cancelled | JobState::Retryable | JobState::Completed
        ),
        can_cancel: !job.state.is_final(),
        back: format!("/jobs/{}", job.id),
        job,
    })
}

/// `GET /jobs/{id}/raw/{part}`: the job's args, result or checkpoint in full, as plain
/// JSON text.
pub async fn raw(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, part)): Path<(String, String)>,
) -> Response {
    if let Err(r) = looker(&state, &headers, &format!("/jobs/{}", encode(&id))) {
        return r;
    }
    let Ok(job_id) = id.parse::<JobId>() else {
        return super::message_page(
            404,
            "No such job",
            &format!("{id:?} is not a job id (a UUID)"),
        );
    };
    let job = match state.store.job_get(JobGetParams { id: job_id }).await {
        Ok(job) => job,
        Err(e) => return store_error_page(&e),
    };
    let value = match part.as_str() {
        "args" => Some(job.args),
        "result" => job.result,
        "checkpoint" => job.checkpoint,
        other => {
            return super::message_page(
                404,
                "Not found",
                &format!("{other:?}: ask for args, result or checkpoint"),
            )
        }
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        serde_json::to_string_pretty(&value.unwrap_or(serde_json::Value::Null)).unwrap_or_default(),
    )
        .into_response()
}

// ---------------------------------------------------------------- errors

#[derive(Template)]
#[template(path = "errors.html")]
struct ErrorsPage {
    chrome: Chrome,
    parts: BTreeMap<&'static str, String>,
    selected: Option<GroupRow>,
    sampled: bool,
    examples: Vec<JobRow>,
    list_href: String,
}

impl ErrorsPage {
    fn part(&self, id: &str) -> &str {
        part(&self.parts, id)
    }
}

/// `GET /errors`: dead jobs grouped by cause; `?group=` shows one with its actions.
pub async fn errors(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DoneQuery>,
) -> Response {
    let here = match &q.group {
        Some(g) => format!("/errors?{}", query_string(&[("group", g)])),
        None => "/errors".into(),
    };
    let viewer = match looker(&state, &headers, &here) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut parts = match live_parts(&state).await {
        Ok(p) => p,
        Err(e) => return store_error_page(&e),
    };
    // A group newer than the shared read (at most a second old): read again.
    if let Some(g) = &q.group {
        if !parts.groups.iter().any(|r| &r.group == g) {
            state.dashboard.live.touch();
            parts = match live_parts(&state).await {
                Ok(p) => p,
                Err(e) => return store_error_page(&e),
            };
        }
    }
    let selected = q
        .group
        .as_ref()
        .and_then(|g| parts.groups.iter().find(|r| &r.group == g).cloned());
    let mut examples = vec![];
    if let Some(group) = &selected {
        let listed = state
            .store
            .job_list(JobListParams {
                filter: JobFilter {
                    states: vec![JobState::Dead],
                    error_group: Some(group.group.clone()),
                    ..JobFilter::default()
                },
                after: None,
                limit: 10,
                scan: Some(JOBS_SCANNED),
            })
            .await;
        match listed {
            Ok(list) => {
                let now = state.clock.now();
                examples = list.jobs.iter().map(|j| job_row(j, now)).collect();
            }
            Err(e) => return store_error_page(&e),
        }
    }
    let list_href = selected
        .as_ref()
        .map(|g| {
            format!(
                "/jobs?{}",
                query_string(&[("state", "dead"), ("group", &g.group)])
            )
        })
        .unwrap_or_default();
    render(&ErrorsPage {
        chrome: chrome(&state, viewer, "errors", q.done),
        sampled: parts.sampled,
        parts: parts.render(),
        selected,
        examples,
        list_href,
    })
}

// ---------------------------------------------------------------- queues

#[derive(Template)]
#[template(path = "queues.html")]
struct QueuesPage {
    chrome: Chrome,
    rows: Vec<QueueRow>,
    states: [JobState; 7],
}

/// `GET /queues`: every queue, with pause and resume.
pub async fn queues(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DoneQuery>,
) -> Response {
    let viewer = match looker(&state, &headers, "/queues") {
        Ok(v) => v,
        Err(r) => return r,
    };
    // Read now rather than from the snapshot: the page shows a pause the moment it is made.
    let now = state.clock.now();
    match state
        .store
        .queue_list(rota_store::QueueListParams { now })
        .await
    {
        Ok(stats) => render(&QueuesPage {
            chrome: chrome(&state, viewer, "queues", q.done),
            rows: stats.iter().map(|q| queue_row(q, &state)).collect(),
            states: STATES,
        }),
        Err(e) => store_error_page(&e),
    }
}

// ---------------------------------------------------------------- schedules

/// A schedule's row.
#[derive(Debug, Clone)]
pub struct ScheduleRow {
    /// Its view.
    pub view: rota_api::ScheduleView,
    /// The expression in words.
    pub words: String,
    /// The next five slots.
    pub next: Vec<String>,
    /// Its misfire policy.
    pub misfire: String,
    /// Its last job and that job's state.
    pub last_job: Option<(String, String)>,
    /// Its latest runs (jobs it enqueued, triggered ones too): id, state, slot, when.
    pub recent: Vec<RunRow>,
}

/// One run of a schedule.
#[derive(Debug, Clone)]
pub struct RunRow {
    /// The job.
    pub id: String,
    /// Its state.
    pub state: &'static str,
    /// The slot it ran for.
    pub slot: String,
    /// When it was enqueued.
    pub created: String,
}

/// Runs shown per schedule.
pub const RECENT_RUNS: usize = 5;

/// The latest runs of `schedule`: its kind's jobs on its queue that it enqueued.
async fn recent_runs(
    state: &AppState,
    schedule: &rota_core::schedule::ScheduleDef,
    now: Timestamp,
) -> Result<Vec<RunRow>, rota_store::StoreError> {
    let page = state
        .store
        .job_list(JobListParams {
            filter: JobFilter {
                queues: vec![schedule.template.queue.clone()],
                kinds: vec![schedule.template.kind.clone()],
                ..JobFilter::default()
            },
            after: None,
            limit: RECENT_RUNS * 4,
            scan: Some(JOBS_SCANNED),
        })
        .await?;
    Ok(page
        .jobs
        .iter()
        .filter_map(|j| {
            let origin = j.origin.as_ref().filter(|o| o.schedule == schedule.name)?;
            Some(RunRow {
                id: j.id.to_string(),
                state: j.state.as_str(),
                slot: when(origin.slot),
                created: ago(now, j.created_at),
            })
        })
        .take(RECENT_RUNS)
        .collect())
}

#[derive(Template)]
#[template(path = "schedules.html")]
struct SchedulesPage {
    chrome: Chrome,
    rows: Vec<ScheduleRow>,
}

impl SchedulesPage {
    fn when(&self, t: &Timestamp) -> String {
        when(*t)
    }
}

/// `GET /schedules`: every schedule, its next slots and recent runs.
pub async fn schedules(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DoneQuery>,
) -> Response {
    let viewer = match looker(&state, &headers, "/schedules") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let records = match state
        .store
        .schedule_list(ScheduleListParams::default())
        .await
    {
        Ok(r) => r,
        Err(e) => return store_error_page(&e),
    };
    let now = state.clock.now();
    let mut rows = Vec::new();
    for record in records {
        let cadence = record.schedule.validate().ok();
        let words = cadence.as_ref().map(|c| c.describe()).unwrap_or_default();
        let mut next = Vec::new();
        if let Some(c) = cadence.as_ref().filter(|_| record.schedule.enabled) {
            let zone = jiff::tz::TimeZone::get(&record.schedule.timezone)
                .unwrap_or(jiff::tz::TimeZone::UTC);
            let mut cursor = record.last_slot.max(now);
            for _ in 0..5 {
                match c.next_after(cursor) {
                    Some(slot) => {
                        next.push(
                            slot.to_zoned(zone.clone())
                                .strftime("%Y-%m-%d %H:%M:%S %Z")
                                .to_string(),
                        );
                        cursor = slot;
                    }
                    None => break,
                }
            }
        }
        let recent = match recent_runs(&state, &record.schedule, now).await {
            Ok(runs) => runs,
            Err(e) => return store_error_page(&e),
        };
        let view = crate::view::schedule(&*state.store, record, now).await;
        rows.push(ScheduleRow {
            misfire: serde_json::to_value(view.misfire)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            last_job: view.last_job.clone().map(|id| {
                (
                    id,
                    view.last_job_state
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_else(|| "gone".into()),
                )
            }),
            words,
            next,
            recent,
            view,
        });
    }
    render(&SchedulesPage {
        chrome: chrome(&state, viewer, "schedules", q.done),
        rows,
    })
}

// ---------------------------------------------------------------- workers

/// A worker's row.
#[derive(Debug, Clone)]
pub struct WorkerRow {
    /// Its view.
    pub view: rota_api::WorkerView,
    /// Jobs it runs now.
    pub running: usize,
    /// Since its last heartbeat or fetch.
    pub heartbeat_age: String,
}

#[derive(Template)]
#[template(path = "workers.html")]
struct WorkersPage {
    chrome: Chrome,
    rows: Vec<WorkerRow>,
}

/// `GET /workers`: every worker seen, with its running jobs and heartbeat age; stale ones
/// flagged.
pub async fn workers(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let viewer = match looker(&state, &headers, "/workers") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (workers, running) = match tokio::try_join!(
        state.store.worker_list(WorkerListParams {}),
        state
            .store
            .job_list_running(JobListRunningParams { limit: 10_000 })
    ) {
        Ok(pair) => pair,
        Err(e) => return store_error_page(&e),
    };
    let mut by_worker: HashMap<String, usize> = HashMap::new();
    for job in &running {
        if let Some(lease) = &job.lease {
            *by_worker.entry(lease.worker.clone()).or_default() += 1;
        }
    }
    let now = state.clock.now();
    let mut rows: Vec<WorkerRow> = workers
        .into_iter()
        .map(|w| {
            let age = ago(now, w.last_seen);
            let view = crate::view::worker(w, state.config.lease, now);
            WorkerRow {
                running: by_worker.get(&view.id).copied().unwrap_or(0),
                heartbeat_age: age,
                view,
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        b.view
            .alive
            .cmp(&a.view.alive)
            .then(b.view.last_seen.cmp(&a.view.last_seen))
    });
    render(&WorkersPage {
        chrome: chrome(&state, viewer, "workers", None),
        rows,
    })
}

// ---------------------------------------------------------------- bulk runs

#[derive(Template)]
#[template(path = "bulk.html")]
struct BulkPage {
    chrome: Chrome,
    id: u64,
    run: super::bulk::BulkRun,
    verb: &'static str,
}

/// `GET /jobs/bulk/{run}`: a bulk action's progress (the page refreshes itself until the
/// run ends).
pub async fn bulk_run(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(run): Path<String>,
) -> Response {
    let viewer = match looker(&state, &headers, &format!("/jobs/bulk/{}", encode(&run))) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let found = run
        .parse::<u64>()
        .ok()
        .and_then(|id| state.dashboard.bulk.get(id).map(|r| (id, r)));
    let Some((id, run)) = found else {
        return super::message_page(
            404,
            "No such bulk action",
            &format!("bulk action {run:?} is not one of the latest this server ran"),
        );
    };
    render(&BulkPage {
        chrome: chrome(&state, viewer, "jobs", None),
        id,
        verb: match run.action.as_str() {
            "retry" => "retried",
            "cancel" => "cancelled",
            _ => "deleted",
        },
        run,
    })
}

// ---------------------------------------------------------------- login and messages

/// `?next=` of the login page.
#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// The login page.
#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    /// Where to go after.
    pub next: String,
    /// What went wrong last time.
    pub error: Option<String>,
}

/// Where to go after logging in or acting: a path on this server, else `default`.
pub fn local_path(raw: Option<&str>, default: &str) -> String {
    match raw {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.to_owned(),
        _ => default.to_owned(),
    }
}

/// `GET /login`.
pub async fn login(Query(q): Query<LoginQuery>) -> Response {
    render(&LoginPage {
        next: local_path(q.next.as_deref(), "/"),
        error: None,
    })
}

/// A page that only says something.
#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    /// Its title.
    pub title: String,
    /// What it says.
    pub message: String,
}
