//! Configuration in two stages: raw (flags, `ROTA_*` environment, `rota.toml`, all optional)
//! then one validated [`ServeConfig`] with defaults applied. Precedence: flag > environment
//! > file > default (clap merges the first two; this module adds the file and defaults).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use rota_core::validation::nearest_name;
use rota_core::{Backoff, RetryOverride};
use rota_sqlite::Durability;
use serde::Deserialize;

use crate::cli::ServeArgs;

/// The default listen address.
pub const BIND_DEFAULT: &str = "127.0.0.1:7700";
/// The default database file.
pub const DATABASE_DEFAULT: &str = "rota.db";

/// `rota.toml`, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    database: Option<String>,
    bind: Option<String>,
    durability: Option<String>,
    body_limit: Option<usize>,
    lease: Option<String>,
    header_timeout: Option<String>,
    database_wait: Option<String>,
    completed_retention: Option<String>,
    cancelled_retention: Option<String>,
    dead_retention: Option<String>,
    max_snoozes: Option<u32>,
    #[serde(default)]
    retry: Option<RetryFile>,
    #[serde(default)]
    queues: BTreeMap<String, QueueFile>,
    #[serde(default)]
    kinds: BTreeMap<String, RetryFile>,
    #[serde(default)]
    token: Vec<TokenFile>,
    #[serde(default)]
    schedule: Vec<rota::api::ScheduleRequest>,
}

/// A `[[token]]` in the file: its hash, never the token itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    name: String,
    scope: String,
    hash: String,
    /// Most requests it may make, such as `"50/1s burst 100"` (none: no limit).
    rate: Option<String>,
}

/// A retry layer in the file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    max_attempts: Option<u32>,
    backoff: Option<Backoff>,
}

/// A queue in the file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueFile {
    max_attempts: Option<u32>,
    backoff: Option<Backoff>,
    lease: Option<String>,
    timeout: Option<String>,
    concurrency: Option<u32>,
    completed_retention: Option<String>,
    cancelled_retention: Option<String>,
    dead_retention: Option<String>,
    key_concurrency: Option<u32>,
    #[serde(default)]
    key_weights: BTreeMap<String, u32>,
    rate: Option<String>,
    key_rate: Option<String>,
    #[serde(default)]
    kind_rates: BTreeMap<String, String>,
    max_depth: Option<u64>,
    max_age: Option<String>,
    overflow: Option<String>,
}

/// A rate from the file; the error names the field.
fn rate(field: &str, raw: &Option<String>) -> anyhow::Result<Option<rota_core::Rate>> {
    raw.as_deref()
        .map(|r| r.parse().map_err(|e| anyhow::anyhow!("{field}: {e}")))
        .transpose()
}

/// Smallest request body limit: below it not even a small job fits.
const BODY_LIMIT_MIN: usize = 1024;

const TOP_KEYS: &[&str] = &[
    "database",
    "bind",
    "durability",
    "body_limit",
    "lease",
    "header_timeout",
    "database_wait",
    "completed_retention",
    "cancelled_retention",
    "dead_retention",
    "max_snoozes",
    "retry",
    "queues",
    "kinds",
    "token",
    "schedule",
];
const SCHEDULE_KEYS: &[&str] = &[
    "name",
    "cron",
    "timezone",
    "queue",
    "kind",
    "args",
    "priority",
    "max_attempts",
    "backoff",
    "timeout",
    "misfire",
    "backfill",
    "enabled",
];
const TOKEN_KEYS: &[&str] = &["name", "scope", "hash", "rate"];
const QUEUE_KEYS: &[&str] = &[
    "max_attempts",
    "backoff",
    "lease",
    "timeout",
    "concurrency",
    "completed_retention",
    "cancelled_retention",
    "dead_retention",
    "key_concurrency",
    "key_weights",
    "rate",
    "key_rate",
    "kind_rates",
    "max_depth",
    "max_age",
    "overflow",
];
const RETRY_KEYS: &[&str] = &["max_attempts", "backoff"];

/// Everything `rota serve` needs, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The database.
    pub database: crate::store::DatabaseUrl,
    /// Where to listen.
    pub bind: SocketAddr,
    /// Commit durability.
    pub durability: Durability,
    /// PostgreSQL: create the database when it is missing.
    pub create_database: bool,
    /// PostgreSQL: most pooled connections.
    pub pool_size: Option<usize>,
    /// Largest request body.
    pub body_limit: usize,
    /// Default lease.
    pub lease: Duration,
    /// How long a connection has to send a request's headers (and may sit idle).
    pub header_timeout: Duration,
    /// PostgreSQL: how long start-up waits for a database server that does not answer.
    pub database_wait: Duration,
    /// How long finished jobs are kept.
    pub retention: rota_store::Retention,
    /// Most snoozes a job may have.
    pub max_snoozes: u32,
    /// Server default retry layer.
    pub retry: RetryOverride,
    /// Queues to declare at start-up, with their settings.
    pub queues: BTreeMap<String, rota_store::QueueConfig>,
    /// Per-kind retry layers.
    pub kinds: BTreeMap<String, RetryOverride>,
    /// Allow a non-loopback bind without tokens.
    pub insecure_no_auth: bool,
    /// Accepted tokens.
    pub auth: rota_server::Auth,
    /// Schedules from the file.
    pub schedules: Vec<rota_core::schedule::ScheduleDef>,
}

fn check_keys(
    table: &toml::Table,
    allowed: &[&str],
    within: &str,
    path: &Path,
) -> anyhow::Result<()> {
    for key in table.keys() {
        if !allowed.contains(&key.as_str()) {
            let hint = match nearest_name(key, allowed.iter().copied()) {
                Some(near) => format!("; did you mean `{near}`?"),
                None => format!("; valid keys: {}", allowed.join(", ")),
            };
            bail!("{}: unknown key `{within}{key}`{hint}", path.display());
        }
    }
    Ok(())
}

/// Reads `path`; a missing file is an empty configuration unless it was asked for by name.
pub fn read_file(path: &Path, required: bool) -> anyhow::Result<FileConfig> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(FileConfig::default())
        }
        Err(err) => {
            return Err(err).with_context(|| format!("cannot read config file {}", path.display()))
        }
    };
    let table: toml::Table = toml::from_str(&text).map_err(|e| toml_error(path, &text, &e))?;
    check_keys(&table, TOP_KEYS, "", path)?;
    for (section, keys) in [("queues", QUEUE_KEYS), ("kinds", RETRY_KEYS)] {
        if let Some(toml::Value::Table(entries)) = table.get(section) {
            for (name, entry) in entries {
                if let toml::Value::Table(entry) = entry {
                    check_keys(entry, keys, &format!("{section}.{name}."), path)?;
                }
            }
        }
    }
    if let Some(toml::Value::Array(schedules)) = table.get("schedule") {
        for schedule in schedules {
            if let toml::Value::Table(schedule) = schedule {
                check_keys(schedule, SCHEDULE_KEYS, "schedule.", path)?;
            }
        }
    }
    if let Some(toml::Value::Array(tokens)) = table.get("token") {
        for token in tokens {
            if let toml::Value::Table(token) = token {
                check_keys(token, TOKEN_KEYS, "token.", path)?;
            }
        }
    }
    if let Some(toml::Value::Table(retry)) = table.get("retry") {
        check_keys(retry, RETRY_KEYS, "retry.", path)?;
    }
    toml::from_str(&text).map_err(|e| toml_error(path, &text, &e))
}

/// A TOML error as one line: file, line, column, message.
fn toml_error(path: &Path, text: &str, err: &toml::de::Error) -> anyhow::Error {
    let message = err.message().trim().replace('\n', "; ");
    match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            anyhow::anyhow!("{} line {line}, column {column}: {message}", path.display())
        }
        None => anyhow::anyhow!("{}: {message}", path.display()),
    }
}

fn duration(key: &str, raw: &str) -> anyhow::Result<Duration> {
    Ok(rota_core::parse_duration_field(key, raw)?)
}

/// Resolves flags and environment (already merged by clap) over the file over defaults.
pub fn resolve(args: &ServeArgs) -> anyhow::Result<ServeConfig> {
    // A file named explicitly must exist; the default `rota.toml` is optional.
    let explicit = args.config != Path::new("rota.toml");
    let file = read_file(&args.config, explicit)?;
    let retention = retention(&file)?;
    let database = args
        .database
        .clone()
        .or(file.database)
        .unwrap_or_else(|| DATABASE_DEFAULT.to_owned());
    let database = crate::store::DatabaseUrl::parse(&database)?;
    let bind_raw = args
        .bind
        .clone()
        .or(file.bind)
        .unwrap_or_else(|| BIND_DEFAULT.to_owned());
    let bind: SocketAddr = bind_raw.parse().map_err(|_| {
        anyhow::anyhow!("bind: {bind_raw:?} is not an address such as 127.0.0.1:7700")
    })?;
    let durability = match args.durability.clone().or(file.durability).as_deref() {
        None | Some("full") => Durability::Full,
        Some("normal") => Durability::Normal,
        Some(other) => bail!("durability: expected `full` or `normal`, got {other:?}"),
    };
    let lease = match file.lease {
        Some(raw) => duration("lease", &raw)?,
        None => rota_server::LEASE_DEFAULT,
    };
    rota_store::check_minimum("lease", Some(lease), rota_store::LEASE_MIN)?;
    let header_timeout = match file.header_timeout {
        Some(raw) => duration("header_timeout", &raw)?,
        None => rota_server::HEADER_TIMEOUT_DEFAULT,
    };
    rota_store::check_minimum(
        "header_timeout",
        Some(header_timeout),
        Duration::from_secs(1),
    )?;
    let database_wait = match args.database_wait.clone().or(file.database_wait) {
        Some(raw) => duration("database_wait", &raw)?,
        None => rota_server::DATABASE_WAIT_DEFAULT,
    };
    let retry = file
        .retry
        .map(|r| RetryOverride {
            max_attempts: r.max_attempts,
            backoff: r.backoff,
        })
        .unwrap_or_default();
    retry.validate().map_err(|e| anyhow::anyhow!("retry.{e}"))?;
    let mut queues = BTreeMap::new();
    for (name, q) in file.queues {
        rota_core::validation::validate_queue_name(&name)
            .map_err(|e| anyhow::anyhow!("queues.{name}: {e}"))?;
        let field = |key: &str, raw: &Option<String>| {
            raw.as_deref()
                .map(|raw| duration(&format!("queues.{name}.{key}"), raw))
                .transpose()
        };
        let config = rota_store::QueueConfig {
            retry: RetryOverride {
                max_attempts: q.max_attempts,
                backoff: q.backoff,
            },
            lease: field("lease", &q.lease)?,
            timeout: field("timeout", &q.timeout)?,
            concurrency: q.concurrency,
            completed_retention: field("completed_retention", &q.completed_retention)?,
            cancelled_retention: field("cancelled_retention", &q.cancelled_retention)?,
            dead_retention: field("dead_retention", &q.dead_retention)?,
            key_concurrency: q.key_concurrency,
            key_weights: q.key_weights,
            rate: rate(&format!("queues.{name}.rate"), &q.rate)?,
            key_rate: rate(&format!("queues.{name}.key_rate"), &q.key_rate)?,
            kind_rates: q
                .kind_rates
                .iter()
                .map(|(kind, raw)| {
                    let field = format!("queues.{name}.kind_rates.{kind}");
                    Ok((
                        kind.clone(),
                        rate(&field, &Some(raw.clone()))?.expect("given"),
                    ))
                })
                .collect::<anyhow::Result<_>>()?,
            max_depth: q.max_depth,
            max_age: field("max_age", &q.max_age)?,
            overflow: q
                .overflow
                .as_deref()
                .map(|raw| {
                    raw.parse()
                        .map_err(|e| anyhow::anyhow!("queues.{name}.overflow: {e}"))
                })
                .transpose()?,
        };
        rota_store::check_queue_config(&config)
            .map_err(|e| anyhow::anyhow!("queues.{name}.{e}"))?;
        queues.insert(name, config);
    }
    let mut kinds = BTreeMap::new();
    for (name, k) in file.kinds {
        let layer = RetryOverride {
            max_attempts: k.max_attempts,
            backoff: k.backoff,
        };
        layer
            .validate()
            .map_err(|e| anyhow::anyhow!("kinds.{name}.{e}"))?;
        kinds.insert(name, layer);
    }
    let mut tokens = Vec::new();
    for (i, t) in file.token.into_iter().enumerate() {
        let scope = t
            .scope
            .parse()
            .map_err(|e| anyhow::anyhow!("token[{i}] ({}).scope: {e}", t.name))?;
        let hash = rota_server::TokenEntry::parse_hash(&t.hash)
            .map_err(|e| anyhow::anyhow!("token[{i}] ({}).hash: {e}", t.name))?;
        let rate = rate(&format!("token[{i}] ({}).rate", t.name), &t.rate)?;
        tokens.push(rota_server::TokenEntry {
            name: t.name,
            scope,
            hash,
            rate,
        });
    }
    let mut schedules = Vec::new();
    for request in file.schedule {
        let def = request
            .into_def(rota_core::schedule::ScheduleSource::Config)
            .map_err(|e| {
                anyhow::anyhow!(
                    "{}: [[schedule]] {}: {}",
                    args.config.display(),
                    e.field,
                    e.message
                )
            })?;
        if schedules
            .iter()
            .any(|d: &rota_core::schedule::ScheduleDef| d.name == def.name)
        {
            bail!(
                "{}: two [[schedule]] entries are named {:?}",
                args.config.display(),
                def.name
            );
        }
        schedules.push(def);
    }
    let body_limit = args
        .body_limit
        .or(file.body_limit)
        .unwrap_or(rota_server::BODY_LIMIT_DEFAULT);
    if body_limit < BODY_LIMIT_MIN {
        bail!("body_limit: must be at least {BODY_LIMIT_MIN} bytes, got {body_limit}");
    }
    Ok(ServeConfig {
        schedules,
        auth: rota_server::Auth { tokens },
        database,
        bind,
        durability,
        create_database: args.create_database,
        pool_size: args.pool_size,
        body_limit,
        lease,
        header_timeout,
        database_wait,
        retention,
        max_snoozes: file.max_snoozes.unwrap_or(rota_store::MAX_SNOOZES_DEFAULT),
        retry,
        queues,
        kinds,
        insecure_no_auth: args.insecure_no_auth,
    })
}

/// The server-wide retention the file sets (defaults for what it leaves out).
pub fn retention(file: &FileConfig) -> anyhow::Result<rota_store::Retention> {
    let defaults = rota_store::Retention::default();
    let field =
        |key: &str, raw: &Option<String>| raw.as_deref().map(|raw| duration(key, raw)).transpose();
    Ok(rota_store::Retention {
        completed: field("completed_retention", &file.completed_retention)?
            .unwrap_or(defaults.completed),
        cancelled: field("cancelled_retention", &file.cancelled_retention)?
            .unwrap_or(defaults.cancelled),
        dead: field("dead_retention", &file.dead_retention)?.or(defaults.dead),
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rota.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn unknown_keys_name_the_key_and_the_nearest_valid_one() {
        let (_dir, path) = write("bnd = \"127.0.0.1:1\"\n");
        let err = read_file(&path, true).unwrap_err().to_string();
        assert!(
            err.contains("unknown key `bnd`") && err.contains("did you mean `bind`"),
            "{err}"
        );
        let (_dir, path) = write("[queues.mail]\nmax_attemps = 3\n");
        let err = read_file(&path, true).unwrap_err().to_string();
        assert!(
            err.contains("queues.mail.max_attemps") && err.contains("`max_attempts`"),
            "{err}"
        );
    }

    #[test]
    fn unreadable_toml_names_the_line() {
        let (_dir, path) = write("bind = \n");
        let err = read_file(&path, true).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let (_dir, path) = write(
            "bind = \"127.0.0.1:9001\"\ndurability = \"normal\"\n[queues.mail]\nlease = \"1m\"\n",
        );
        let args = |bind: Option<&str>| ServeArgs {
            database: None,
            bind: bind.map(str::to_owned),
            config: path.clone(),
            durability: None,
            body_limit: None,
            insecure_no_auth: false,
            create_database: false,
            pool_size: None,
            database_wait: None,
        };
        let from_file = resolve(&args(None)).unwrap();
        assert_eq!(from_file.bind.to_string(), "127.0.0.1:9001");
        assert_eq!(from_file.durability, Durability::Normal);
        assert_eq!(
            from_file.database,
            crate::store::DatabaseUrl::Sqlite(PathBuf::from(DATABASE_DEFAULT))
        );
        assert_eq!(
            from_file.queues["mail"].lease,
            Some(Duration::from_secs(60))
        );
        let from_flag = resolve(&args(Some("127.0.0.1:9002"))).unwrap();
        assert_eq!(from_flag.bind.to_string(), "127.0.0.1:9002");
    }

    /// `backoff = ["30s", "60s", "120s"]`, the form users write first, is explicit intervals
    /// (issue 9: it failed with "wanted string or table").
    #[test]
    fn a_backoff_list_in_the_file_is_explicit_intervals() {
        let (_dir, path) = write(
            "[retry]\nbackoff = [\"30s\", \"60s\", \"120s\"]\n[queues.mail]\nbackoff = [\"1m\"]\n[kinds.\"report.build\"]\nbackoff = [\"5s\", \"10s\"]\n",
        );
        let config = resolve(&serve_args(path)).unwrap();
        let secs = |list: &[u64]| {
            Some(rota_core::Backoff::Intervals(
                list.iter().map(|s| Duration::from_secs(*s)).collect(),
            ))
        };
        assert_eq!(config.retry.backoff, secs(&[30, 60, 120]));
        assert_eq!(config.queues["mail"].retry.backoff, secs(&[60]));
        assert_eq!(config.kinds["report.build"].backoff, secs(&[5, 10]));
        let (_dir, path) = write("[retry]\nbackoff = \"30s\"\n");
        let err = resolve(&serve_args(path)).unwrap_err();
        assert!(
            format!("{err:#}").contains("a list of intervals"),
            "{err:#}"
        );
    }

    fn serve_args(path: PathBuf) -> ServeArgs {
        ServeArgs {
            database: None,
            bind: None,
            config: path,
            durability: None,
            body_limit: None,
            insecure_no_auth: false,
            create_database: false,
            pool_size: None,
            database_wait: None,
        }
    }

    /// Retention is a setting, server-wide and per queue (issue 18: the documented keys were
    /// refused as unknown).
    #[test]
    fn retention_is_read_from_the_file() {
        let (_dir, path) = write(
            "completed_retention = \"7d\"\ndead_retention = \"30d\"\n[queues.q]\ncompleted_retention = \"1h\"\ndead_retention = \"1d\"\n",
        );
        let config = resolve(&serve_args(path)).unwrap();
        assert_eq!(config.retention.completed, Duration::from_secs(7 * 86_400));
        assert_eq!(config.retention.cancelled, Duration::from_secs(86_400));
        assert_eq!(
            config.retention.dead,
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(
            config.queues["q"].completed_retention,
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            config.queues["q"].dead_retention,
            Some(Duration::from_secs(86_400))
        );
        let (_dir, path) = write("");
        assert_eq!(resolve(&serve_args(path)).unwrap().retention.dead, None);
    }

    /// Zero or tiny settings that make no sense are refused naming the minimum (issue 18).
    #[test]
    fn zero_or_tiny_settings_are_refused_naming_the_minimum() {
        for (text, expected) in [
            ("lease = \"0s\"\n", "lease: must be at least 1s"),
            ("lease = \"1ms\"\n", "lease: must be at least 1s"),
            (
                "[queues.q]\ntimeout = \"0s\"\n",
                "queues.q.timeout: must be at least 1s",
            ),
            (
                "[queues.q]\nlease = \"10ms\"\n",
                "queues.q.lease: must be at least 1s",
            ),
            (
                "body_limit = 0\n",
                "body_limit: must be at least 1024 bytes",
            ),
            (
                "[[token]]\nname = \"ci\"\nscope = \"produce\"\nhash = \"sha256:097b473aa27f476865ab4e82b88252cebd04d684dbe363e3eef4b56044bea696\"\nrate = \"0/1s\"\n",
                "token[0] (ci).rate: the count must be at least 1",
            ),
        ] {
            let (_dir, path) = write(text);
            let err = format!("{:#}", resolve(&serve_args(path)).unwrap_err());
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}

#[cfg(test)]
mod readme {
    use super::*;

    /// The README's example rota.toml is a valid configuration.
    #[test]
    fn the_readme_example_config_is_valid() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let end = start + readme[start..].find("```").expect("closed");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rota.toml");
        std::fs::write(&path, &readme[start..end]).unwrap();
        let args = ServeArgs {
            database: None,
            bind: None,
            config: path,
            durability: None,
            body_limit: None,
            insecure_no_auth: false,
            create_database: false,
            pool_size: None,
            database_wait: None,
        };
        let config = resolve(&args).unwrap();
        assert_eq!(config.schedules.len(), 1);
        assert_eq!(config.auth.tokens.len(), 1);
        assert_eq!(
            config.auth.tokens[0].rate.map(|r| r.to_string()).as_deref(),
            Some("200/1s burst 400")
        );
        assert!(config.queues.contains_key("emails"));
    }
}
