//! The `trialtail` binary: parse flags, set up diagnostics, dispatch, map errors to exit codes.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{CommandFactory as _, FromArgMatches as _};
use trialtail::cli::{Cli, ColorChoice, Command, LogFormat};
use trialtail::config::RunConfig;
use trialtail::plot::PlotConfig;

/// Exit code for a bad command line or configuration.
const USAGE: u8 = 2;

/// Diagnostics are JSON lines (`--log-format json`): the final error is one too.
static JSON_LOGS: AtomicBool = AtomicBool::new(false);

fn main() -> ExitCode {
    // Katib's pod webhook passes only Go-style args (`-t … -m … -s-db …`): the drop-in mode, before clap.
    let args: Vec<String> = std::env::args_os().skip(1).filter_map(|a| a.into_string().ok()).collect();
    if args.first().is_some_and(|a| a == "katib") {
        return katib(&args[1..]);
    }
    if trialtail::katib::args::is_katib_command_line(&args) {
        return katib(&args);
    }
    let cli = parse_cli(&args);
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
    let ansi = colour(cli.color, std::io::stderr().is_terminal());
    init_logging(filter, cli.log_format, ansi);
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
        Command::Completions(args) => {
            clap_complete::generate(args.shell, &mut Cli::command(), "trialtail", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man(args) => match man(args.out_dir.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(1, e),
        },
    }
}

/// Parses the command line with clap, whose help and error messages follow `--color` (seen before clap parses,
/// so that an error in another flag is coloured as asked) and otherwise clap's own rules (NO_COLOR, CLICOLOR,
/// TERM, whether the stream is a terminal).
fn parse_cli(args: &[String]) -> Cli {
    let flag = args.iter().enumerate().find_map(|(i, a)| match a.strip_prefix("--color") {
        Some(v) if v.starts_with('=') => Some(v[1..].to_string()),
        Some("") => args.get(i + 1).cloned(),
        _ => None,
    });
    let choice = flag.or_else(|| std::env::var("TRIALTAIL_COLOR").ok());
    let clap_choice = match choice.as_deref().map(str::trim) {
        Some("always") => clap::ColorChoice::Always,
        Some("never") => clap::ColorChoice::Never,
        _ => clap::ColorChoice::Auto,
    };
    let matches = Cli::command().color(clap_choice).get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Whether diagnostics on stderr are coloured: `--color`, `NO_COLOR`, `TERM` and whether stderr is a terminal.
fn colour(choice: Option<ColorChoice>, stderr_is_terminal: bool) -> bool {
    let no_color = std::env::var_os("NO_COLOR");
    let term = std::env::var_os("TERM");
    trialtail::term::colour(choice, no_color.as_deref(), term.as_deref(), stderr_is_terminal)
}

/// trialtail's diagnostics on stderr: readable lines, coloured when `ansi`, or one JSON object per line.
fn init_logging(filter: tracing_subscriber::EnvFilter, format: LogFormat, ansi: bool) {
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    match format {
        LogFormat::Text => builder.with_ansi(ansi).init(),
        LogFormat::Json => {
            JSON_LOGS.store(true, Ordering::Relaxed);
            builder.json().with_ansi(false).init();
        }
    }
}

/// `trialtail man`: trialtail(1) on stdout, or every page (trialtail.1, trialtail-run.1, …) into `dir`.
fn man(dir: Option<&std::path::Path>) -> std::io::Result<()> {
    let mut cmd = Cli::command();
    cmd.build();
    let Some(dir) = dir else {
        return clap_mangen::Man::new(cmd).render(&mut std::io::stdout().lock());
    };
    std::fs::create_dir_all(dir)?;
    let mut pages = vec![("trialtail".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("trialtail-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name).version(cmd.get_version().unwrap_or_default().to_string())));
    }
    for (name, page) in pages {
        let mut text = Vec::new();
        clap_mangen::Man::new(page).render(&mut text)?;
        std::fs::write(dir.join(format!("{name}.1")), text)?;
    }
    Ok(())
}

/// Says `e` and its causes on one line (`trialtail: what: why`, or a JSON error event with `--log-format json`)
/// and exits with `code`.
fn fail(code: u8, e: impl Into<anyhow::Error>) -> ExitCode {
    let e = e.into();
    if JSON_LOGS.load(Ordering::Relaxed) {
        tracing::error!(exit_code = code, "{e:#}");
    } else {
        eprintln!("trialtail: {e:#}");
    }
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
    // Katib passes only its own arguments: the format comes from the environment (the collector's stderr is the
    // pod's log, never a terminal, so it is never coloured).
    let format = match std::env::var("TRIALTAIL_LOG_FORMAT").as_deref().map(str::trim) {
        Ok("json") => LogFormat::Json,
        Ok("text") | Ok("") | Err(_) => LogFormat::Text,
        Ok(other) => {
            eprintln!("trialtail: TRIALTAIL_LOG_FORMAT {other:?}: expected text or json; using text");
            LogFormat::Text
        }
    };
    init_logging(filter, format, false);
    match trialtail::modes::dropin::run(parsed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e.exit_code(), e),
    }
}
