//! Job changes carried to other nodes over LISTEN/NOTIFY, as a wake-up hint.
//!
//! A committed write sends (through the broadcaster, after its commit; an enqueue in a
//! caller's own transaction inside that transaction, so that it leaves with the caller's
//! commit and never for a rollback) the changes that matter to another node: jobs that became ready
//! or will be (they wake long-polling fetches) and jobs that finished or were deleted (they
//! wake `?wait` waiters). Fetches and heartbeats are not sent. Payloads stay under
//! PostgreSQL's 8,000-byte limit by splitting a large batch into several notifications.
//! Nothing depends on a notification arriving: waiting fetches also look again on a slow
//! timer.

use rota_core::{JobId, JobState};
use rota_store::{ChangeCause, JobChange};
use serde::{Deserialize, Serialize};

/// The channel every Rota node listens on.
pub const CHANNEL: &str = "rota";

/// Bytes of one payload before the next change starts a new notification.
const PAYLOAD_MAX: usize = 7_000;

/// One notification: who sent it and what changed.
#[derive(Debug, Serialize, Deserialize)]
struct Payload<'a> {
    /// The sending node (a node ignores its own notifications).
    o: &'a str,
    /// Changes: job id, queue, kind, new state (absent when deleted).
    c: Vec<(JobId, &'a str, &'a str, Option<&'a str>)>,
}

/// Whether another node needs to hear about `change`.
fn worth_sending(change: &JobChange) -> bool {
    match change.to {
        None => true,
        Some(JobState::Available | JobState::Scheduled | JobState::Retryable) => true,
        Some(state) => state.is_final(),
    }
}

/// The notifications that carry `changes` from node `origin` (none when nothing is worth
/// sending).
pub(crate) fn encode(origin: &str, changes: &[JobChange]) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = Payload {
        o: origin,
        c: Vec::new(),
    };
    let mut size = 0;
    for change in changes.iter().filter(|c| worth_sending(c)) {
        // Escaping at most doubles a name.
        let item_size = 64 + 2 * (change.queue.len() + change.kind.len());
        if size + item_size > PAYLOAD_MAX && !current.c.is_empty() {
            out.push(serde_json::to_string(&current).expect("payload serializes"));
            current.c.clear();
            size = 0;
        }
        size += item_size;
        current.c.push((
            change.id,
            &change.queue,
            &change.kind,
            change.to.map(|s| s.as_str()),
        ));
    }
    if !current.c.is_empty() {
        out.push(serde_json::to_string(&current).expect("payload serializes"));
    }
    out
}

/// The changes a notification carries, unless it came from `own` node or is not Rota's.
pub(crate) fn decode(payload: &str, own: &str) -> Option<Vec<JobChange>> {
    let p: Payload<'_> = serde_json::from_str(payload).ok()?;
    if p.o == own {
        return None;
    }
    Some(
        p.c.into_iter()
            .map(|(id, queue, kind, to)| JobChange {
                id,
                queue: queue.to_owned(),
                kind: kind.to_owned(),
                from: None,
                to: to.and_then(|s| s.parse().ok()),
                cause: ChangeCause::Enqueued,
                took: None,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(to: Option<JobState>, queue: &str) -> JobChange {
        JobChange {
            id: JobId::new(jiff::Timestamp::UNIX_EPOCH),
            queue: queue.into(),
            kind: "k".into(),
            from: Some(JobState::Running),
            to,
            cause: ChangeCause::Completed,
            took: None,
        }
    }

    #[test]
    fn ready_and_final_changes_travel_and_a_node_ignores_its_own() {
        let changes = vec![
            change(Some(JobState::Available), "q"),
            change(Some(JobState::Running), "q"),
            change(Some(JobState::Completed), "q"),
            change(None, "q"),
        ];
        let payloads = encode("a", &changes);
        assert_eq!(payloads.len(), 1);
        assert!(decode(&payloads[0], "a").is_none(), "own notification");
        let got = decode(&payloads[0], "b").unwrap();
        let states: Vec<_> = got.iter().map(|c| c.to).collect();
        assert_eq!(
            states,
            [Some(JobState::Available), Some(JobState::Completed), None]
        );
        assert_eq!(got[0].id, changes[0].id);
        assert!(
            encode("a", &changes[1..2]).is_empty(),
            "a fetch is not sent"
        );
        assert!(decode("not json", "b").is_none());
    }

    #[test]
    fn a_large_batch_is_split_under_the_payload_limit() {
        let changes: Vec<_> = (0..1_000)
            .map(|_| change(Some(JobState::Available), "a-rather-long-queue-name"))
            .collect();
        let payloads = encode("a", &changes);
        assert!(payloads.len() > 1);
        assert!(payloads.iter().all(|p| p.len() < 8_000), "under the limit");
        let total: usize = payloads.iter().map(|p| decode(p, "b").unwrap().len()).sum();
        assert_eq!(total, 1_000, "every change is carried");
    }
}
