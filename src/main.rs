//! The `imexdepth` binary: parses the command line and wires library parts together.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.verbose);
    match run(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        // ort's own INFO lines (version notes, hardware discovery) are noise at the default level.
        0 => "info,ort=warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn run(command: cli::Command) -> anyhow::Result<()> {
    match command {
        cli::Command::Bench(args) => cli::bench::run(args),
        cli::Command::Infer(args) => cli::infer::run(args),
        cli::Command::Live(args) => cli::live::run(args),
        cli::Command::Info(args) => cli::info::run(args),
        cli::Command::Validate(args) => cli::validate::run(args),
    }
}
