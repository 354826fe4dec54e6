//! Connecting: options, the pool, and one clear line for each way a connection fails.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use rota_store::StoreError;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Config, NoTls};

/// Connections kept by default.
pub const POOL_SIZE_DEFAULT: usize = 16;
/// Longest a statement may run by default.
pub const STATEMENT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Longest a connection attempt (or a wait for a pooled connection) may take by default.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// How to reach the database.
#[derive(Clone)]
pub struct PostgresOptions {
    /// A `postgres://user:password@host:port/database` URL (or a key=value string).
    pub url: String,
    /// Most connections the pool opens.
    pub pool_size: usize,
    /// Statements running longer are cancelled (`statement_timeout`).
    pub statement_timeout: Duration,
    /// A connection attempt, or a wait for a free pooled connection, fails after this.
    pub connect_timeout: Duration,
    /// Create the database when it does not exist.
    pub create_database: bool,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("PostgresOptions")
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("create_database", &self.create_database)
            .finish_non_exhaustive()
    }
}

impl PostgresOptions {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: POOL_SIZE_DEFAULT,
            statement_timeout: STATEMENT_TIMEOUT_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            create_database: false,
        }
    }

    /// The connection settings, with `application_name = rota` and the statement timeout.
    pub fn pg_config(&self) -> Result<Config, ConnectError> {
        let mut config: Config = self.url.parse().map_err(|e| ConnectError::BadUrl {
            message: format!("{e}"),
        })?;
        if config.get_application_name().is_none() {
            config.application_name("rota");
        }
        config.connect_timeout(self.connect_timeout);
        config.options(format!(
            "-c statement_timeout={}",
            self.statement_timeout.as_millis()
        ));
        if config.get_dbname().is_none() {
            config.dbname(config.get_user().unwrap_or("postgres").to_owned());
        }
        Ok(config)
    }
}

impl ConnectError {
    /// Whether trying again shortly may succeed: nothing answered, or the server is starting
    /// up or shutting down (a restart). A bad URL, a missing database or a refused user stay
    /// as they are.
    pub fn is_transient(&self) -> bool {
        matches!(self, ConnectError::Unreachable { .. })
    }
}

/// Why the database could not be reached, in one line that says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL does not parse.
    #[error(
        "invalid PostgreSQL URL: {message} (expected postgres://user:password@host:port/database)"
    )]
    BadUrl {
        /// What is wrong with it.
        message: String,
    },
    /// The server answered but the database does not exist.
    #[error("database {database:?} does not exist on {server}: create it, or start with --create-database")]
    NoDatabase {
        /// The database asked for.
        database: String,
        /// host:port.
        server: String,
    },
    /// The server refused the user or password.
    #[error("PostgreSQL on {server} refused user {user:?}: {message}; check the user and password in the URL")]
    Refused {
        /// The user.
        user: String,
        /// host:port.
        server: String,
        /// The server's message.
        message: String,
    },
    /// The user may not do what Rota needs.
    #[error("user {user:?} may not {what} on {server}: {message}; grant it, or connect as a user who may")]
    Permission {
        /// The user.
        user: String,
        /// What was refused.
        what: String,
        /// host:port.
        server: String,
        /// The server's message.
        message: String,
    },
    /// The host name does not resolve (a wrong host, most likely); not waited for.
    #[error("PostgreSQL host {host:?} is not known: {message}; check the host in the URL")]
    UnknownHost {
        /// The host as written.
        host: String,
        /// What the resolver said.
        message: String,
    },
    /// Nothing answered.
    #[error("cannot reach PostgreSQL on {server}: {message}; is it running, and is the host and port right?")]
    Unreachable {
        /// host:port.
        server: String,
        /// What went wrong.
        message: String,
    },
    /// Anything else.
    #[error("PostgreSQL on {server}: {message}")]
    Other {
        /// host:port.
        server: String,
        /// The server's message.
        message: String,
    },
}

/// `host:port` of the first host in `config`, for messages.
pub(crate) fn server(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// Whether a connection error says the resolver does not know the host for good (glibc's
/// "Name or service not known", "No address associated with hostname"); "Temporary failure
/// in name resolution" is a resolver that may answer in a moment, so it is not.
fn names_unknown_host(message: &str) -> bool {
    message.starts_with("failed to lookup address information")
        && !message.contains("Temporary failure")
}

/// The one-line description of a failed connection attempt.
fn describe(config: &Config, err: &tokio_postgres::Error) -> ConnectError {
    let server = server(config);
    let user = config.get_user().unwrap_or("").to_owned();
    match err.as_db_error() {
        Some(db) if *db.code() == SqlState::INVALID_CATALOG_NAME => ConnectError::NoDatabase {
            database: config.get_dbname().unwrap_or("").to_owned(),
            server,
        },
        Some(db)
            if *db.code() == SqlState::INVALID_PASSWORD
                || *db.code() == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            ConnectError::Refused {
                user,
                server,
                message: db.message().to_owned(),
            }
        }
        Some(db) if *db.code() == SqlState::INSUFFICIENT_PRIVILEGE => ConnectError::Permission {
            user,
            what: "connect".into(),
            server,
            message: db.message().to_owned(),
        },
        // Starting up or shutting down: there in a moment, as far as a caller can tell.
        Some(db)
            if *db.code() == SqlState::CANNOT_CONNECT_NOW
                || *db.code() == SqlState::ADMIN_SHUTDOWN =>
        {
            ConnectError::Unreachable {
                server,
                message: db.message().to_owned(),
            }
        }
        Some(db) => ConnectError::Other {
            server,
            message: db.message().to_owned(),
        },
        None => {
            let message =
                std::error::Error::source(err).map_or_else(|| err.to_string(), |s| s.to_string());
            if names_unknown_host(&message) {
                let host = server
                    .rsplit_once(':')
                    .map_or(&*server, |(h, _)| h)
                    .to_owned();
                ConnectError::UnknownHost { host, message }
            } else {
                ConnectError::Unreachable { server, message }
            }
        }
    }
}

/// Connects once, directly, to see whether the database is there (and to create it when
/// asked), then builds the pool.
pub(crate) async fn pool(options: &PostgresOptions) -> Result<Pool, ConnectError> {
    let config = options.pg_config()?;
    match config.connect(NoTls).await {
        Ok((client, connection)) => {
            drop(client);
            drop(connection);
        }
        Err(err) => match describe(&config, &err) {
            ConnectError::NoDatabase { .. } if options.create_database => {
                create_database(&config).await?;
            }
            other => return Err(other),
        },
    }
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(options.pool_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(options.connect_timeout))
        .create_timeout(Some(options.connect_timeout))
        .recycle_timeout(Some(options.connect_timeout))
        .build()
        .map_err(|e| ConnectError::Other {
            server: String::new(),
            message: e.to_string(),
        })
}

/// Creates the database `config` names, connecting to the `postgres` database to do it.
async fn create_database(config: &Config) -> Result<(), ConnectError> {
    let name = config.get_dbname().unwrap_or("rota").to_owned();
    let mut admin = config.clone();
    admin.dbname("postgres");
    let (client, connection) = admin
        .connect(NoTls)
        .await
        .map_err(|e| describe(&admin, &e))?;
    let driver = tokio::spawn(connection);
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    let result = client
        .batch_execute(&format!("CREATE DATABASE {quoted}"))
        .await;
    drop(client);
    let _ = driver.await;
    match result {
        Ok(()) => Ok(()),
        // Another node created it meanwhile (caught by the catalog's unique index when both
        // got there at once).
        Err(e)
            if e.code() == Some(&SqlState::DUPLICATE_DATABASE)
                || e.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
        {
            Ok(())
        }
        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
            Err(ConnectError::Permission {
                user: config.get_user().unwrap_or("").to_owned(),
                what: format!("create database {name:?}"),
                server: server(config),
                message: e
                    .as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_owned()),
            })
        }
        Err(e) => Err(describe(config, &e)),
    }
}

/// A pool that could not hand out a connection: the database is unavailable.
pub(crate) fn pool_error(err: PoolError) -> StoreError {
    match err {
        PoolError::Backend(e) => crate::sql::classify("connecting to the database", e),
        PoolError::Timeout(_) => StoreError::Unavailable(
            "no database connection within the connect timeout (is PostgreSQL up?)".into(),
        ),
        other => StoreError::Unavailable(format!("database connection: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::names_unknown_host;

    #[test]
    fn a_host_the_resolver_does_not_know_is_told_from_one_it_cannot_ask_about_now() {
        assert!(names_unknown_host(
            "failed to lookup address information: Name or service not known"
        ));
        assert!(!names_unknown_host(
            "failed to lookup address information: Temporary failure in name resolution"
        ));
        assert!(!names_unknown_host("Connection refused (os error 111)"));
    }
}
