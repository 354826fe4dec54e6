//! Grouping dead jobs by the cause of their last error: the backend reads one row per dead
//! job in the window ([`DeadRow`]); [`group_dead`] does the rest the same way everywhere.

use std::collections::HashMap;

use jiff::Timestamp;

use crate::ErrorGroup;

/// What grouping needs of one dead job.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadRow {
    /// Its last error's fingerprint (absent on jobs stored before fingerprints existed).
    pub fingerprint: Option<String>,
    /// Its last error's message.
    pub message: Option<String>,
    /// Its kind.
    pub kind: String,
    /// When it died.
    pub finished_at: Timestamp,
}

/// Deaths whose times a group keeps (for a sparkline).
pub const RECENT_DEATHS: usize = 200;

/// Groups dead jobs by fingerprint (computed from the message where none was stored),
/// largest group first, then the most recent.
pub fn group_dead(rows: impl IntoIterator<Item = DeadRow>) -> Vec<ErrorGroup> {
    let mut groups: HashMap<String, ErrorGroup> = HashMap::new();
    for row in rows {
        let message = row.message.unwrap_or_default();
        let fingerprint = row
            .fingerprint
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| rota_core::fingerprint::fingerprint(&message, None));
        let group = groups
            .entry(fingerprint.clone())
            .or_insert_with(|| ErrorGroup {
                fingerprint,
                message,
                count: 0,
                kinds: vec![],
                latest: row.finished_at,
                first: row.finished_at,
                recent: Vec::new(),
            });
        group.count += 1;
        group.latest = group.latest.max(row.finished_at);
        group.first = group.first.min(row.finished_at);
        if group.recent.len() < RECENT_DEATHS {
            group.recent.push(row.finished_at);
        }
        if !group.kinds.contains(&row.kind) {
            group.kinds.push(row.kind);
        }
    }
    let mut groups: Vec<ErrorGroup> = groups.into_values().collect();
    groups.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(b.latest.cmp(&a.latest))
            .then(a.fingerprint.cmp(&b.fingerprint))
    });
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(fingerprint: Option<&str>, message: &str, kind: &str, at: i64) -> DeadRow {
        DeadRow {
            fingerprint: fingerprint.map(str::to_owned),
            message: Some(message.into()),
            kind: kind.into(),
            finished_at: Timestamp::from_second(at).unwrap(),
        }
    }

    #[test]
    fn jobs_with_one_cause_form_one_group_largest_first() {
        let groups = group_dead([
            row(Some("a"), "disk full", "k1", 10),
            row(Some("b"), "timeout", "k1", 20),
            row(Some("a"), "disk full", "k2", 30),
        ]);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].fingerprint, "a");
        assert_eq!(groups[0].count, 2);
        assert_eq!(groups[0].kinds, vec!["k1".to_owned(), "k2".to_owned()]);
        assert_eq!(groups[0].latest, Timestamp::from_second(30).unwrap());
        assert_eq!(groups[0].first, Timestamp::from_second(10).unwrap());
        assert_eq!(groups[0].recent.len(), 2);
        assert_eq!(groups[1].count, 1);
    }

    #[test]
    fn rows_without_a_fingerprint_are_grouped_by_their_normalised_message() {
        let groups = group_dead([
            row(None, "user 17 not found", "k", 1),
            row(Some(""), "user 42 not found", "k", 2),
        ]);
        assert_eq!(groups.len(), 1, "{groups:?}");
        assert_eq!(groups[0].count, 2);
    }
}
