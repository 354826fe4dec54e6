//! The command line, defined once with clap's derive: help text and suggestions for mistyped
//! flags and commands come from these definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Rota: durable background jobs.
#[derive(Debug, Parser)]
#[command(name = "rota", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// How client commands reach the server (only on the commands that talk to one, so that
/// `rota serve --help` does not offer them).
#[derive(Debug, Clone, Default, Args)]
pub struct ClientArgs {
    /// The server's URL [default: http://127.0.0.1:7700].
    #[arg(long, global = true, env = "ROTA_URL")]
    pub url: Option<String>,
    /// Bearer token for the server.
    #[arg(long, global = true, env = "ROTA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ClientArgs {
    /// The server URL: `--url`, `ROTA_URL`, or the local default.
    pub fn url(&self) -> &str {
        self.url.as_deref().unwrap_or("http://127.0.0.1:7700")
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (embedded SQLite by default).
    Serve(ServeArgs),
    /// Enqueue a job.
    Enqueue {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: EnqueueArgs,
    },
    /// Inspect and manage jobs.
    Jobs {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Dead jobs: list and retry.
    Dead {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: DeadCommand,
    },
    /// Queues: list, show, declare, pause, resume.
    Queues {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: QueuesCommand,
    },
    /// Cron schedules: list, show, create, delete, pause, resume, trigger.
    Schedules {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: SchedulesCommand,
    },
    /// Workers the server has seen.
    Workers {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run jobs by executing a command for each (any language).
    Worker {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: WorkerArgs,
    },
    /// Bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Measure throughput and latency (starts a server unless --url is given).
    Bench {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: BenchArgs,
    },
    /// Check everything that can need action, with the fix; exits 1 if anything does.
    Doctor {
        #[command(flatten)]
        client: ClientArgs,
        /// Check this database directly (a SQLite file or sqlite://PATH) instead of asking
        /// the server at --url.
        #[arg(long)]
        database: Option<String>,
    },
    /// Exit 0 if the server is ready, 1 if not (for container health checks); with
    /// --worker NAME, whether that worker fetched or heartbeated within its lease.
    Health {
        #[command(flatten)]
        client: ClientArgs,
        /// Check this worker (its --name; the host name by default) instead of the server.
        #[arg(long)]
        worker: Option<String>,
    },
    /// Database schema: status, or apply pending migrations.
    #[command(subcommand)]
    Migrate(MigrateCommand),
}

impl Command {
    /// The server a client command talks to (`None` for serve, token and migrate).
    pub fn client_args(&self) -> Option<&ClientArgs> {
        match self {
            Command::Enqueue { client, .. }
            | Command::Jobs { client, .. }
            | Command::Dead { client, .. }
            | Command::Queues { client, .. }
            | Command::Schedules { client, .. }
            | Command::Workers { client }
            | Command::Worker { client, .. }
            | Command::Bench { client, .. }
            | Command::Doctor { client, .. }
            | Command::Health { client, .. } => Some(client),
            Command::Serve(_) | Command::Token(_) | Command::Migrate(_) => None,
        }
    }
}

/// `rota bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Jobs per workload.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    /// Concurrent workers in the drain workload.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Jobs fetched and completed per call by each worker.
    #[arg(long, default_value_t = 100)]
    pub batch: u32,
    /// Enqueue rate of the latency workload, jobs per second.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// Length of the latency workload.
    #[arg(long, default_value = "20s")]
    pub duration: String,
    /// Extra workers long-polling the latency workload's queue beside the one measured.
    #[arg(long, default_value_t = 0)]
    pub idle_workers: usize,
    /// Concurrency of the Rust SDK worker in the W2w workload.
    #[arg(long, default_value_t = 64)]
    pub worker_concurrency: usize,
    /// Run only these workloads (w1, w1b, w2, w2w, w3; repeatable); d1, the dashboard at scale, runs only when named.
    #[arg(long)]
    pub only: Vec<String>,
    /// Durability of the server started for the benchmark.
    #[arg(long, default_value = "full", value_parser = ["full", "normal"])]
    pub durability: String,
    /// The database of the server started for the benchmark (a temporary SQLite file
    /// unless given), such as postgres://user@127.0.0.1/rota_bench.
    #[arg(long)]
    pub database: Option<String>,
    /// Servers to start on that database (PostgreSQL); W2's workers are spread over them.
    #[arg(long, default_value_t = 1, requires = "database")]
    pub nodes: usize,
    /// Spread the jobs over this many concurrency keys (claims take turns between them).
    #[arg(long, default_value_t = 0)]
    pub keys: usize,
    /// Declare the bench queue with this key_concurrency (with --keys).
    #[arg(long, requires = "keys")]
    pub key_concurrency: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Show the database's schema version and this binary's.
    Status {
        /// The database (a SQLite path or a postgres:// URL).
        #[arg(long, env = "ROTA_DATABASE_URL", default_value = "rota.db")]
        database: String,
    },
    /// Apply pending migrations (serve does this at start-up too).
    Up {
        /// The database (a SQLite path or a postgres:// URL).
        #[arg(long, env = "ROTA_DATABASE_URL", default_value = "rota.db")]
        database: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a new token; prints it once, and the line to add to rota.toml.
    New {
        /// What the token may do: read, produce, work or admin.
        #[arg(long, value_parser = ["read", "produce", "work", "admin"])]
        scope: String,
        /// A label for the token.
        #[arg(long, default_value = "token")]
        name: String,
    },
}

/// `rota serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The database: a SQLite file path (created if missing), sqlite://PATH, or
    /// postgres://user:password@host:port/database.
    #[arg(long, env = "ROTA_DATABASE_URL")]
    pub database: Option<String>,
    /// PostgreSQL: create the database if it does not exist.
    #[arg(long, env = "ROTA_CREATE_DATABASE")]
    pub create_database: bool,
    /// PostgreSQL: most connections this node opens.
    #[arg(long, env = "ROTA_POOL_SIZE")]
    pub pool_size: Option<usize>,
    /// Address to listen on.
    #[arg(long, env = "ROTA_BIND")]
    pub bind: Option<String>,
    /// The configuration file.
    #[arg(long, env = "ROTA_CONFIG", default_value = "rota.toml")]
    pub config: PathBuf,
    /// Commit durability: full (survives power loss) or normal (survives a crash).
    #[arg(long, env = "ROTA_DURABILITY")]
    pub durability: Option<String>,
    /// Largest request body in bytes.
    #[arg(long, env = "ROTA_BODY_LIMIT")]
    pub body_limit: Option<usize>,
    /// PostgreSQL: how long to wait at start for a database server that does not answer
    /// (restarting), such as 30s; 0s fails at once.
    #[arg(long, env = "ROTA_DATABASE_WAIT")]
    pub database_wait: Option<String>,
    /// Allow listening on a non-loopback address without auth tokens.
    #[arg(long)]
    pub insecure_no_auth: bool,
}

/// `rota enqueue`.
#[derive(Debug, Clone, Args)]
pub struct EnqueueArgs {
    /// The job's kind (handler name), such as email.send.
    pub kind: String,
    /// The declared queue.
    #[arg(long, short, default_value = "default")]
    pub queue: String,
    /// The job's arguments, as JSON.
    #[arg(long, default_value = "{}")]
    pub args: String,
    /// Run after this long, such as 5m.
    #[arg(long, conflicts_with = "at")]
    pub delay: Option<String>,
    /// Run at this RFC 3339 time.
    #[arg(long)]
    pub at: Option<String>,
    /// 0..=9, lower runs first.
    #[arg(long)]
    pub priority: Option<u8>,
    /// Deduplication key.
    #[arg(long)]
    pub unique: Option<String>,
    /// Keep the key taken this long after the job finished, such as 1h (with --unique).
    #[arg(long, requires = "unique")]
    pub unique_for: Option<String>,
    /// Flow-control key, such as customer:42 (the queue's key_concurrency and key_rate apply
    /// to the jobs sharing it).
    #[arg(long)]
    pub concurrency_key: Option<String>,
    /// Debounce on this key: enqueues with it less than --period apart become one job that
    /// runs --period after the last, with its args, at most --max-wait after the first.
    #[arg(long, requires_all = ["period", "max_wait"], conflicts_with = "throttle")]
    pub debounce: Option<String>,
    /// Throttle on this key: at most one job per --period; the others are duplicates.
    #[arg(long, requires = "period")]
    pub throttle: Option<String>,
    /// The debounce or throttle period, such as 5s.
    #[arg(long)]
    pub period: Option<String>,
    /// The longest a debounced job may be put off, such as 1m.
    #[arg(long, requires = "debounce")]
    pub max_wait: Option<String>,
    /// Attempts, the first included.
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Delays between attempts, such as 30s,60s,120s.
    #[arg(long)]
    pub backoff: Option<String>,
    /// Per-attempt time limit, such as 10m.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Labels (repeatable).
    #[arg(long)]
    pub tag: Vec<String>,
}

/// Filters shared by job listings.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only this queue.
    #[arg(long, short)]
    pub queue: Option<String>,
    /// Only this kind.
    #[arg(long, short)]
    pub kind: Option<String>,
    /// Only jobs with this tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// Page size.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Continue after this job id (the previous page's last).
    #[arg(long)]
    pub after: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List {
        #[command(flatten)]
        filter: ListArgs,
        /// Only this state.
        #[arg(long, short)]
        state: Option<String>,
    },
    /// Show one job with its errors.
    Show {
        /// The job id.
        id: String,
    },
    /// Cancel a job.
    Cancel {
        /// The job id.
        id: String,
    },
    /// Retry a dead or cancelled job.
    Retry {
        /// The job id.
        id: String,
    },
    /// Wait for a job to finish, then show it. Exit status: 0 completed, 3 not finished
    /// within --timeout, 4 dead, 5 cancelled.
    Wait {
        /// The job id.
        id: String,
        /// Give up after this long (at most 60s per request; repeated until then).
        #[arg(long, default_value = "60s")]
        timeout: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// List dead jobs, newest first; with --group, their error groups.
    List {
        #[command(flatten)]
        filter: ListArgs,
        /// Show error groups (same cause, counted) instead of jobs.
        #[arg(long)]
        group: bool,
    },
    /// Retry dead jobs by id, or every dead job of a queue and/or kind.
    Retry {
        /// Job ids.
        ids: Vec<String>,
        /// Every dead job on this queue.
        #[arg(long, short)]
        queue: Option<String>,
        /// Every dead job of this kind.
        #[arg(long, short)]
        kind: Option<String>,
        /// Every dead job in this error group (a fingerprint from `rota dead list --group`).
        #[arg(long)]
        group: Option<String>,
    },
    /// Delete dead jobs by id, or every dead job of a queue and/or kind (a filter is required).
    Purge {
        /// Job ids.
        ids: Vec<String>,
        /// Every dead job on this queue.
        #[arg(long, short)]
        queue: Option<String>,
        /// Every dead job of this kind.
        #[arg(long, short)]
        kind: Option<String>,
        /// Every dead job in this error group (a fingerprint from `rota dead list --group`).
        #[arg(long)]
        group: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Every schedule with its next slot and counts.
    List,
    /// One schedule in detail.
    Show {
        /// The schedule name.
        name: String,
    },
    /// Create or replace a schedule.
    Create {
        /// The schedule name.
        name: String,
        /// Cron expression (5 or 6 fields), @hourly, @daily, @weekly, @monthly or "@every 15m".
        #[arg(long)]
        cron: String,
        /// The kind of its jobs.
        #[arg(long)]
        kind: String,
        /// The queue of its jobs.
        #[arg(long, short, default_value = "default")]
        queue: String,
        /// The args of its jobs, as JSON.
        #[arg(long, default_value = "{}")]
        args: String,
        /// IANA time zone.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// Missed slots: skip, latest or all.
        #[arg(long, default_value = "latest")]
        misfire: String,
        /// How far back `all` recovers.
        #[arg(long)]
        backfill: Option<String>,
        /// Attempts of its jobs.
        #[arg(long)]
        max_attempts: Option<u32>,
    },
    /// Delete a schedule (its jobs stay).
    Delete {
        /// The schedule name.
        name: String,
    },
    /// Pause a schedule.
    Pause {
        /// The schedule name.
        name: String,
    },
    /// Resume a schedule.
    Resume {
        /// The schedule name.
        name: String,
    },
    /// Enqueue the schedule's job now.
    Trigger {
        /// The schedule name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum QueuesCommand {
    /// Every queue with its counts.
    List,
    /// One queue with its counts.
    Show {
        /// The queue name.
        name: String,
    },
    /// Declare a queue, or change the settings given (the others stay as they are).
    Declare {
        /// The queue name.
        name: String,
        /// Queue-level attempts.
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Delays between attempts, such as 30s,60s,120s.
        #[arg(long)]
        backoff: Option<String>,
        /// Lease length for its jobs, such as 1m (at least 1s).
        #[arg(long)]
        lease: Option<String>,
        /// Default per-attempt time limit of its jobs, such as 10m (at least 1s).
        #[arg(long)]
        timeout: Option<String>,
        /// Most of its jobs running at once, across every worker and node (at least 1).
        #[arg(long)]
        concurrency: Option<u32>,
        /// Keep its completed jobs this long, such as 7d.
        #[arg(long)]
        completed_retention: Option<String>,
        /// Keep its cancelled jobs this long.
        #[arg(long)]
        cancelled_retention: Option<String>,
        /// Delete its dead jobs this long after they died (kept until purged otherwise).
        #[arg(long)]
        dead_retention: Option<String>,
        #[command(flatten)]
        flow: Box<FlowArgs>,
    },
    /// Pause a queue.
    Pause {
        /// The queue name.
        name: String,
    },
    /// Resume a queue.
    Resume {
        /// The queue name.
        name: String,
    },
}

/// `rota worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Queues to take jobs from (repeatable).
    #[arg(long, short, required = true)]
    pub queue: Vec<String>,
    /// Kinds to handle (repeatable; default: every kind).
    #[arg(long, short)]
    pub kind: Vec<String>,
    /// Jobs run at once.
    #[arg(long, short, default_value_t = 1)]
    pub concurrency: usize,
    /// The command to run for each job (through `sh -c`): args JSON on stdin; exit 0 =
    /// completed (stdout, if JSON, is the result), 75 = snooze, anything else = failed.
    #[arg(long)]
    pub exec: String,
    /// On SIGTERM, how long running jobs may finish before their leases are handed back
    /// (a second SIGTERM or Ctrl-C skips the wait).
    #[arg(long, default_value = "10s")]
    pub grace: String,
    /// When a job must stop (timeout, cancel, shutdown), how long its process group has
    /// between SIGTERM and SIGKILL.
    #[arg(long, default_value = "5s")]
    pub kill_grace: String,
    /// This worker's id, unique per process (default: name:pid).
    #[arg(long)]
    pub id: Option<String>,
    /// This worker's stable name, as `rota health --worker NAME` asks for it (default: the
    /// host name, as in a container).
    #[arg(long)]
    pub name: Option<String>,
}

/// A queue's flow control (`rota queues declare`).
#[derive(Debug, Clone, Default, Args)]
pub struct FlowArgs {
    /// Most running jobs sharing one concurrency key, across every worker and node.
    #[arg(long)]
    pub key_concurrency: Option<u32>,
    /// Jobs one key gets per round of the round-robin between keys, as KEY=WEIGHT
    /// (repeatable).
    #[arg(long = "key-weight", value_name = "KEY=WEIGHT")]
    pub key_weights: Vec<String>,
    /// Jobs of the queue started per period, such as 100/1m or "10/1s burst 5".
    #[arg(long)]
    pub rate: Option<String>,
    /// Jobs started per period for each concurrency key.
    #[arg(long)]
    pub key_rate: Option<String>,
    /// Jobs of one kind started per period, as KIND=RATE (repeatable).
    #[arg(long = "kind-rate", value_name = "KIND=RATE")]
    pub kind_rates: Vec<String>,
    /// Most ready and scheduled jobs; an enqueue beyond it overflows.
    #[arg(long)]
    pub max_depth: Option<u64>,
    /// Longest the oldest ready job may wait, such as 10m; an enqueue beyond it overflows.
    #[arg(long)]
    pub max_age: Option<String>,
    /// What an enqueue that overflows gets: reject (429, the default) or accept.
    #[arg(long, value_parser = ["reject", "accept"])]
    pub overflow: Option<String>,
}
