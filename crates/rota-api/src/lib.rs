//! The `/v1` wire types of Rota's HTTP API, shared by `rota-server` and its clients.
//!
//! Requests deny unknown fields, so a misspelt option is an error rather than silently
//! ignored. Durations travel as humane strings (`30s`, `5m`); times as RFC 3339. Every type
//! derives `utoipa::ToSchema`, so the OpenAPI document at `/v1/openapi.json` is generated
//! from these definitions. Domain types live in `rota-core`; the conversions are here.

mod job;
mod kind;
mod problem;
mod queue;
mod schedule;
mod work;

pub use job::*;
pub use kind::{
    BackoffForm, BackoffSchema, ExponentialBackoff, FixedBackoff, JobState, MisfirePolicy,
    ScheduleSource, Severity,
};
pub use problem::Problem;
pub use queue::*;
pub use schedule::*;
pub use work::*;
