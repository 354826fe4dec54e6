//! Flow control at claim time, as pure functions every backend applies alike: which keys a
//! claim skips, how many ready jobs it reads per key, and the claim plan itself, which takes
//! jobs round-robin across keys (weighted), priority first within a key, and never beyond a
//! queue's `concurrency`, a key's `key_concurrency` or any rate bucket (queue, kind, key).
//!
//! A backend counts the running jobs ([`Running`]), loads the rate buckets that are not full
//! ([`Buckets`]), lists up to the claim's allowance of ready keys after the queue's round-robin
//! cursor (skipping [`blocked_keys`]), reads [`fetch_per_key`] jobs of each in claim order, and
//! hands them to [`plan_claim`]; [`merge_plans`] picks what a claim of several queues hands
//! out and what each queue's buckets are charged, and [`ClaimMemory`] keeps the cursor.
//! Backpressure ([`check_backpressure`]) and what limits hold back ([`waiting_reason`],
//! [`queue_waiting`]) are here too.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use jiff::Timestamp;
use rota_core::{Job, Rate};

use crate::{claim_allowance, QueueConfig, StoreError};

/// The key of jobs that carry none: they form one group in the round-robin.
pub const NO_KEY: &str = "";

/// The running jobs of a queue: in all, and per `concurrency_key`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Running {
    /// Every running job of the queue.
    pub total: u64,
    /// Running jobs per key (keys with none are absent).
    pub by_key: HashMap<String, u64>,
}

impl Running {
    /// Running jobs holding `key`.
    pub fn of_key(&self, key: &str) -> u64 {
        self.by_key.get(key).copied().unwrap_or(0)
    }
}

/// Which rate bucket of a queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BucketScope {
    /// The queue's `rate`.
    Queue,
    /// The `kind_rates` entry of a kind.
    Kind(String),
    /// The `key_rate` bucket of a key.
    Key(String),
}

impl BucketScope {
    /// As stored: the scope's name (`queue`, `kind`, `key`) and the kind or key.
    pub fn parts(&self) -> (&'static str, &str) {
        match self {
            BucketScope::Queue => ("queue", ""),
            BucketScope::Kind(kind) => ("kind", kind),
            BucketScope::Key(key) => ("key", key),
        }
    }

    /// From stored parts; `None` for a scope this version does not know.
    pub fn from_parts(scope: &str, name: &str) -> Option<Self> {
        match scope {
            "queue" => Some(BucketScope::Queue),
            "kind" => Some(BucketScope::Kind(name.to_string())),
            "key" => Some(BucketScope::Key(name.to_string())),
            _ => None,
        }
    }

    /// The rate the queue sets for this bucket, if it still sets one.
    pub fn rate(&self, queue: &QueueConfig) -> Option<Rate> {
        match self {
            BucketScope::Queue => queue.rate,
            BucketScope::Kind(kind) => queue.kind_rates.get(kind).copied(),
            BucketScope::Key(_) => queue.key_rate,
        }
    }
}

/// The theoretical arrival times of a queue's buckets (absent: full).
pub type Buckets = BTreeMap<BucketScope, Timestamp>;

/// The buckets a job of `kind` with `key` draws from.
fn scopes_of(queue: &QueueConfig, kind: &str, key: &str) -> Vec<(BucketScope, Rate)> {
    let mut scopes = Vec::new();
    if let Some(rate) = queue.rate {
        scopes.push((BucketScope::Queue, rate));
    }
    if let Some(rate) = queue.kind_rates.get(kind) {
        scopes.push((BucketScope::Kind(kind.to_string()), *rate));
    }
    if let (Some(rate), false) = (queue.key_rate, key == NO_KEY) {
        scopes.push((BucketScope::Key(key.to_string()), rate));
    }
    scopes
}

/// Whether the queue has any limit that needs counting or buckets at claim time.
pub fn has_claim_limits(queue: &QueueConfig) -> bool {
    queue.concurrency.is_some()
        || queue.key_concurrency.is_some()
        || queue.rate.is_some()
        || queue.key_rate.is_some()
        || !queue.kind_rates.is_empty()
}

/// A job's key as the planner groups it.
pub fn key_of(job: &Job) -> &str {
    job.concurrency_key.as_deref().unwrap_or(NO_KEY)
}

/// Keys with ready jobs that a claim skips outright: at their `key_concurrency`, or with an
/// empty `key_rate` bucket. Sorted.
pub fn blocked_keys(
    queue: &QueueConfig,
    running: &Running,
    buckets: &Buckets,
    now: Timestamp,
) -> Vec<String> {
    let mut blocked: Vec<String> = Vec::new();
    if let Some(limit) = queue.key_concurrency {
        blocked.extend(
            running
                .by_key
                .iter()
                .filter(|(_, n)| **n >= u64::from(limit))
                .map(|(k, _)| k.clone()),
        );
    }
    if let Some(rate) = queue.key_rate {
        for (scope, tat) in buckets {
            if let BucketScope::Key(key) = scope {
                if rate.admit(Some(*tat), now).is_none() {
                    blocked.push(key.clone());
                }
            }
        }
    }
    blocked.sort_unstable();
    blocked.dedup();
    blocked
}

/// How many ready jobs to read for `key` when the key scan found `keys` keys and the claim
/// may take `allowance` jobs: its share of one round, times its weight, within its limit.
pub fn fetch_per_key(
    queue: &QueueConfig,
    running: &Running,
    key: &str,
    keys: usize,
    allowance: usize,
) -> usize {
    let share = allowance.div_ceil(keys.max(1));
    let weighted = share.saturating_mul(weight_of(queue, key) as usize);
    let room = match (queue.key_concurrency, key == NO_KEY) {
        (Some(limit), false) => {
            usize::try_from(u64::from(limit).saturating_sub(running.of_key(key)))
                .unwrap_or(usize::MAX)
        }
        _ => usize::MAX,
    };
    weighted.min(room).min(allowance)
}

fn weight_of(queue: &QueueConfig, key: &str) -> u32 {
    queue.key_weights.get(key).copied().unwrap_or(1).max(1)
}

/// The ready jobs of one key, in claim order (priority, run_at, id).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyHeads {
    /// The key ([`NO_KEY`] for jobs without one).
    pub key: String,
    /// Its first ready jobs.
    pub jobs: Vec<Job>,
}

/// What one claim of a queue takes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClaimPlan {
    /// The jobs, in the order taken.
    pub jobs: Vec<Job>,
    /// The last key a job was taken from: the next claim starts after it.
    pub cursor: Option<String>,
    /// The buckets the plan drew from, with their new arrival times.
    pub buckets: Buckets,
}

/// Plans a claim of up to `max` jobs of one queue from `heads` (keys in round-robin order,
/// starting after the cursor): each round takes up to a key's weight from every key in turn;
/// a key stops at its limit or empty bucket, the claim at the queue's limit or empty bucket,
/// and a job whose kind's bucket is empty stays for a later claim.
pub fn plan_claim(
    queue: &QueueConfig,
    running: &Running,
    buckets: &Buckets,
    heads: Vec<KeyHeads>,
    max: usize,
    now: Timestamp,
) -> ClaimPlan {
    let allowance = claim_allowance(queue, running.total, max);
    let mut plan = ClaimPlan::default();
    // No limit to check and one group: its first jobs, as they are.
    if !has_claim_limits(queue) && heads.len() == 1 {
        let group = heads.into_iter().next().expect("one group");
        plan.jobs = group.jobs.into_iter().take(allowance).collect();
        if !plan.jobs.is_empty() {
            plan.cursor = Some(group.key);
        }
        return plan;
    }
    let mut tats = buckets.clone();
    let mut groups: Vec<(String, Vec<Option<Job>>)> = heads
        .into_iter()
        .map(|g| (g.key, g.jobs.into_iter().map(Some).collect()))
        .collect();
    let mut next = vec![0usize; groups.len()];
    let mut done = vec![false; groups.len()];
    let mut taken_of_key = vec![0u64; groups.len()];
    let mut last = None;
    'rounds: while plan.jobs.len() < allowance {
        let mut progress = false;
        for (i, (key, jobs)) in groups.iter_mut().enumerate() {
            let key = key.as_str();
            let mut took = 0;
            while !done[i] && took < weight_of(queue, key) {
                if plan.jobs.len() >= allowance {
                    break 'rounds;
                }
                let Some(slot) = jobs.get_mut(next[i]) else {
                    done[i] = true;
                    break;
                };
                if let (Some(limit), false) = (queue.key_concurrency, key == NO_KEY) {
                    if running.of_key(key) + taken_of_key[i] >= u64::from(limit) {
                        done[i] = true;
                        break;
                    }
                }
                let job = slot.as_ref().expect("each job is taken once");
                match admit(queue, &job.kind, key, &tats, now) {
                    Admission::Admitted(updates) => {
                        tats.extend(updates.iter().cloned());
                        plan.buckets.extend(updates);
                        plan.jobs.push(slot.take().expect("each job is taken once"));
                        taken_of_key[i] += 1;
                        last = Some(i);
                        next[i] += 1;
                        took += 1;
                        progress = true;
                    }
                    Admission::Blocked(BucketScope::Queue) => break 'rounds,
                    Admission::Blocked(BucketScope::Key(_)) => done[i] = true,
                    // Later jobs of the key may be of another kind.
                    Admission::Blocked(BucketScope::Kind(_)) => next[i] += 1,
                }
            }
        }
        if !progress {
            break;
        }
    }
    plan.cursor = last.map(|i| std::mem::take(&mut groups[i].0));
    plan
}

enum Admission {
    Admitted(Vec<(BucketScope, Timestamp)>),
    Blocked(BucketScope),
}

/// Whether every bucket a job draws from admits it now, and their new arrival times.
fn admit(queue: &QueueConfig, kind: &str, key: &str, tats: &Buckets, now: Timestamp) -> Admission {
    let mut updates = Vec::new();
    for (scope, rate) in scopes_of(queue, kind, key) {
        match rate.admit(tats.get(&scope).copied(), now) {
            Some(tat) => updates.push((scope, tat)),
            None => return Admission::Blocked(scope),
        }
    }
    Admission::Admitted(updates)
}

/// One queue's part of a claim: its name, settings, plan, and the buckets the plan started from.
pub type QueuePlan<'q> = (&'q str, &'q QueueConfig, ClaimPlan, Buckets);

/// What a claim of several queues hands out, and the buckets each queue is charged: the first
/// `max` of all plans' jobs by priority, then `run_at`, then id (one queue's plan as it is, in
/// round-robin order); each queue whose plan drew from buckets is charged for the jobs it gave.
pub fn merge_plans<'p>(
    plans: &'p [QueuePlan<'_>],
    max: usize,
    now: Timestamp,
) -> (Vec<&'p Job>, Vec<(String, Buckets)>) {
    let mut jobs: Vec<&Job> = plans
        .iter()
        .flat_map(|(_, _, plan, _)| &plan.jobs)
        .collect();
    if plans.len() > 1 {
        jobs.sort_by_key(|j| (j.priority, j.run_at, j.id));
        jobs.truncate(max);
    }
    let charged = plans
        .iter()
        .filter(|(_, _, plan, _)| !plan.buckets.is_empty())
        .map(|(queue, config, _, buckets)| {
            let kept: Vec<&Job> = jobs.iter().copied().filter(|j| j.queue == *queue).collect();
            (queue.to_string(), charge(config, buckets, &kept, now))
        })
        .collect();
    (jobs, charged)
}

/// The buckets after claiming exactly `jobs` (a subset, in order, of a plan's jobs: a claim
/// of several queues keeps only the first `max` of all).
fn charge(queue: &QueueConfig, buckets: &Buckets, jobs: &[&Job], now: Timestamp) -> Buckets {
    let mut tats = buckets.clone();
    let mut changed = Buckets::new();
    for job in jobs {
        if let Admission::Admitted(updates) = admit(queue, &job.kind, key_of(job), &tats, now) {
            tats.extend(updates.clone());
            changed.extend(updates);
        }
    }
    changed
}

/// What backpressure is checked against: a queue's ready and scheduled jobs, and the oldest
/// ready one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueLoad {
    /// Available, scheduled and retryable jobs.
    pub depth: u64,
    /// When the oldest ready job became ready.
    pub oldest_ready: Option<Timestamp>,
}

/// Whether enqueues to the queue are checked for backpressure (the backend then loads its
/// [`QueueLoad`] in the enqueue's transaction, taking turns with other enqueues to it).
pub fn has_backpressure(queue: &QueueConfig) -> bool {
    queue.max_depth.is_some() || queue.max_age.is_some()
}

/// How long a refused producer is told to wait when nothing better is known.
pub const RETRY_AFTER_DEFAULT: std::time::Duration = std::time::Duration::from_secs(5);

/// Checks an enqueue of `adding` new jobs to queue `name` against its `max_depth` and
/// `max_age`: within them, `Ok(None)`; beyond them, [`StoreError::QueueFull`] when the
/// queue's overflow is `reject` (the default), or `Ok(Some(warning))` when it is `accept`.
pub fn check_backpressure(
    name: &str,
    queue: &QueueConfig,
    load: QueueLoad,
    adding: u64,
    now: Timestamp,
) -> Result<Option<String>, StoreError> {
    let mut reason = None;
    if let Some(max) = queue.max_depth {
        if load.depth.saturating_add(adding) > max {
            reason = Some(format!(
                "queue {name:?} holds {} ready and scheduled jobs; {adding} more would pass its max_depth {max}",
                load.depth
            ));
        }
    }
    if let (Some(max), Some(oldest), None) = (queue.max_age, load.oldest_ready, &reason) {
        let age = now.duration_since(oldest).unsigned_abs();
        if age > max {
            reason = Some(format!(
                "the oldest ready job of queue {name:?} has waited {}, beyond its max_age {}",
                rota_core::format_duration(std::time::Duration::from_secs(age.as_secs())),
                rota_core::format_duration(max)
            ));
        }
    }
    let Some(reason) = reason else {
        return Ok(None);
    };
    match queue.overflow.unwrap_or_default() {
        crate::Overflow::Accept => Ok(Some(format!("{reason} (accepted: overflow = accept)"))),
        crate::Overflow::Reject => {
            // With a rate, about the time the excess takes to start.
            let retry_after = match (queue.rate, queue.max_depth) {
                (Some(rate), Some(max)) if load.depth + adding > max => (rate.interval()
                    * u32::try_from(load.depth + adding - max).unwrap_or(u32::MAX))
                .clamp(
                    std::time::Duration::from_secs(1),
                    std::time::Duration::from_secs(300),
                ),
                _ => RETRY_AFTER_DEFAULT,
            };
            Err(StoreError::QueueFull {
                queue: name.to_string(),
                reason,
                retry_after,
            })
        }
    }
}

/// Checks a planned batch against the backpressure of its queues (`loads`, read in the
/// enqueue's transaction before the batch): refuses the whole batch when one queue refuses,
/// or marks the new jobs of queues that accept their overflow with the warning.
pub fn apply_backpressure<'q>(
    inserted: &mut [crate::Inserted],
    config_of: impl Fn(&str) -> &'q QueueConfig,
    loads: &HashMap<String, QueueLoad>,
    now: Timestamp,
) -> Result<(), StoreError> {
    let mut names: Vec<&String> = loads.keys().collect();
    names.sort_unstable();
    for name in names {
        let adding = inserted
            .iter()
            .filter(|i| !i.duplicate && &i.job.queue == name)
            .count() as u64;
        if adding == 0 {
            continue;
        }
        if let Some(warning) = check_backpressure(name, config_of(name), loads[name], adding, now)?
        {
            for i in inserted
                .iter_mut()
                .filter(|i| !i.duplicate && &i.job.queue == name)
            {
                i.warning = Some(warning.clone());
            }
        }
    }
    Ok(())
}

fn next_start(rate: Rate, tat: Timestamp, now: Timestamp) -> String {
    let wait = rate.next_admission(tat).duration_since(now).unsigned_abs();
    // Milliseconds only while under a second: "in 59m 59s", not "in 59m 59s 759ms".
    let wait = if wait.as_secs() >= 1 {
        std::time::Duration::from_secs(wait.as_secs())
    } else {
        std::time::Duration::from_millis(wait.as_millis() as u64)
    };
    format!("next start in {}", rota_core::format_duration(wait))
}

/// Why a ready job of this queue is not running, when a limit holds it back now, such as
/// `key customer:42 at its limit 5/5` (`None` for jobs that are not ready, or free to go).
pub fn waiting_reason(
    queue: &QueueConfig,
    job: &Job,
    flow: &crate::QueueFlow,
    now: Timestamp,
) -> Option<String> {
    if job.state != rota_core::JobState::Available {
        return None;
    }
    if let Some(limit) = queue.concurrency {
        if flow.running.total >= u64::from(limit) {
            return Some(format!(
                "queue at its concurrency {}/{limit}",
                flow.running.total
            ));
        }
    }
    let key = key_of(job);
    if let (Some(limit), false) = (queue.key_concurrency, key == NO_KEY) {
        let n = flow.running.of_key(key);
        if n >= u64::from(limit) {
            return Some(format!("key {key} at its limit {n}/{limit}"));
        }
    }
    for (scope, rate) in scopes_of(queue, &job.kind, key) {
        if let Some(tat) = flow.buckets.get(&scope) {
            if rate.admit(Some(*tat), now).is_none() {
                let what = match &scope {
                    BucketScope::Queue => "queue".to_string(),
                    BucketScope::Kind(kind) => format!("kind {kind}"),
                    BucketScope::Key(key) => format!("key {key}"),
                };
                return Some(format!(
                    "{what} at its rate {rate}: {}",
                    next_start(rate, *tat, now)
                ));
            }
        }
    }
    None
}

/// The keys of `flow` at the queue's `key_concurrency`, with their running jobs, most first.
pub fn keys_at_limit<'f>(queue: &QueueConfig, flow: &'f crate::QueueFlow) -> Vec<(&'f str, u64)> {
    let Some(limit) = queue.key_concurrency else {
        return Vec::new();
    };
    let mut keys: Vec<(&str, u64)> = flow
        .running
        .by_key
        .iter()
        .filter(|(_, n)| **n >= u64::from(limit))
        .map(|(k, n)| (k.as_str(), *n))
        .collect();
    keys.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    keys
}

/// How many of a queue's `ready` jobs a limit holds back now, and why (`None`: none).
pub fn queue_waiting(
    queue: &QueueConfig,
    flow: &crate::QueueFlow,
    ready: u64,
    now: Timestamp,
) -> Option<(u64, String)> {
    if ready == 0 {
        return None;
    }
    if let Some(limit) = queue.concurrency {
        if flow.running.total >= u64::from(limit) {
            let reason = format!("queue at its concurrency {}/{limit}", flow.running.total);
            return Some((ready, reason));
        }
    }
    if let (Some(rate), Some(tat)) = (queue.rate, flow.buckets.get(&BucketScope::Queue)) {
        if rate.admit(Some(*tat), now).is_none() {
            let reason = format!("queue at its rate {rate}: {}", next_start(rate, *tat, now));
            return Some((ready, reason));
        }
    }
    let limit = queue.key_concurrency?;
    let at_limit = keys_at_limit(queue, flow).len();
    (at_limit > 0 && flow.waiting_on_keys > 0).then(|| {
        (
            flow.waiting_on_keys,
            match at_limit {
                1 => format!("1 key at its key_concurrency {limit}"),
                n => format!("{n} keys at their key_concurrency {limit}"),
            },
        )
    })
}

/// How soon a fetch waiting on a queue whose limits held jobs back looks again, when no
/// rate says exactly when (a place frees when a running job ends, which wakes nothing).
pub const LIMIT_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// What a node remembers between claims: each queue's round-robin cursor (the key the last
/// claim took from) and, while its limits hold ready jobs back, when a waiting fetch should
/// claim again. In memory per server node: a restart starts the round again, and fairness
/// needs no more.
#[derive(Debug, Default)]
pub struct ClaimMemory {
    cursors: Mutex<HashMap<String, String>>,
    held_back: Mutex<HashMap<String, Timestamp>>,
}

impl ClaimMemory {
    /// Where the next claim of `queue` starts (after this key).
    pub fn cursor(&self, queue: &str) -> Option<String> {
        self.cursors.lock().ok()?.get(queue).cloned()
    }

    /// Records a claim of `queue`: its plan's cursor, and whether its limits held ready jobs
    /// back (`left`: jobs read or keys skipped that the plan did not take), until when.
    pub fn remember(
        &self,
        queue: &str,
        config: &QueueConfig,
        plan: &ClaimPlan,
        buckets: &Buckets,
        left: bool,
        now: Timestamp,
    ) {
        if let (Some(cursor), Ok(mut cursors)) = (&plan.cursor, self.cursors.lock()) {
            cursors.insert(queue.to_string(), cursor.clone());
        }
        let Ok(mut held) = self.held_back.lock() else {
            return;
        };
        if !left || !has_claim_limits(config) {
            held.remove(queue);
            return;
        }
        let mut tats = buckets.clone();
        tats.extend(plan.buckets.clone());
        let refill = tats
            .iter()
            .filter_map(|(scope, tat)| {
                let rate = scope.rate(config)?;
                rate.admit(Some(*tat), now)
                    .is_none()
                    .then(|| rate.next_admission(*tat))
            })
            .min();
        let until = refill.unwrap_or_else(|| rota_core::add_duration(now, LIMIT_POLL));
        held.insert(queue.to_string(), until);
    }

    /// The earliest time one of `queues` may hand out jobs its limits held back.
    pub fn retry_at(&self, queues: &[String]) -> Option<Timestamp> {
        let held = self.held_back.lock().ok()?;
        queues.iter().filter_map(|q| held.get(q).copied()).min()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;
    use rota_core::{JobId, NewJob, RetryPolicy};

    use super::*;

    /// The order the backends' key scans give: keys after `cursor` first (in key order), then
    /// from the start up to and including it.
    fn round_robin_order(mut keys: Vec<String>, cursor: Option<&str>) -> Vec<String> {
        keys.sort_unstable();
        keys.dedup();
        if let Some(cursor) = cursor {
            let split = keys.partition_point(|k| k.as_str() <= cursor);
            keys.rotate_left(split);
        }
        keys
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    fn job(key: &str, kind: &str, priority: u8) -> Job {
        let mut new = NewJob::new("q", kind, serde_json::Value::Null).priority(priority);
        if key != NO_KEY {
            new = new.concurrency_key(key);
        }
        Job::from_new(new, JobId::new(now()), RetryPolicy::default(), now())
    }

    /// Ready jobs grouped by key, each group in claim order.
    fn heads_of(jobs: &[Job]) -> Vec<KeyHeads> {
        let mut groups: BTreeMap<String, Vec<Job>> = BTreeMap::new();
        for j in jobs {
            groups
                .entry(key_of(j).to_string())
                .or_default()
                .push(j.clone());
        }
        groups
            .into_iter()
            .map(|(key, mut jobs)| {
                jobs.sort_by_key(|j| (j.priority, j.run_at, j.id));
                KeyHeads { key, jobs }
            })
            .collect()
    }

    /// The plan of a claim of `max` with nothing running and every bucket full.
    fn plan(queue: &QueueConfig, ready: &[Job], max: usize) -> ClaimPlan {
        plan_claim(
            queue,
            &Running::default(),
            &Buckets::new(),
            heads_of(ready),
            max,
            now(),
        )
    }

    fn count_by_key(jobs: &[Job]) -> HashMap<String, u64> {
        let mut n = HashMap::new();
        for j in jobs {
            *n.entry(key_of(j).to_string()).or_default() += 1;
        }
        n
    }

    #[test]
    fn a_big_key_cannot_starve_a_small_one() {
        let queue = QueueConfig::default();
        let mut ready: Vec<Job> = (0..1000).map(|_| job("a", "k", 5)).collect();
        ready.extend((0..10).map(|_| job("b", "k", 5)));
        let plan = plan(&queue, &ready, 20);
        let n = count_by_key(&plan.jobs);
        assert_eq!((n["a"], n["b"]), (10, 10));
    }

    #[test]
    fn priority_orders_within_a_key() {
        let queue = QueueConfig::default();
        let ready = vec![job("a", "k", 9), job("a", "k", 0), job("b", "k", 5)];
        let plan = plan(&queue, &ready, 1);
        assert_eq!(plan.jobs[0].priority, 0);
        assert_eq!(plan.cursor.as_deref(), Some("a"));
    }

    #[test]
    fn weights_give_a_key_more_per_round() {
        let queue = QueueConfig {
            key_weights: [("a".to_string(), 3)].into(),
            ..QueueConfig::default()
        };
        let ready: Vec<Job> = (0..40)
            .map(|i| job(if i % 2 == 0 { "a" } else { "b" }, "k", 5))
            .collect();
        let plan = plan(&queue, &ready, 8);
        let n = count_by_key(&plan.jobs);
        assert_eq!((n["a"], n["b"]), (6, 2));
    }

    #[test]
    fn a_kind_with_an_empty_bucket_waits_while_other_kinds_go() {
        let queue = QueueConfig {
            kind_rates: [("slow".to_string(), "1/1h".parse().unwrap())].into(),
            ..QueueConfig::default()
        };
        let ready = vec![
            job(NO_KEY, "slow", 0),
            job(NO_KEY, "slow", 1),
            job(NO_KEY, "fast", 2),
        ];
        let plan = plan(&queue, &ready, 3);
        let kinds: Vec<&str> = plan.jobs.iter().map(|j| j.kind.as_str()).collect();
        assert_eq!(kinds, ["slow", "fast"]);
        assert!(plan.buckets.contains_key(&BucketScope::Kind("slow".into())));
    }

    #[test]
    fn keys_at_their_limit_or_out_of_tokens_are_skipped_by_the_scan() {
        let queue = QueueConfig {
            key_concurrency: Some(2),
            key_rate: Some("1/1m".parse().unwrap()),
            ..QueueConfig::default()
        };
        let running = Running {
            total: 3,
            by_key: [("a".to_string(), 2), ("b".to_string(), 1)].into(),
        };
        let later = now() + jiff::SignedDuration::from_secs(30);
        let buckets: Buckets = [
            (BucketScope::Key("c".into()), later),
            (BucketScope::Key("d".into()), now()),
        ]
        .into();
        assert_eq!(blocked_keys(&queue, &running, &buckets, now()), ["a", "c"]);
        assert_eq!(fetch_per_key(&queue, &running, "b", 4, 100), 1);
        assert_eq!(
            fetch_per_key(&QueueConfig::default(), &running, "b", 4, 100),
            25
        );
    }

    #[test]
    fn backpressure_refuses_beyond_max_depth_or_max_age_unless_accepting() {
        let queue = QueueConfig {
            max_depth: Some(100),
            max_age: Some(Duration::from_secs(60)),
            ..QueueConfig::default()
        };
        let load = |depth, waited: i64| QueueLoad {
            depth,
            oldest_ready: Some(now() - jiff::SignedDuration::from_secs(waited)),
        };
        assert_eq!(
            check_backpressure("q", &queue, load(99, 0), 1, now()).unwrap(),
            None
        );
        let err = check_backpressure("q", &queue, load(100, 0), 1, now()).unwrap_err();
        assert!(err.to_string().contains("max_depth 100"), "{err}");
        assert!(
            matches!(err, StoreError::QueueFull { retry_after, .. } if retry_after == RETRY_AFTER_DEFAULT)
        );
        let err = check_backpressure("q", &queue, load(1, 61), 1, now()).unwrap_err();
        assert!(err.to_string().contains("max_age 1m"), "{err}");
        let accepting = QueueConfig {
            overflow: Some(crate::Overflow::Accept),
            ..queue
        };
        let warning = check_backpressure("q", &accepting, load(100, 0), 5, now()).unwrap();
        assert!(warning.unwrap().contains("accepted"));
    }

    #[test]
    fn a_queue_held_back_by_a_rate_is_retried_when_its_bucket_refills() {
        let queue = QueueConfig {
            rate: Some("10/1s".parse().unwrap()),
            ..QueueConfig::default()
        };
        let ready = vec![job(NO_KEY, "k", 5), job(NO_KEY, "k", 5)];
        let plan = plan(&queue, &ready, 2);
        assert_eq!(plan.jobs.len(), 1);
        let memory = ClaimMemory::default();
        memory.remember("q", &queue, &plan, &Buckets::new(), true, now());
        let at = memory.retry_at(&["q".to_string(), "other".to_string()]);
        assert_eq!(at, Some(now() + jiff::SignedDuration::from_millis(100)));
        memory.remember(
            "q",
            &queue,
            &ClaimPlan::default(),
            &Buckets::new(),
            false,
            now(),
        );
        assert_eq!(memory.retry_at(&["q".to_string()]), None);
        let limited = QueueConfig {
            concurrency: Some(1),
            ..QueueConfig::default()
        };
        memory.remember(
            "q",
            &limited,
            &ClaimPlan::default(),
            &Buckets::new(),
            true,
            now(),
        );
        assert_eq!(
            memory.retry_at(&["q".to_string()]),
            Some(now() + jiff::SignedDuration::from_millis(100))
        );
    }

    #[test]
    fn round_robin_starts_after_the_cursor() {
        let keys = vec!["c".into(), "a".into(), "b".into(), "d".into()];
        assert_eq!(
            round_robin_order(keys.clone(), Some("b")),
            ["c", "d", "a", "b"]
        );
        assert_eq!(
            round_robin_order(keys.clone(), Some("bb")),
            ["c", "d", "a", "b"]
        );
        assert_eq!(round_robin_order(keys, None), ["a", "b", "c", "d"]);
    }

    fn arb_config() -> impl Strategy<Value = QueueConfig> {
        let rate = prop_oneof![
            Just(None),
            (1u32..20, 1u32..4).prop_map(|(n, b)| Some(Rate {
                count: n,
                period: Duration::from_secs(1),
                burst: b
            }))
        ];
        (
            proptest::option::of(1u32..10),
            proptest::option::of(1u32..4),
            proptest::option::of(1u32..4),
            rate.clone(),
            rate.clone(),
            rate,
        )
            .prop_map(
                |(concurrency, key_concurrency, weight_a, rate, key_rate, kind_rate)| QueueConfig {
                    concurrency,
                    key_concurrency,
                    key_weights: weight_a.map(|w| ("a".to_string(), w)).into_iter().collect(),
                    rate,
                    key_rate,
                    kind_rates: kind_rate
                        .map(|r| ("x".to_string(), r))
                        .into_iter()
                        .collect(),
                    ..QueueConfig::default()
                },
            )
    }

    fn arb_jobs() -> impl Strategy<Value = Vec<Job>> {
        proptest::collection::vec(
            (
                prop_oneof![Just(NO_KEY), Just("a"), Just("b"), Just("c")],
                prop_oneof![Just("x"), Just("y")],
                0u8..10,
            ),
            0..60,
        )
        .prop_map(|specs| {
            specs
                .into_iter()
                .map(|(k, kind, p)| job(k, kind, p))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn no_plan_ever_exceeds_a_limit(
            queue in arb_config(),
            ready in arb_jobs(),
            running_a in 0u64..4,
            max in 0usize..40,
        ) {
            let running = Running { total: running_a, by_key: [("a".to_string(), running_a)].into() };
            let plan = plan_claim(&queue, &running, &Buckets::new(), heads_of(&ready), max, now());
            prop_assert!(plan.jobs.len() <= max);
            if let Some(limit) = queue.concurrency {
                prop_assert!(running.total + plan.jobs.len() as u64 <= u64::from(limit).max(running.total));
            }
            if let Some(limit) = queue.key_concurrency {
                for (key, n) in count_by_key(&plan.jobs) {
                    if key != NO_KEY {
                        prop_assert!(running.of_key(&key) + n <= u64::from(limit).max(running.of_key(&key)));
                    }
                }
            }
            // At one instant a fresh bucket admits at most its burst.
            let by_kind_x = plan.jobs.iter().filter(|j| j.kind == "x").count() as u32;
            if let Some(r) = queue.kind_rates.get("x") { prop_assert!(by_kind_x <= r.burst); }
            if let Some(r) = queue.rate { prop_assert!(plan.jobs.len() as u32 <= r.burst); }
            if let Some(r) = queue.key_rate {
                for (key, n) in count_by_key(&plan.jobs) {
                    if key != NO_KEY { prop_assert!(n as u32 <= r.burst); }
                }
            }
            // No job twice; the buckets match the jobs taken.
            let mut ids: Vec<JobId> = plan.jobs.iter().map(|j| j.id).collect();
            ids.sort();
            ids.dedup();
            prop_assert_eq!(ids.len(), plan.jobs.len());
            let refs: Vec<&Job> = plan.jobs.iter().collect();
            prop_assert_eq!(charge(&queue, &Buckets::new(), &refs, now()), plan.buckets);
        }

        #[test]
        fn every_eligible_job_is_eventually_planned(
            queue in arb_config(),
            ready in arb_jobs(),
            max in 1usize..10,
        ) {
            let mut ready = ready;
            let total = ready.len();
            let mut buckets = Buckets::new();
            let mut at = now();
            let mut claimed = 0;
            let mut cursor: Option<String> = None;
            for _ in 0..10_000 {
                if ready.is_empty() { break; }
                // The backend's order: keys after the cursor first.
                let groups = heads_of(&ready);
                let order = round_robin_order(groups.iter().map(|g| g.key.clone()).collect(), cursor.as_deref());
                let heads: Vec<KeyHeads> = order.iter().map(|k| groups.iter().find(|g| &g.key == k).unwrap().clone()).collect();
                // Every claimed job finishes before the next claim.
                let plan = plan_claim(&queue, &Running::default(), &buckets, heads, max, at);
                buckets.extend(plan.buckets.clone());
                if plan.cursor.is_some() { cursor = plan.cursor.clone(); }
                claimed += plan.jobs.len();
                ready.retain(|j| !plan.jobs.iter().any(|p| p.id == j.id));
                at += jiff::SignedDuration::from_millis(50);
            }
            prop_assert_eq!(claimed, total, "left: {}", ready.len());
        }

        #[test]
        fn without_limits_keys_share_each_claim_evenly(
            sizes in proptest::collection::vec(5usize..30, 2..5),
            max in 1usize..20,
        ) {
            let keys = ["a", "b", "c", "d", "e"];
            let ready: Vec<Job> = sizes.iter().enumerate()
                .flat_map(|(i, n)| (0..*n).map(move |_| job(keys[i], "k", 5)))
                .collect();
            let plan = plan_claim(&QueueConfig::default(), &Running::default(), &Buckets::new(), heads_of(&ready), max, now());
            let n = count_by_key(&plan.jobs);
            let most = n.values().max().copied().unwrap_or(0);
            // Among keys that still had jobs left.
            let least = keys[..sizes.len()].iter().zip(&sizes)
                .map(|(k, size)| (n.get(*k).copied().unwrap_or(0), *size as u64))
                .filter(|(taken, size)| taken < size)
                .map(|(taken, _)| taken)
                .min()
                .unwrap_or(most);
            prop_assert_eq!(plan.jobs.len(), max.min(ready.len()));
            prop_assert!(most - least <= 1, "{:?}", n);
        }
    }
}
