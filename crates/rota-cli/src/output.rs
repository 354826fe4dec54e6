//! Human tables by default, JSON with `--json`.

use rota::api::{JobView, QueueView, ScheduleView};
use serde::Serialize;

/// Prints `value` as JSON, or the table `human` builds.
pub fn print<T: Serialize>(json: bool, value: &T, human: impl FnOnce(&T) -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("wire types serialize")
        );
    } else {
        print!("{}", human(value));
    }
}

/// A plain table: a header row and aligned columns.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// Jobs as a table.
pub fn jobs_table(jobs: &[JobView]) -> String {
    table(
        &["id", "queue", "kind", "state", "attempt", "run_at"],
        jobs.iter()
            .map(|j| {
                vec![
                    j.id.clone(),
                    j.queue.clone(),
                    j.kind.clone(),
                    j.state.to_string(),
                    format!("{}/{}", j.attempt, j.max_attempts),
                    j.run_at.to_string(),
                ]
            })
            .collect(),
    )
}

/// One job in detail, errors included.
pub fn job_detail(j: &JobView) -> String {
    let mut out = format!(
        "id:        {}\nqueue:     {}\nkind:      {}\nstate:     {}\nattempt:   {}/{}\nargs:      {}\nrun_at:    {}\ncreated:   {}\n",
        j.id, j.queue, j.kind, j.state, j.attempt, j.max_attempts, j.args, j.run_at, j.created_at
    );
    if let Some(key) = &j.concurrency_key {
        out.push_str(&format!("key:       {key}\n"));
    }
    if let Some(waiting) = &j.waiting {
        out.push_str(&format!("waiting:   {waiting}\n"));
    }
    if let Some(last) = j.snoozed.last() {
        out.push_str(&format!(
            "snoozed:   {} time(s) in this series; last at {} (attempt {}) until {}\n",
            j.snoozes, last.at, last.attempt, last.until
        ));
    }
    if let Some(checkpoint) = &j.checkpoint {
        out.push_str(&format!("checkpoint: {checkpoint}\n"));
    }
    if let Some(result) = &j.result {
        out.push_str(&format!("result:    {result}\n"));
    }
    if let Some(p) = j.progress {
        out.push_str(&format!(
            "progress:  {p}% {}\n",
            j.progress_message.clone().unwrap_or_default()
        ));
    }
    for e in &j.errors {
        out.push_str(&format!(
            "error #{} at {} on {}: {}\n",
            e.attempt, e.at, e.worker, e.message
        ));
        if let Some(bt) = &e.backtrace {
            for line in bt.lines() {
                out.push_str(&format!("    {line}\n"));
            }
        }
    }
    out
}

/// Queues as a table.
pub fn queues_table(queues: &[QueueView]) -> String {
    let count = |q: &QueueView, s: &str| q.counts.get(s).copied().unwrap_or(0).to_string();
    table(
        &[
            "queue",
            "paused",
            "available",
            "scheduled",
            "running",
            "retryable",
            "dead",
            "oldest_ready",
            "limits",
            "waiting",
        ],
        queues
            .iter()
            .map(|q| {
                vec![
                    q.name.clone(),
                    q.paused.to_string(),
                    count(q, "available"),
                    count(q, "scheduled"),
                    match q.concurrency {
                        // The limit beside the running jobs: 3/4.
                        Some(limit) => format!("{}/{limit}", count(q, "running")),
                        None => count(q, "running"),
                    },
                    count(q, "retryable"),
                    count(q, "dead"),
                    q.oldest_ready_age_seconds
                        .map(|s| format!("{s:.0}s"))
                        .unwrap_or_else(|| "-".into()),
                    queue_limits(q),
                    q.waiting
                        .as_ref()
                        .map_or_else(|| "-".into(), |w| format!("{} ({})", w.jobs, w.reason)),
                ]
            })
            .collect(),
    )
}

/// A queue's flow-control settings in one cell: `key 2, rate 10/1s, depth 100`.
fn queue_limits(q: &QueueView) -> String {
    let mut parts = Vec::new();
    if let Some(n) = q.key_concurrency {
        parts.push(format!("key {n}"));
    }
    if let Some(r) = &q.rate {
        parts.push(format!("rate {r}"));
    }
    if let Some(r) = &q.key_rate {
        parts.push(format!("key rate {r}"));
    }
    for (kind, r) in &q.kind_rates {
        parts.push(format!("{kind} {r}"));
    }
    if let Some(n) = q.max_depth {
        parts.push(format!("depth {n}"));
    }
    if let Some(a) = &q.max_age {
        parts.push(format!("age {a}"));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// One queue: its table row, then the keys at their limit.
pub fn queue_detail(q: &QueueView) -> String {
    let mut out = queues_table(std::slice::from_ref(q));
    for k in &q.keys_at_limit {
        out.push_str(&format!(
            "key {} at its limit {}/{}\n",
            k.key, k.running, k.limit
        ));
    }
    if q.overflows > 0 {
        out.push_str(&format!(
            "overflows: {} enqueue(s) beyond max_depth/max_age since the server started\n",
            q.overflows
        ));
    }
    out
}

fn or_dash<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_owned(), ToString::to_string)
}

/// Schedules as a table.
pub fn schedules_table(schedules: &[ScheduleView]) -> String {
    table(
        &[
            "name",
            "cron",
            "timezone",
            "next_slot",
            "last_slot",
            "last_job",
            "fired",
            "missed",
            "recovered",
            "enabled",
        ],
        schedules
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.cron.clone(),
                    s.timezone.clone(),
                    or_dash(&s.next_slot),
                    s.last_slot.to_string(),
                    or_dash(&s.last_job_state),
                    s.fired.to_string(),
                    s.missed.to_string(),
                    s.recovered.to_string(),
                    s.enabled.to_string(),
                ]
            })
            .collect(),
    )
}

/// One schedule in detail.
pub fn schedule_detail(s: &ScheduleView) -> String {
    format!(
        "name:       {}\ncron:       {} ({})\njob:        {} on {}\nmisfire:    {} (backfill {})\nenabled:    {} (from {})\nnext slot:  {}\nlast slot:  {}\nlast job:   {} {}\ncounts:     fired {}, missed {}, recovered {}\n",
        s.name, s.cron, s.timezone, s.kind, s.queue, s.misfire, s.backfill, s.enabled, s.source,
        or_dash(&s.next_slot), s.last_slot, or_dash(&s.last_job), or_dash(&s.last_job_state), s.fired, s.missed, s.recovered
    )
}
