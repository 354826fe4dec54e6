//! The one place the binary names a backend: [`open_store`] chooses it from the database
//! URL, for `serve`, `doctor --database` and `migrate`. It opens without migrating; the
//! caller decides (`Store::store_migrate`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use rota_sqlite::{Durability, SqliteOptions, SqliteStore};
use rota_store::Store;

/// A parsed `--database` / `ROTA_DATABASE_URL` / `database` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite file (a path, or `sqlite://PATH`).
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    /// Parses a database setting, or says what is supported.
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        if let Some(path) = raw.strip_prefix("sqlite://") {
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = raw.split_once("://") {
            bail!(
                "database: unsupported URL scheme `{scheme}://`; supported: a SQLite file path (such as rota.db) or sqlite://PATH{}",
                if scheme.starts_with("postgres") { " (PostgreSQL support is not in this build yet)" } else { "" }
            );
        }
        Ok(Self::Sqlite(PathBuf::from(raw)))
    }

    /// Whether the database exists already (opening creates a SQLite file).
    pub fn exists(&self) -> bool {
        match self {
            Self::Sqlite(path) => path.exists(),
        }
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Opens the store `url` names (without touching its schema).
pub async fn open_store(
    url: &DatabaseUrl,
    durability: Durability,
) -> anyhow::Result<Arc<dyn Store>> {
    match url {
        DatabaseUrl::Sqlite(path) => {
            let mut options = SqliteOptions::new(path);
            options.durability = durability;
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(options))
                .await
                .context("opening the database")?
                .with_context(|| format!("opening database {url}"))?;
            Ok(Arc::new(store))
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
        let err = DatabaseUrl::parse("postgres://x").unwrap_err().to_string();
        assert!(err.contains("PostgreSQL"), "{err}");
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
