//! Store errors, classified by meaning so that callers never parse messages.

use rota_core::{JobId, TransitionError, ValidationError};

/// What a store operation can fail with.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No job has this id.
    #[error("job {0} not found")]
    JobNotFound(JobId),
    /// No schedule has this name.
    #[error("schedule {0:?} not found")]
    ScheduleNotFound(String),
    /// The queue was never declared; `suggestion` is the closest declared name.
    #[error("queue {queue:?} is not declared{}", match suggestion {
        Some(s) => format!("; did you mean {s:?}? (declare {queue:?} in rota.toml or with `rota queues declare` if it is new)"),
        None => format!(": declare it in rota.toml or with `rota queues declare {queue}`"),
    })]
    QueueNotDeclared {
        /// The name that was used.
        queue: String,
        /// The nearest declared queue name, if one is close.
        suggestion: Option<String>,
    },
    /// Another unfinished job holds the unique key this change would give a second live job.
    #[error("job {job} cannot run again while job {holder} holds its unique key {key:?}")]
    UniqueKeyTaken {
        /// The job that was to change.
        job: JobId,
        /// The unique key.
        key: String,
        /// The unfinished job holding it.
        holder: JobId,
    },
    /// The queue is beyond its `max_depth` or `max_age` and refuses more jobs for now.
    #[error("{reason}; retry in {}s, or drain the queue (more workers, a higher concurrency) or raise its limit", retry_after.as_secs().max(1))]
    QueueFull {
        /// The queue.
        queue: String,
        /// What is beyond which limit.
        reason: String,
        /// When the producer may try again.
        retry_after: std::time::Duration,
    },
    /// The job's state machine refused the change (stale lease, wrong state).
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// The input is invalid.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// One job of a batch of several is invalid; `index` is its place in the batch.
    #[error("job {index} of the batch: {error}")]
    InvalidItem {
        /// The job's place in the batch, from 0.
        index: usize,
        /// What is wrong with it.
        error: ValidationError,
    },
    /// The database was written by a newer Rota.
    #[error("database schema version {found} is newer than this binary supports (version {supported}): upgrade rota to a release that knows schema {found}")]
    SchemaTooNew {
        /// The version in the database.
        found: i64,
        /// The newest version this binary knows.
        supported: i64,
    },
    /// The database is locked by someone else and did not free up in time.
    #[error("database is busy: {0}")]
    Busy(String),
    /// The database cannot be reached, or the backend has shut down.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The disk holding the database is full: nothing was written.
    #[error("storage full: {0}")]
    StorageFull(String),
    /// Anything else the backend reports, with what was being done.
    #[error("{context}: {message}")]
    Backend {
        /// What the store was doing.
        context: String,
        /// The backend's message.
        message: String,
    },
}

/// The meaning of a [`StoreError`], for callers that branch on it (HTTP status, retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The thing asked for does not exist.
    NotFound,
    /// The request conflicts with the job's current state.
    Conflict,
    /// The worker's lease was taken over or ended; a conflict the worker must not retry.
    LeaseLost,
    /// The input is invalid.
    Invalid,
    /// Temporarily locked: retry later.
    Busy,
    /// The store cannot serve requests.
    Unavailable,
    /// The disk holding the database is full: writes fail until space is freed.
    StorageFull,
    /// The database schema does not match this binary.
    SchemaMismatch,
    /// A queue refuses more work for now (backpressure): retry after a while.
    Overloaded,
    /// Anything else.
    Other,
}

impl StoreError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::JobNotFound(_)
            | StoreError::QueueNotDeclared { .. }
            | StoreError::ScheduleNotFound(_) => ErrorKind::NotFound,
            StoreError::Transition(TransitionError::LeaseLost { .. }) => ErrorKind::LeaseLost,
            StoreError::Transition(_) | StoreError::UniqueKeyTaken { .. } => ErrorKind::Conflict,
            StoreError::Invalid(_) | StoreError::InvalidItem { .. } => ErrorKind::Invalid,
            StoreError::SchemaTooNew { .. } => ErrorKind::SchemaMismatch,
            StoreError::Busy(_) => ErrorKind::Busy,
            StoreError::QueueFull { .. } => ErrorKind::Overloaded,
            StoreError::Unavailable(_) => ErrorKind::Unavailable,
            StoreError::StorageFull(_) => ErrorKind::StorageFull,
            StoreError::Backend { .. } => ErrorKind::Other,
        }
    }

    /// This error, for the job at `index` of a batch of `len`: an invalid job of a batch of
    /// several says which one it is.
    pub fn at_item(self, index: usize, len: usize) -> Self {
        match self {
            StoreError::Invalid(error) if len > 1 => StoreError::InvalidItem { index, error },
            other => other,
        }
    }

    /// A backend error with context.
    pub fn backend(context: impl Into<String>, err: impl std::fmt::Display) -> Self {
        StoreError::Backend {
            context: context.into(),
            message: err.to_string(),
        }
    }
}
