//! `rota doctor`: one verdict per line with the fix; exit 1 when something needs action.

use std::process::ExitCode;

use rota::api::{FindingView, Severity};
use rota_core::{Clock, SystemClock};

use crate::cli::ClientArgs;
use crate::output::print;

/// Runs the doctor against the server at `--url`, or directly against `database`.
pub async fn run(database: Option<String>, client_args: &ClientArgs) -> anyhow::Result<ExitCode> {
    let mut report = match database {
        Some(raw) => {
            let url = crate::store::DatabaseUrl::parse(&raw)?;
            if !url.exists() {
                anyhow::bail!("database {url}: no such file (start `rota serve` once, or pass the right --database)");
            }
            let store = crate::store::open_store(&url, &Default::default()).await?;
            // The retention rota.toml here sets, when it is valid (its check comes below).
            let retention = crate::config::read_file(std::path::Path::new("rota.toml"), false)
                .ok()
                .and_then(|file| crate::config::retention(&file).ok())
                .unwrap_or_default();
            rota_server::doctor_report_of(&*store, SystemClock.now(), &retention).await
        }
        None => {
            crate::client_commands::client(client_args)?
                .doctor()
                .await?
        }
    };
    // The config file, when there is one here, is checked too.
    let config = std::path::Path::new("rota.toml");
    if config.exists() {
        let finding = match crate::config::read_file(config, true) {
            Ok(_) => FindingView {
                check: "config".into(),
                severity: Severity::Ok,
                message: "rota.toml is valid".into(),
                fix: None,
            },
            Err(err) => FindingView {
                check: "config".into(),
                severity: Severity::Fail,
                message: format!("{err:#}"),
                fix: Some("correct rota.toml; `rota serve` refuses to start with it".into()),
            },
        };
        report.healthy &= finding.severity == Severity::Ok;
        report.findings.insert(0, finding);
    }
    print(client_args.json, &report, |r| {
        let mut text = String::new();
        for f in &r.findings {
            let mark = match f.severity {
                Severity::Ok => "ok  ",
                Severity::Warn => "WARN",
                Severity::Fail => "FAIL",
            };
            text.push_str(&format!("{mark} {:<10} {}\n", f.check, f.message));
            if let Some(fix) = &f.fix {
                text.push_str(&format!("     {:<10} fix: {fix}\n", ""));
            }
        }
        text
    });
    Ok(if report.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
