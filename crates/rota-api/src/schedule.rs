//! Schedules on the wire.

use jiff::Timestamp;
use rota_core::schedule::{JobTemplate, MisfirePolicy, ScheduleDef, ScheduleSource};
use rota_core::{parse_duration, Backoff, RetryOverride, ValidationError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Backfill window when none is given.
pub const BACKFILL_DEFAULT: &str = "24h";

/// Create or replace a schedule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// Unique name.
    pub name: String,
    /// Cron expression (5 or 6 fields), `@hourly`, `@daily`, `@weekly`, `@monthly`, or
    /// `@every 15m`.
    pub cron: String,
    /// IANA time zone (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The queue of its jobs.
    pub queue: String,
    /// The kind of its jobs.
    pub kind: String,
    /// The args of its jobs.
    #[serde(default)]
    #[schema(value_type = Value)]
    pub args: Value,
    /// 0..=9.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Attempts of its jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Backoff of its jobs (same shapes as on a job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::BackoffSchema>)]
    pub backoff: Option<Backoff>,
    /// Per-attempt time limit of its jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// skip, latest (default) or all. Read as text so that a wrong value is refused naming
    /// the schedule; its schema is the enum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::MisfirePolicy>)]
    pub misfire: Option<String>,
    /// How far back `all` recovers (default 24h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<String>,
    /// Whether it fires (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl ScheduleRequest {
    /// The definition, checked; errors name the schedule and the field.
    pub fn into_def(self, source: ScheduleSource) -> Result<ScheduleDef, ValidationError> {
        let name = self.name.clone();
        let named = |field: &str, message: String| {
            ValidationError::new(field, format!("schedule {name:?}: {message}"))
        };
        let duration =
            |field: &str, raw: &str| parse_duration(raw).map_err(|e| named(field, e.to_string()));
        let def = ScheduleDef {
            name: self.name.clone(),
            expression: self.cron,
            timezone: self.timezone.unwrap_or_else(|| "UTC".into()),
            template: JobTemplate {
                queue: self.queue,
                kind: self.kind,
                args: self.args,
                priority: self.priority,
                retry: RetryOverride {
                    max_attempts: self.max_attempts,
                    backoff: self.backoff,
                },
                timeout: self
                    .timeout
                    .as_deref()
                    .map(|t| duration("timeout", t))
                    .transpose()?,
            },
            misfire: self
                .misfire
                .as_deref()
                .map(|m| m.parse::<MisfirePolicy>().map_err(|e| named("misfire", e)))
                .transpose()?
                .unwrap_or_default(),
            backfill: duration(
                "backfill",
                self.backfill.as_deref().unwrap_or(BACKFILL_DEFAULT),
            )?,
            enabled: self.enabled.unwrap_or(true),
            source,
        };
        // The core calls the cron text `expression`; on the wire it is `cron`.
        def.validate().map_err(|mut e| {
            if e.field == "expression" {
                e.field = "cron".into();
            }
            e
        })?;
        Ok(def)
    }
}

/// A schedule, its next slot and what it has done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScheduleView {
    /// Its name.
    pub name: String,
    /// The expression.
    pub cron: String,
    /// The time zone.
    pub timezone: String,
    /// The queue of its jobs.
    pub queue: String,
    /// The kind of its jobs.
    pub kind: String,
    /// skip, latest or all.
    pub misfire: crate::MisfirePolicy,
    /// How far back `all` recovers.
    pub backfill: String,
    /// Whether it fires.
    pub enabled: bool,
    /// config or api.
    pub source: crate::ScheduleSource,
    /// The next slot, if enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_slot: Option<Timestamp>,
    /// Slots at or before this are done.
    #[schema(value_type = String, format = DateTime)]
    pub last_slot: Timestamp,
    /// The most recent job it enqueued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job: Option<String>,
    /// That job's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job_state: Option<crate::JobState>,
    /// Slots fired on time.
    pub fired: u64,
    /// Slots missed while no scheduler ran.
    pub missed: u64,
    /// Missed slots recovered.
    pub recovered: u64,
}

/// Every schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScheduleList {
    /// By name.
    pub schedules: Vec<ScheduleView>,
}
