//! Schedule slot maths: which slots of a cron schedule are due, and which of them to fire
//! under a misfire policy. Pure functions of `(schedule, last fired slot, now)`.
//!
//! Expressions are read by croner (5 or 6 fields, `@hourly`, `@daily`, `@weekly`,
//! `@monthly`, `@yearly`) in an IANA time zone through jiff, plus `@every <duration>`
//! (slots at whole multiples of the duration since the Unix epoch, so every node agrees).
//!
//! Daylight saving follows croner's rules: a fixed-time schedule (`30 1 * * *`) whose wall
//! time falls in a spring-forward gap runs once at the first instant after the gap, and once
//! (at the earlier instant) when the wall time repeats at fall-back; an interval or wildcard
//! schedule (`*/15 * * * *`) skips wall times that do not exist and runs at both instants of
//! a repeated hour, since both are real, distinct slots.

use std::str::FromStr;
use std::time::Duration;

use croner::parser::{CronParser, Seconds};
use croner::Cron;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::duration::serde_humane;
use crate::{sub_duration, ValidationError};

/// How late a slot may be fired and still count as on time.
pub const MISFIRE_GRACE_DEFAULT: Duration = Duration::from_secs(60);
/// Most slots examined in one planning step; beyond it, older missed slots are only counted
/// up to this number.
pub const SLOT_SCAN_LIMIT: usize = 10_000;

/// What to do with slots missed while no scheduler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MisfirePolicy {
    /// None of them.
    Skip,
    /// One catch-up run for the most recent missed slot (the default).
    #[default]
    Latest,
    /// Every missed slot within the backfill window, oldest first.
    All,
}

impl std::fmt::Display for MisfirePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Skip => "skip",
            Self::Latest => "latest",
            Self::All => "all",
        })
    }
}

impl FromStr for MisfirePolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "skip" => Ok(Self::Skip),
            "latest" => Ok(Self::Latest),
            "all" => Ok(Self::All),
            other => Err(format!("expected skip, latest or all, got {other:?}")),
        }
    }
}

/// A parsed expression in a time zone.
#[derive(Debug, Clone)]
pub struct Cadence {
    kind: CadenceKind,
    zone: TimeZone,
}

#[derive(Debug, Clone)]
enum CadenceKind {
    Cron(Box<Cron>),
    Every(Duration),
}

impl Cadence {
    /// Parses `expression` in the IANA zone `timezone`; errors name `field`s
    /// `expression` and `timezone`.
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, ValidationError> {
        let zone = TimeZone::get(timezone).map_err(|_| {
            ValidationError::new(
                "timezone",
                format!("{timezone:?} is not an IANA time zone such as Europe/London or UTC"),
            )
        })?;
        let trimmed = expression.trim();
        let kind = if let Some(every) = trimmed.strip_prefix("@every") {
            let d = crate::parse_duration(every.trim())
                .map_err(|e| ValidationError::new("expression", format!("@every: {e}")))?;
            if d < Duration::from_secs(1) || d.subsec_nanos() != 0 {
                return Err(ValidationError::new(
                    "expression",
                    "@every needs a whole number of seconds, at least 1s",
                ));
            }
            if d > crate::SCHEDULE_HORIZON {
                return Err(ValidationError::new(
                    "expression",
                    "@every: at most 10 years (3650d)",
                ));
            }
            CadenceKind::Every(d)
        } else {
            let fields = trimmed.split_whitespace().count();
            if !trimmed.starts_with('@') && !(5..=6).contains(&fields) {
                return Err(ValidationError::new(
                    "expression",
                    format!(
                        "{trimmed:?} has {fields} fields; a cron expression has 5 (minute hour day month weekday) or 6 (with seconds first)"
                    ),
                ));
            }
            let cron = CronParser::builder()
                .seconds(Seconds::Optional)
                .build()
                .parse(trimmed)
                .map_err(|e| {
                    ValidationError::new(
                        "expression",
                        format!("{trimmed:?} is not a cron expression: {e}"),
                    )
                })?;
            CadenceKind::Cron(Box::new(cron))
        };
        Ok(Self { kind, zone })
    }

    /// The expression in English words (croner's best effort for cron expressions).
    pub fn describe(&self) -> String {
        match &self.kind {
            CadenceKind::Every(d) => format!("every {}", crate::format_duration(*d)),
            CadenceKind::Cron(cron) => cron.describe(),
        }
    }

    /// The first slot strictly after `after`.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            CadenceKind::Every(d) => {
                let step = d.as_secs() as i64;
                let next = after.as_second().div_euclid(step) * step + step;
                Timestamp::from_second(next).ok()
            }
            CadenceKind::Cron(cron) => {
                let zoned = after.to_zoned(self.zone.clone());
                cron.find_next_occurrence(&zoned, false)
                    .ok()
                    .map(|z| z.timestamp())
            }
        }
    }

    /// Slots in `(after, until]`, oldest first, at most `limit`.
    pub fn slots_between(
        &self,
        after: Timestamp,
        until: Timestamp,
        limit: usize,
    ) -> Vec<Timestamp> {
        let mut slots = Vec::new();
        let mut cursor = after;
        while slots.len() < limit {
            match self.next_after(cursor) {
                Some(next) if next <= until => {
                    slots.push(next);
                    cursor = next;
                }
                _ => break,
            }
        }
        slots
    }
}

/// What a scheduler should do for one schedule at `now`.
///
/// Only the latest due slot can be on time (within `grace`); older due slots were missed.
/// `Skip` fires only an on-time slot; `Latest` fires the latest slot, and when anything was
/// missed that run is the catch-up (counted as recovered); `All` fires the missed slots within
/// `backfill`, oldest first, then an on-time slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotPlan {
    /// Slots to enqueue now, oldest first.
    pub fire: Vec<Timestamp>,
    /// Of `fire`, the slots that were missed and are recovered.
    pub recovered: Vec<Timestamp>,
    /// Missed slots not fired (by policy), counted up to [`SLOT_SCAN_LIMIT`].
    pub skipped: usize,
    /// The new last-fired slot (the latest due slot), if any slot was due.
    pub last_slot: Option<Timestamp>,
}

/// Plans the slots due in `(last, now]`: those within `grace` of `now` fire as on time; the
/// older ones were missed and follow `policy` (`backfill` bounds `All`).
pub fn plan_slots(
    cadence: &Cadence,
    last: Timestamp,
    now: Timestamp,
    policy: MisfirePolicy,
    backfill: Duration,
    grace: Duration,
) -> SlotPlan {
    let due = cadence.slots_between(last, now, SLOT_SCAN_LIMIT);
    // If the scan was cut short, the newest slots are what matter: rescan the recent window.
    let (older_missed, due) = if due.len() == SLOT_SCAN_LIMIT {
        let window = sub_duration(now, grace.max(backfill));
        let start = window.max(last);
        (
            SLOT_SCAN_LIMIT,
            cadence.slots_between(start, now, SLOT_SCAN_LIMIT),
        )
    } else {
        (0, due)
    };
    let Some(&latest) = due.last() else {
        return SlotPlan::default();
    };
    // Only the latest due slot can be on time; every older due slot was superseded while no
    // scheduler ran, so it was missed (as is the latest, if it is older than `grace`).
    let latest_on_time = latest >= sub_duration(now, grace);
    let mut missed: Vec<Timestamp> = due[..due.len() - 1].to_vec();
    if !latest_on_time {
        missed.push(latest);
    }
    let (fire, recovered) = match policy {
        MisfirePolicy::Skip => (if latest_on_time { vec![latest] } else { vec![] }, vec![]),
        // One run stands for everything missed: the latest slot, on time or not.
        MisfirePolicy::Latest if !missed.is_empty() => (vec![latest], vec![latest]),
        MisfirePolicy::Latest => (vec![latest], vec![]),
        MisfirePolicy::All => {
            let from = sub_duration(now, backfill);
            let recovered: Vec<Timestamp> = missed.iter().copied().filter(|s| *s >= from).collect();
            let mut fire = recovered.clone();
            if latest_on_time {
                fire.push(latest);
            }
            (fire, recovered)
        }
    };
    SlotPlan {
        skipped: (older_missed + missed.len()).saturating_sub(recovered.len()),
        fire,
        recovered,
        last_slot: Some(latest),
    }
}

/// The job a schedule enqueues at each slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobTemplate {
    /// The declared queue.
    pub queue: String,
    /// The handler name.
    pub kind: String,
    /// The handler's input.
    #[serde(default)]
    pub args: serde_json::Value,
    /// 0..=9, lower first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Job-level retry settings (the most specific layer, as for any job).
    #[serde(default, skip_serializing_if = "crate::RetryOverride::is_empty")]
    pub retry: crate::RetryOverride,
    /// Per-attempt time limit.
    #[serde(
        default,
        with = "serde_humane::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
}

/// Where a schedule's definition comes from: config schedules are reconciled at start-up
/// (added, updated, removed); API schedules are left alone by reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ScheduleSource {
    /// `[[schedule]]` in rota.toml.
    Config,
    /// Created through the API or CLI.
    Api,
}

impl std::fmt::Display for ScheduleSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Config => "config",
            Self::Api => "api",
        })
    }
}

/// A named cron schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleDef {
    /// Unique name; part of each slot's unique key `cron:<name>:<slot>`.
    pub name: String,
    /// Cron expression, nickname or `@every <duration>`.
    pub expression: String,
    /// IANA time zone the expression is read in.
    pub timezone: String,
    /// The job to enqueue.
    pub template: JobTemplate,
    /// What to do with missed slots.
    pub misfire: MisfirePolicy,
    /// How far back `All` recovers.
    #[serde(with = "serde_humane")]
    pub backfill: Duration,
    /// Disabled schedules do not fire (their slots pass as skipped).
    pub enabled: bool,
    /// Where the definition comes from.
    pub source: ScheduleSource,
}

impl ScheduleDef {
    /// Checks the definition; errors name the schedule and the field.
    pub fn validate(&self) -> Result<Cadence, ValidationError> {
        let named = |e: ValidationError| {
            ValidationError::new(
                e.field.clone(),
                format!("schedule {:?}: {}", self.name, e.message),
            )
        };
        let longest = crate::validation::MAX_SCHEDULE_NAME_LEN;
        if self.name.is_empty() || self.name.chars().count() > longest || self.name.contains(':') {
            return Err(ValidationError::new(
                "name",
                format!(
                    "schedule name {:?} must be 1 to {longest} characters without ':'",
                    self.name
                ),
            ));
        }
        crate::text::refuse_nul("name", &self.name)?;
        crate::text::refuse_nul("cron", &self.expression).map_err(named)?;
        crate::text::refuse_nul("timezone", &self.timezone).map_err(named)?;
        crate::text::refuse_nul_in_json("args", &self.template.args).map_err(named)?;
        crate::validation::validate_queue_name(&self.template.queue).map_err(named)?;
        crate::validation::validate_kind(&self.template.kind).map_err(named)?;
        if let Some(p) = self.template.priority {
            crate::validation::validate_priority(p).map_err(named)?;
        }
        self.template.retry.validate().map_err(named)?;
        Cadence::parse(&self.expression, &self.timezone).map_err(named)
    }

    /// The unique key of one slot's job.
    pub fn slot_key(&self, slot: Timestamp) -> String {
        format!("cron:{}:{slot}", self.name)
    }

    /// The job for `slot`: the template, with the slot's unique key and origin.
    pub fn job_for(&self, slot: Timestamp, unique_for: Duration) -> crate::NewJob {
        let t = &self.template;
        let mut job = crate::NewJob::new(t.queue.clone(), t.kind.clone(), t.args.clone());
        job.priority = t.priority;
        job.retry = t.retry.clone();
        job.timeout = t.timeout;
        job.unique_key = Some(self.slot_key(slot));
        job.unique_for = Some(unique_for);
        job.origin = Some(crate::JobOrigin {
            schedule: self.name.clone(),
            slot,
        });
        job
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn hm(ts: Timestamp, zone: &str) -> String {
        ts.to_zoned(TimeZone::get(zone).unwrap())
            .strftime("%H:%M%:z")
            .to_string()
    }

    #[test]
    fn every_fifteen_minutes_has_96_slots_a_day() {
        let c = Cadence::parse("*/15 * * * *", "UTC").unwrap();
        let slots = c.slots_between(at("2026-03-01T00:00:00Z"), at("2026-03-02T00:00:00Z"), 1000);
        assert_eq!(slots.len(), 96);
        assert_eq!(slots[0], at("2026-03-01T00:15:00Z"));
        assert_eq!(*slots.last().unwrap(), at("2026-03-02T00:00:00Z"));
    }

    #[test]
    fn missed_hours_follow_the_misfire_policy() {
        let c = Cadence::parse("@hourly", "UTC").unwrap();
        let (last, now) = (at("2026-03-01T03:00:00Z"), at("2026-03-01T08:30:00Z"));
        let six_hours = Duration::from_secs(6 * 3600);
        let latest = plan_slots(
            &c,
            last,
            now,
            MisfirePolicy::Latest,
            six_hours,
            MISFIRE_GRACE_DEFAULT,
        );
        assert_eq!(latest.fire, [at("2026-03-01T08:00:00Z")]);
        assert_eq!((latest.recovered.len(), latest.skipped), (1, 4));
        let all = plan_slots(
            &c,
            last,
            now,
            MisfirePolicy::All,
            six_hours,
            MISFIRE_GRACE_DEFAULT,
        );
        let hours: Vec<String> = all.fire.iter().map(|t| hm(*t, "UTC")).collect();
        assert_eq!(
            hours,
            [
                "04:00+00:00",
                "05:00+00:00",
                "06:00+00:00",
                "07:00+00:00",
                "08:00+00:00"
            ]
        );
        let short = plan_slots(
            &c,
            last,
            now,
            MisfirePolicy::All,
            Duration::from_secs(2 * 3600),
            MISFIRE_GRACE_DEFAULT,
        );
        assert_eq!(
            short.fire.len(),
            2,
            "only 07:00 and 08:00 lie within 2h of 08:30"
        );
        let skip = plan_slots(
            &c,
            last,
            now,
            MisfirePolicy::Skip,
            six_hours,
            MISFIRE_GRACE_DEFAULT,
        );
        assert!(skip.fire.is_empty());
        assert_eq!(
            (skip.skipped, skip.last_slot),
            (5, Some(at("2026-03-01T08:00:00Z")))
        );
    }

    #[test]
    fn slots_superseded_while_down_are_missed_even_within_the_grace() {
        let c = Cadence::parse("@every 1s", "UTC").unwrap();
        let (last, now) = (at("2026-03-01T00:00:00Z"), at("2026-03-01T00:00:03.5Z"));
        let latest = plan_slots(
            &c,
            last,
            now,
            MisfirePolicy::Latest,
            Duration::ZERO,
            MISFIRE_GRACE_DEFAULT,
        );
        assert_eq!(
            (latest.fire.clone(), latest.recovered.len(), latest.skipped),
            (vec![at("2026-03-01T00:00:03Z")], 1, 1)
        );
        let all = plan_slots(
            &c,
            last,
            now,
            MisfirePolicy::All,
            Duration::from_secs(60),
            MISFIRE_GRACE_DEFAULT,
        );
        assert_eq!(
            (all.fire.len(), all.recovered.len(), all.skipped),
            (3, 2, 0)
        );
        let skip = plan_slots(
            &c,
            last,
            now,
            MisfirePolicy::Skip,
            Duration::ZERO,
            MISFIRE_GRACE_DEFAULT,
        );
        assert_eq!(
            (skip.fire.len(), skip.recovered.len(), skip.skipped),
            (1, 0, 2)
        );
    }

    #[test]
    fn an_on_time_slot_fires_under_every_policy() {
        let c = Cadence::parse("0 * * * *", "UTC").unwrap();
        for policy in [
            MisfirePolicy::Skip,
            MisfirePolicy::Latest,
            MisfirePolicy::All,
        ] {
            let p = plan_slots(
                &c,
                at("2026-03-01T08:00:00Z"),
                at("2026-03-01T09:00:05Z"),
                policy,
                Duration::ZERO,
                MISFIRE_GRACE_DEFAULT,
            );
            assert_eq!(p.fire, [at("2026-03-01T09:00:00Z")], "{policy:?}");
            assert!(p.recovered.is_empty());
        }
    }

    #[test]
    fn spring_forward_in_london_neither_doubles_nor_invents_slots() {
        // 2026-03-29: 01:00 GMT becomes 02:00 BST; wall times 01:00-01:59 do not exist.
        let quarter = Cadence::parse("*/30 * * * *", "Europe/London").unwrap();
        let slots =
            quarter.slots_between(at("2026-03-29T00:00:00Z"), at("2026-03-29T02:00:00Z"), 100);
        let walls: Vec<String> = slots.iter().map(|t| hm(*t, "Europe/London")).collect();
        assert_eq!(
            walls,
            ["00:30+00:00", "02:00+01:00", "02:30+01:00", "03:00+01:00"]
        );
        // A fixed 01:30 job runs once, at the first instant after the gap.
        let fixed = Cadence::parse("30 1 * * *", "Europe/London").unwrap();
        let day = fixed.slots_between(at("2026-03-29T00:00:00Z"), at("2026-03-30T00:00:00Z"), 10);
        assert_eq!(day.len(), 1);
        assert_eq!(hm(day[0], "Europe/London"), "02:00+01:00");
    }

    #[test]
    fn fall_back_in_london_runs_fixed_jobs_once_and_interval_jobs_in_both_hours() {
        // 2026-10-25: 02:00 BST becomes 01:00 GMT; wall times 01:00-01:59 happen twice.
        let fixed = Cadence::parse("30 1 * * *", "Europe/London").unwrap();
        let day = fixed.slots_between(at("2026-10-24T23:00:00Z"), at("2026-10-25T23:00:00Z"), 10);
        assert_eq!(day.len(), 1, "a fixed-time job is not doubled");
        assert_eq!(hm(day[0], "Europe/London"), "01:30+01:00");
        let hourly = Cadence::parse("0 * * * *", "Europe/London").unwrap();
        let slots =
            hourly.slots_between(at("2026-10-24T23:30:00Z"), at("2026-10-25T02:30:00Z"), 10);
        let walls: Vec<String> = slots.iter().map(|t| hm(*t, "Europe/London")).collect();
        // Both 01:00s are distinct real hours; every slot is a distinct instant.
        assert_eq!(walls, ["01:00+01:00", "01:00+00:00", "02:00+00:00"]);
    }

    #[test]
    fn every_slots_are_aligned_to_the_epoch() {
        let c = Cadence::parse("@every 15m", "UTC").unwrap();
        assert_eq!(
            c.next_after(at("2026-03-01T10:07:00Z")),
            Some(at("2026-03-01T10:15:00Z"))
        );
        assert_eq!(
            c.next_after(at("2026-03-01T10:15:00Z")),
            Some(at("2026-03-01T10:30:00Z"))
        );
    }

    #[test]
    fn bad_expressions_and_zones_name_the_field() {
        assert_eq!(
            Cadence::parse("61 * * * *", "UTC").unwrap_err().field,
            "expression"
        );
        assert_eq!(
            Cadence::parse("@every 0s", "UTC").unwrap_err().field,
            "expression"
        );
        assert_eq!(
            Cadence::parse("@hourly", "Mars/Olympus").unwrap_err().field,
            "timezone"
        );
    }
}
