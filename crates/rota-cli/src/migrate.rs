//! `rota migrate status|up`, through the same store step `serve` runs at start-up.

use std::process::ExitCode;

use rota_core::{Clock, SystemClock};
use rota_store::{StoreHealthParams, StoreMigrateParams};

use crate::cli::MigrateCommand;
use crate::store::{open_store, DatabaseUrl, OpenOptions};

/// Runs a migrate command.
pub async fn run(command: MigrateCommand) -> anyhow::Result<ExitCode> {
    match command {
        MigrateCommand::Status { database } => {
            let url = DatabaseUrl::parse(&database)?;
            if !url.exists() {
                println!("{url}: no database yet; `rota serve` or `rota migrate up` creates it at schema {}", rota_sqlite::SCHEMA_VERSION);
                return Ok(ExitCode::SUCCESS);
            }
            let store = open_store(&url, &OpenOptions::default()).await?;
            let health = store.store_health(StoreHealthParams::default()).await?;
            let (current, expected) = (health.schema_version, health.schema_expected);
            let verdict = match current.cmp(&expected) {
                std::cmp::Ordering::Equal => "up to date".to_owned(),
                std::cmp::Ordering::Less => format!(
                    "{} migration(s) pending: run `rota migrate up`",
                    expected - current
                ),
                std::cmp::Ordering::Greater => {
                    "written by a newer rota: upgrade this binary".to_owned()
                }
            };
            println!("{url}: schema {current}, this binary {expected}: {verdict}");
            Ok(if current > expected {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        MigrateCommand::Up { database } => {
            let url = DatabaseUrl::parse(&database)?;
            let store = open_store(&url, &OpenOptions::default()).await?;
            let report = store
                .store_migrate(StoreMigrateParams {
                    now: SystemClock.now(),
                })
                .await
                .map_err(|e| anyhow::anyhow!("migrating {url}: {e}"))?;
            println!("{url}: schema {} -> {}", report.from, report.to);
            Ok(ExitCode::SUCCESS)
        }
    }
}
