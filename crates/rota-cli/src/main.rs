//! The `rota` binary: parse the command line, run the command, map the outcome to an exit
//! code. Every command lives in its own module; this file holds no logic of its own.

mod bench;
mod bench_dashboard;
mod cli;
mod client_commands;
mod config;
mod doctor;
mod migrate;
mod output;
mod serve;
mod store;
mod worker;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("rota: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("rota: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        cli::Command::Serve(args) => serve::run(args).await,
        cli::Command::Worker { client, args } => worker::run(args, &client).await,
        cli::Command::Migrate(command) => migrate::run(command).await,
        cli::Command::Bench { client, args } => bench::run(args, &client).await,
        cli::Command::Doctor { client, database } => doctor::run(database, &client).await,
        cli::Command::Token(cli::TokenCommand::New { scope, name }) => {
            let (token, hash) = rota_server::generate_token()?;
            println!("{token}");
            eprintln!("Keep the token above secret; it is shown once. Add this to rota.toml:\n\n[[token]]\nname = {name:?}\nscope = {scope:?}\nhash = {hash:?}");
            Ok(ExitCode::SUCCESS)
        }
        command => {
            let client = command.client_args().cloned().unwrap_or_default();
            client_commands::run(command, &client).await
        }
    }
}
