//! The `trialtail` binary: parse flags, set up diagnostics, dispatch, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use trialtail::cli::{Cli, Command};
use trialtail::config::RunConfig;
use trialtail::plot::PlotConfig;

/// Exit code for a bad command line or configuration.
const USAGE: u8 = 2;

fn main() -> ExitCode {
    // Katib's pod webhook passes only Go-style args (`-t … -m … -s-db …`): the drop-in mode, before clap.
    let args: Vec<String> = std::env::args_os().skip(1).filter_map(|a| a.into_string().ok()).collect();
    if args.first().is_some_and(|a| a == "katib") {
        return katib(&args[1..]);
    }
    if trialtail::katib::args::is_katib_command_line(&args) {
        return katib(&args);
    }
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
            let check_only = args.check_config;
            let cfg = match RunConfig::from_args(*args, |k| std::env::var(k).ok()) {
                Ok(cfg) => cfg,
                Err(e) => return fail(USAGE, e),
            };
            if check_only {
                print!("{}", cfg.summary());
                return ExitCode::SUCCESS;
            }
            match trialtail::modes::run::run(cfg) {
                Ok(code) => ExitCode::from(code),
                Err(e) => fail(e.exit_code(), e),
            }
        }
        Command::Webhook(args) => {
            match trialtail::webhook::WebhookConfig::try_from(*args).and_then(trialtail::webhook::run) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e.exit_code(), e),
            }
        }
        Command::Plot(args) => match PlotConfig::try_from(args).and_then(trialtail::plot::run) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e.exit_code(), e),
        },
    }
}

/// Says `e` and its causes on one line (`trialtail: what: why`) and exits with `code`.
fn fail(code: u8, e: impl Into<anyhow::Error>) -> ExitCode {
    eprintln!("trialtail: {:#}", e.into());
    ExitCode::from(code)
}

/// The Katib drop-in mode: Go `flag` errors print the usage and exit 2; see [`trialtail::dropin`] for the rest.
fn katib(args: &[String]) -> ExitCode {
    use trialtail::katib::args::{ArgsError, parse, usage};
    let parsed = match parse(args, |k| std::env::var(k).ok()) {
        Ok(p) => p,
        Err(ArgsError::Help) => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprint!("{e}\n{}", usage());
            return ExitCode::from(e.exit_code());
        }
    };
    let level = std::env::var("TRIALTAIL_LOG").unwrap_or_else(|_| "info".to_string());
    let filter =
        tracing_subscriber::EnvFilter::try_new(&level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
    match trialtail::modes::dropin::run(parsed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e.exit_code(), e),
    }
}
