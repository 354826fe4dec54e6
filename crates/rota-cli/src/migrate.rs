//! `rota migrate status|up`.

use std::process::ExitCode;

use anyhow::Context;
use rota_sqlite::{migrate, SqliteOptions, SqliteStore, SCHEMA_VERSION};

use crate::cli::MigrateCommand;
use crate::config::database_path;

/// Runs a migrate command.
pub fn run(command: MigrateCommand) -> anyhow::Result<ExitCode> {
    match command {
        MigrateCommand::Status { database } => {
            let path = database_path(&database)?;
            if !path.exists() {
                println!("{}: no database yet; `rota serve` or `rota migrate up` creates it at schema {SCHEMA_VERSION}", path.display());
                return Ok(ExitCode::SUCCESS);
            }
            let current = migrate::current_version(&path)?;
            let verdict = match current.cmp(&SCHEMA_VERSION) {
                std::cmp::Ordering::Equal => "up to date".to_owned(),
                std::cmp::Ordering::Less => format!(
                    "{} migration(s) pending: run `rota migrate up`",
                    SCHEMA_VERSION - current
                ),
                std::cmp::Ordering::Greater => {
                    "written by a newer rota: upgrade this binary".to_owned()
                }
            };
            println!(
                "{}: schema {current}, this binary {SCHEMA_VERSION}: {verdict}",
                path.display()
            );
            Ok(if current > SCHEMA_VERSION {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        MigrateCommand::Up { database } => {
            let path = database_path(&database)?;
            let store = SqliteStore::open(SqliteOptions::new(&path))
                .with_context(|| format!("migrating {}", path.display()))?;
            let report = store.migration();
            println!(
                "{}: schema {} -> {}",
                path.display(),
                report.from,
                report.to
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
