//! The one place the binary names a backend: [`open_store`] chooses it from the database
//! URL, for `serve`, `doctor --database` and `migrate`. It opens without migrating; the
//! caller decides (`Store::store_migrate`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use rota_postgres::{PostgresOptions, PostgresStore};
use rota_sqlite::{Durability, SqliteOptions, SqliteStore};
use rota_store::Store;

/// A parsed `--database` / `ROTA_DATABASE_URL` / `database` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite file (a path, or `sqlite://PATH`).
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://` or `postgresql://`).
    Postgres(String),
}

impl DatabaseUrl {
    /// Parses a database setting, or says what is supported.
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        if let Some(path) = raw.strip_prefix("sqlite://") {
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(Self::Postgres(raw.to_owned()));
        }
        if let Some((scheme, _)) = raw.split_once("://") {
            bail!(
                "database: unsupported URL scheme `{scheme}://`; supported: a SQLite file path (such as rota.db), sqlite://PATH, or postgres://user:password@host:port/database"
            );
        }
        Ok(Self::Sqlite(PathBuf::from(raw)))
    }

    /// Whether the database exists already (opening creates a SQLite file).
    pub fn exists(&self) -> bool {
        match self {
            Self::Sqlite(path) => path.exists(),
            // Opening says clearly when a PostgreSQL database is missing.
            Self::Postgres(_) => true,
        }
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => write!(f, "{}", redacted(url)),
        }
    }
}

/// A PostgreSQL URL with its password (if any) replaced by `***`, for messages and logs.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// How to open a store, beyond its URL.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// SQLite commit durability.
    pub durability: Durability,
    /// PostgreSQL: create the database when it is missing.
    pub create_database: bool,
    /// PostgreSQL: most pooled connections (the backend's default when absent).
    pub pool_size: Option<usize>,
    /// PostgreSQL: how long to wait for a server that does not answer yet, as a server
    /// starting beside a restarting database should; zero (one-shot commands) reports at once.
    pub wait: std::time::Duration,
}

/// Opens the store `url` names (without touching its schema).
pub async fn open_store(url: &DatabaseUrl, open: &OpenOptions) -> anyhow::Result<Arc<dyn Store>> {
    match url {
        DatabaseUrl::Sqlite(path) => {
            let mut options = SqliteOptions::new(path);
            options.durability = open.durability;
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(options))
                .await
                .context("opening the database")?
                .with_context(|| format!("opening database {url}"))?;
            Ok(Arc::new(store))
        }
        DatabaseUrl::Postgres(raw) => {
            let mut options = PostgresOptions::new(raw);
            options.create_database = open.create_database;
            if let Some(size) = open.pool_size {
                options.pool_size = size;
            }
            // A server that does not answer yet (restarting as this node starts) is waited
            // for, as migrating waits for it (rota_server::Server::start); the error, when it
            // comes, is one line that names the server and the fix.
            let started = std::time::Instant::now();
            let mut warned = false;
            loop {
                match PostgresStore::open(options.clone()).await {
                    Ok(store) => {
                        if warned {
                            tracing::info!("PostgreSQL answers after {:.0?}", started.elapsed());
                        }
                        return Ok(Arc::new(store));
                    }
                    Err(err) if err.is_transient() && started.elapsed() < open.wait => {
                        if !warned {
                            tracing::warn!(
                                "{err}; waiting up to {}s for it (--database-wait)",
                                open.wait.as_secs()
                            );
                            warned = true;
                        }
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                    Err(err) => return Err(err.into()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_schemes_list_what_is_supported() {
        let err = DatabaseUrl::parse("mysql://x").unwrap_err().to_string();
        assert!(err.contains("sqlite://PATH"), "{err}");
        assert_eq!(
            DatabaseUrl::parse("postgres://u:secret@h/db").unwrap(),
            DatabaseUrl::Postgres("postgres://u:secret@h/db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("postgres://u:secret@h/db")
                .unwrap()
                .to_string(),
            "postgres://u:***@h/db",
            "the password never reaches a message"
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///tmp/x.db").unwrap(),
            DatabaseUrl::Sqlite(PathBuf::from("/tmp/x.db"))
        );
        assert_eq!(
            DatabaseUrl::parse("rota.db").unwrap(),
            DatabaseUrl::Sqlite(PathBuf::from("rota.db"))
        );
    }
}
