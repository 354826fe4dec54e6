//! The `rota` binary: parse the command line, run the command, map the outcome to an exit
//! code. Every command lives in its own module; this file holds no logic of its own.

mod cli;
mod client_commands;
mod config;
mod output;
mod serve;
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
        cli::Command::Worker(args) => worker::run(args, &cli.client).await,
        command => client_commands::run(command, &cli.client).await,
    }
}
