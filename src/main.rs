//! The `trialtail` binary: parse flags, set up diagnostics, dispatch, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use trialtail::cli::{Cli, Command};
use trialtail::config::RunConfig;
use trialtail::plot::PlotConfig;

/// Exit code for a bad command line or configuration.
const USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // --quiet: errors only, whatever --log-level says.
    let quiet = matches!(&cli.command, Command::Run(a) if a.quiet);
    let filter = tracing_subscriber::EnvFilter::try_new(if quiet { "error" } else { &cli.log_level });
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!("trialtail: --log-level {:?}: {e}", cli.log_level);
            return ExitCode::from(USAGE);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    match cli.command {
        Command::Run(args) => {
            let cfg = match RunConfig::try_from(*args) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("trialtail: {e}");
                    return ExitCode::from(USAGE);
                }
            };
            match trialtail::run::run(cfg) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    let code = e.exit_code();
                    eprintln!("trialtail: {:#}", anyhow::Error::from(e));
                    ExitCode::from(code)
                }
            }
        }
        Command::Plot(args) => match PlotConfig::try_from(args).and_then(trialtail::plot::run) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                let code = e.exit_code();
                eprintln!("trialtail: {:#}", anyhow::Error::from(e));
                ExitCode::from(code)
            }
        },
    }
}
