//! Bulk actions over "all matching" run in the background, a chunk at a time; their
//! progress is kept here (the latest few runs, in memory) for the run's page.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Runs kept for their pages.
pub const RUNS_KEPT: usize = 32;

/// One bulk action's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkRun {
    /// retry, cancel or delete.
    pub action: String,
    /// How many jobs the filter matched when it started, when the kept counts can say.
    pub expected: Option<u64>,
    /// Jobs acted on so far.
    pub done: u64,
    /// Jobs that could not be (not in a state that allows it).
    pub refused: u64,
    /// Whether it ended.
    pub finished: bool,
    /// Why it stopped early, if it did.
    pub error: Option<String>,
    /// The page it was started from.
    pub back: String,
}

/// The latest bulk runs by id.
#[derive(Debug, Default)]
pub struct BulkRuns {
    runs: Mutex<BTreeMap<u64, BulkRun>>,
}

impl BulkRuns {
    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<u64, BulkRun>) -> T) -> T {
        f(&mut self.runs.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Records a new run; its id.
    pub fn start(&self, action: &str, expected: Option<u64>, back: String) -> u64 {
        self.with(|runs| {
            let id = runs.keys().next_back().map_or(1, |last| last + 1);
            runs.insert(
                id,
                BulkRun {
                    action: action.to_owned(),
                    expected,
                    done: 0,
                    refused: 0,
                    finished: false,
                    error: None,
                    back,
                },
            );
            while runs.len() > RUNS_KEPT {
                runs.pop_first();
            }
            id
        })
    }

    /// A chunk was acted on.
    pub fn progress(&self, id: u64, done: u64, refused: u64) {
        self.with(|runs| {
            if let Some(run) = runs.get_mut(&id) {
                run.done += done;
                run.refused += refused;
            }
        })
    }

    /// The run ended (with the reason when it stopped early).
    pub fn finish(&self, id: u64, error: Option<String>) {
        self.with(|runs| {
            if let Some(run) = runs.get_mut(&id) {
                run.finished = true;
                run.error = error;
            }
        })
    }

    /// A run as it stands.
    pub fn get(&self, id: u64) -> Option<BulkRun> {
        self.with(|runs| runs.get(&id).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_count_their_chunks_and_only_the_latest_are_kept() {
        let runs = BulkRuns::default();
        let id = runs.start("retry", Some(2_500), "/jobs".into());
        runs.progress(id, 1_000, 0);
        runs.progress(id, 1_000, 3);
        let run = runs.get(id).unwrap();
        assert_eq!((run.done, run.refused, run.finished), (2_000, 3, false));
        runs.finish(id, None);
        assert!(runs.get(id).unwrap().finished);
        for _ in 0..RUNS_KEPT {
            runs.start("cancel", None, "/jobs".into());
        }
        assert_eq!(runs.get(id), None, "the oldest is forgotten");
        assert!(runs.get(id + RUNS_KEPT as u64).is_some());
    }
}
