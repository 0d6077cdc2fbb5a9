//! The command line: clap definitions only. Validation happens in [`crate::config`].
//!
//! Every flag has a one-line summary and a longer text (shown by `--help`) with its unit, default and
//! interactions, and reads an environment variable `TRIALTAIL_<NAME>` when not given.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::builder::PossibleValue;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::aggregate::DEFAULT_MAX_METRICS;
use crate::rules::{LineFormat, Preset};
pub use crate::sink::stdout::OutputKind;
pub use crate::term::ColorChoice;

/// `--format`: the rules' line format, as clap sees it (the rules module knows nothing of clap).
impl ValueEnum for LineFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &[LineFormat::Text, LineFormat::Json]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            LineFormat::Text => PossibleValue::new("text").help("Free text, matched by filters and presets."),
            LineFormat::Json => PossibleValue::new("json").help("One JSON object per line."),
        })
    }
}

/// `--preset`: the presets' command-line names and summaries.
impl ValueEnum for Preset {
    fn value_variants<'a>() -> &'a [Self] {
        &Preset::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()).help(self.summary()))
    }
}

/// Parses `argv` (`trialtail run ...`, program name first) as `trialtail run` would, but reading no
/// environment variable: what a pod's annotations make of the arguments does not depend on where they are
/// checked (the webhook's own `TRIALTAIL_*` variables must not change what it accepts).
pub fn parse_run_args(argv: impl IntoIterator<Item = String>) -> Result<RunArgs, clap::Error> {
    let without_env = |arg: clap::Arg| arg.env(None);
    let command = Cli::command().mut_args(without_env).mut_subcommand("run", |run| run.mut_args(without_env));
    let matches = command.try_get_matches_from(argv)?;
    match Cli::from_arg_matches(&matches)?.command {
        Command::Run(run) => Ok(*run),
        _ => Err(clap::Error::raw(clap::error::ErrorKind::InvalidSubcommand, "not a `run` command line")),
    }
}

/// trialtail: turn training logs into metrics for Prometheus and Kubeflow Katib.
#[derive(Debug, Parser)]
#[command(name = "trialtail", version, propagate_version = true, max_term_width = 110)]
#[command(long_about = "trialtail reads training logs and turns lines such as `Accuracy at step 120: 0.9134` or \
`loss=0.2351` into observations: per metric a count, the latest value, the min, the max and the last step.\n\n\
Start with `trialtail run train.log`; `trialtail run --help` lists the rules it understands. `trialtail webhook` injects trialtail into training pods as a native sidecar.\n\nStarted with Katib's collector arguments (`trialtail -t <trial> -m <metrics> -s-db <host:port> -path <file> ...`, or `trialtail katib ...`), trialtail is a drop-in replacement for Katib's file metrics collector; `trialtail katib -h` lists those flags and the exit codes.")]
pub struct Cli {
    /// Log level of trialtail's own diagnostics on stderr
    ///
    /// One of error, warn, info, debug, trace, or a tracing filter such as `trialtail=debug`.
    #[arg(long, global = true, env = "TRIALTAIL_LOG", default_value = "warn", value_name = "LEVEL")]
    pub log_level: String,

    /// Format of trialtail's own diagnostics on stderr: text or json
    ///
    /// `text` (the default): one readable line per event. `json`: one JSON object per line, for cluster log
    /// pipelines: {"timestamp","level","fields":{"message",…},"span"…} as tracing-subscriber writes it. The
    /// injected sidecar and the webhook's Deployment use json. Katib's drop-in reads TRIALTAIL_LOG_FORMAT.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "TRIALTAIL_LOG_FORMAT",
        default_value_t = LogFormat::Text,
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,

    /// When to colour diagnostics and help: auto, always or never [default: auto]
    ///
    /// `auto` colours when stderr is a terminal, TERM is not `dumb` and NO_COLOR is unset or empty; `always` and
    /// `never` decide regardless (a flag beats NO_COLOR). Colour means the levels of trialtail's diagnostics
    /// and clap's help and error messages; JSON diagnostics are never coloured. The terminal's live table,
    /// progress bar and sparklines hold no colour and follow whether stdout/stderr is a terminal (TERM=dumb
    /// turns the redrawing ones off).
    #[arg(long, global = true, value_enum, env = "TRIALTAIL_COLOR", value_name = "WHEN")]
    pub color: Option<ColorChoice>,

    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read a training log and report the metrics in it
    #[command(long_about = RUN_ABOUT)]
    Run(Box<RunArgs>),
    /// Draw the curves of a training log's metrics as SVG or PNG
    #[command(long_about = PLOT_ABOUT)]
    Plot(PlotArgs),
    /// Serve the admission webhook that injects trialtail into training pods as a sidecar
    #[command(long_about = WEBHOOK_ABOUT)]
    Webhook(Box<WebhookArgs>),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    #[command(long_about = COMPLETIONS_ABOUT)]
    Completions(CompletionsArgs),
    /// Write the manual pages (roff): trialtail(1) on stdout, or every page into a directory
    #[command(long_about = MAN_ABOUT)]
    Man(ManArgs),
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per line.
    Json,
}

/// `--color`: the terminal module's choice, as clap sees it.
impl ValueEnum for ColorChoice {
    fn value_variants<'a>() -> &'a [Self] {
        &[ColorChoice::Auto, ColorChoice::Always, ColorChoice::Never]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            ColorChoice::Auto => {
                PossibleValue::new("auto").help("On a terminal that is not dumb, unless NO_COLOR is set.")
            }
            ColorChoice::Always => PossibleValue::new("always").help("Always."),
            ColorChoice::Never => PossibleValue::new("never").help("Never."),
        })
    }
}

const COMPLETIONS_ABOUT: &str = "Print a shell completion script for trialtail on stdout.\n\n\
Install it where your shell looks, for example:\n  \
trialtail completions bash > ~/.local/share/bash-completion/completions/trialtail\n  \
trialtail completions zsh > ~/.zfunc/_trialtail        # with fpath+=(~/.zfunc) before compinit\n  \
trialtail completions fish > ~/.config/fish/completions/trialtail.fish";

/// `trialtail completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

const MAN_ABOUT: &str = "Write trialtail's manual pages, in roff.\n\n\
Without --out-dir, trialtail(1) is printed on stdout (`trialtail man | man -l -`). With --out-dir DIR, \
trialtail.1 and one page per command (trialtail-run.1, trialtail-plot.1, trialtail-webhook.1, …) are written \
into DIR, for example:\n  \
trialtail man --out-dir ~/.local/share/man/man1 && man trialtail-run";

/// `trialtail man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write every page into this directory (created if missing) instead of trialtail(1) on stdout
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

const RUN_ABOUT: &str = "Read a training log and report the metrics in it.\n\n\
Reads LOG to its end (or standard input for `-`) and prints a summary table: metric, count, latest, min, max, \
last step; on a terminal with a `trend` column, a sparkline of each metric's history. `--output json` prints \
one JSON object per observation instead. Reading a large file on a terminal shows a progress bar on stderr \
(`--no-progress`, `--quiet`). `trialtail plot` draws the same metrics as curves.\n\n\
With no rule flags the log itself decides: every known format is recognised wherever it appears (TensorFlow, \
Keras bars and epoch lines, PyTorch loops, Lightning's tqdm and rich bars and result tables, Hugging Face \
Trainer dicts and metrics blocks, XGBoost, LightGBM, scikit-learn, Katib's `name=value`, `{metricName: …}` and \
JSON lines). A name is a metric when the log treats it as one – in a framework's metric line, or printed again \
with a new value; values printed once before training (hyper-parameters, config echoes, reprs) are listed apart \
on a `parameters:` line. `--explain` says which format each metric came from; when nothing is found the formats \
tried and a flag to try are printed. Rule flags (`--preset`, `--filter`, `--metric`), `--metrics` (alone: the \
`katib` and `tf-step` presets, those names), `--format json` and `--katib-semantics` turn the recognition off \
and read exactly what they say.\n\n\
`--follow` keeps following LOG as it grows (rotation, truncation and a file that does not exist yet included), \
until SIGINT/SIGTERM or `--until-idle`. A directory is read as TensorBoard event files (TensorFlow, Keras, \
PyTorch's SummaryWriter, Lightning, Hugging Face with report_to=\"tensorboard\"): its scalars, named by tag and run; \
`--follow` follows new runs and records. After `--`, a command is run instead (no shell) and its stdout and stderr \
are passed through and parsed; trialtail exits with its exit code and prints the summary to stderr.\n\n\
Examples:\n  \
trialtail run train.log\n  \
trialtail run --explain train.log\n  \
trialtail run --follow --output json /var/log/train.log\n  \
trialtail run runs/\n  \
trialtail run --output-file metrics.json --output json -- python -u train.py --lr 0.1\n  \
trialtail run --preset keras --metrics loss,val_loss train.log\n  \
trialtail run --metric accuracy='Accuracy at step (?P<step>\\d+): (?P<value>\\S+)' train.log\n  \
python train.py 2>&1 | trialtail run --output json - | jq .value\n  \
trialtail run --source pod-log --listen :9478 --check-config";

/// `--output`: what the stdout sink prints.
impl ValueEnum for OutputKind {
    fn value_variants<'a>() -> &'a [Self] {
        &[OutputKind::Table, OutputKind::Json]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            OutputKind::Table => PossibleValue::new("table").help("A summary table at the end."),
            OutputKind::Json => PossibleValue::new("json")
                .help("One JSON object per observation, as it is found (in Katib semantics: the report, at the end)."),
        })
    }
}

/// `trialtail run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The log to read; `-` reads standard input; a directory reads its TensorBoard event files
    ///
    /// Read to its end, or followed with --follow. Leave it out when wrapping a command after `--`.
    /// A directory (or a file named like `events.out.tfevents.*`) is read as TensorBoard event files: every file
    /// whose name holds `tfevents` below it, each scalar (TF1 `simple_value`, TF2 one-element tensors) an
    /// observation named by its tag – prefixed by its run directory (`train/loss`, `validation/loss`) when the
    /// files are in more than one directory, and always with --follow. The rule flags do not apply to them;
    /// --metrics still selects. A directory that does not exist yet is given with a trailing `/`.
    #[arg(value_name = "LOG", env = "TRIALTAIL_PATH")]
    pub log: Option<PathBuf>,

    /// A training command to run and read (after `--`), instead of a LOG
    ///
    /// `trialtail run [OPTIONS] -- python train.py --lr 0.1` runs the command directly (no shell), passes its
    /// stdout and stderr through to trialtail's own, byte for byte and each to its own stream, parses both as
    /// they arrive, and exits with the command's exit code (128+N when it died of signal N). SIGINT and SIGTERM
    /// are forwarded to it. The summary goes to stderr, or to --output-file.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,

    /// Keep following LOG as it grows, like `tail -F`
    ///
    /// Reads from the start (see --from-end) and then waits for more, driven by inotify (a polling fallback of at
    /// most 250 ms when inotify is unavailable or exhausted). LOG may not exist yet. Rotation (rename + create),
    /// deletion and recreation, and truncation (copytruncate) are followed. A directory of TensorBoard event files
    /// is followed as a whole: new event files (a new run, a writer restart) and records appended to open ones;
    /// a record still being written waits. A named pipe (mkfifo) is read as a pipe: every writer, one after
    /// another, until a signal or --until-idle (it must exist when the follow starts). Ends on SIGINT/SIGTERM (after reading what is readable, within
    /// --shutdown-grace) or after --until-idle.
    #[arg(short = 'f', long, env = "TRIALTAIL_FOLLOW", help_heading = "Live")]
    pub follow: bool,

    /// With --follow: skip what LOG already holds and read only what is appended
    ///
    /// Applies to the file found at start only; a file that appears later (rotation, recreation) is read from
    /// its start.
    #[arg(long, env = "TRIALTAIL_FROM_END", requires = "follow", help_heading = "Live")]
    pub from_end: bool,

    /// End a follow once LOG has been quiet this long
    ///
    /// A duration such as 500ms, 5s, 2m or 1h. Quiet means no byte read (the file not existing counts as
    /// quiet). Default: follow until a signal. Needs --follow.
    #[arg(long, value_name = "DURATION", env = "TRIALTAIL_UNTIL_IDLE", requires = "follow", help_heading = "Live")]
    pub until_idle: Option<String>,

    /// Time allowed to drain and flush after SIGINT/SIGTERM
    ///
    /// A duration such as 500ms, 5s or 1m. On the first signal trialtail reads what is already readable,
    /// flushes its outputs and exits 0; if that takes longer than this it stops reading and flushes what it
    /// has. The second signal of the run, whenever it comes (draining, reporting, lingering), exits at once
    /// (128+N). Default 5s.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "5s",
        env = "TRIALTAIL_SHUTDOWN_GRACE",
        help_heading = "Live"
    )]
    pub shutdown_grace: String,

    /// Write the output (table or JSON lines) to this file instead of stdout
    ///
    /// Created or truncated at start. Useful when wrapping a command, whose output owns stdout (without it the
    /// output goes to stderr then).
    #[arg(long, value_name = "PATH", env = "TRIALTAIL_OUTPUT_FILE", help_heading = "Output")]
    pub output_file: Option<PathBuf>,

    /// What to print on stdout: a summary table or JSON lines
    ///
    /// `table` prints metric, count, latest, min, max and last step at the end, then (with no rule flags) a
    /// `parameters:` line with the values the log printed once. `json` prints one object per observation as it
    /// is found: {"metric","value","raw","step","timestamp","line"}; `value` is null when the value is not a
    /// finite number (see `raw`), `step` and `timestamp` are null when the line had none; the parameters follow
    /// at the end as {"kind":"param","name","value","raw","line"}. (How the log is written is --format.)
    #[arg(long, value_enum, default_value_t = OutputKind::Table, env = "TRIALTAIL_OUTPUT", help_heading = "Output")]
    pub output: OutputKind,

    /// Say how each metric was found: its rule or recognised format, and the first line it was read from
    ///
    /// Printed under the table (with every parameter and the line it was printed on), or with --output json
    /// as {"kind":"explain","metric","rule","line","sample"} records at the end.
    #[arg(long, env = "TRIALTAIL_EXPLAIN", help_heading = "Output")]
    pub explain: bool,

    /// Validate the flags, print the effective configuration and exit, without reading anything
    ///
    /// Every flag is parsed and checked exactly as for a real run, then a short summary (source, rules and
    /// metrics, outputs, Prometheus endpoint, Pushgateway, labels) is printed on stdout and trialtail exits 0.
    /// No log is opened, no command started, no output file created, no address bound, nothing contacted (with
    /// --source pod-log, no Kubernetes API either). Invalid flags exit 2 with one line naming the flag, as usual.
    /// For checking a manifest's `args` before deploying it.
    #[arg(long, env = "TRIALTAIL_CHECK_CONFIG", help_heading = "Output")]
    pub check_config: bool,

    /// Print counters (bytes, lines, opens, rotations, truncations, throughput, memory) to stderr at the end
    #[arg(long, env = "TRIALTAIL_STATS", help_heading = "Output")]
    pub stats: bool,

    /// Never show the progress bar on stderr
    ///
    /// The bar (bytes read, MB/s, ETA) shows only when stderr is a terminal and LOG is a regular file of at least
    /// 8 MiB read to its end; it is redrawn at most 5 times a second and erased at the end.
    #[arg(long, env = "TRIALTAIL_NO_PROGRESS", help_heading = "Output")]
    pub no_progress: bool,

    /// Print nothing on stderr but errors: no progress bar, no warnings
    ///
    /// --stats is still printed when given. Same as --no-progress --log-level error.
    #[arg(short = 'q', long, env = "TRIALTAIL_QUIET", help_heading = "Output")]
    pub quiet: bool,

    /// Redraw the summary table in place while following a log (needs a terminal on stdout)
    ///
    /// A few times a second (at most every 250 ms, and whenever the followed file goes quiet), with a sparkline
    /// per metric; the last frame stays as the summary. Only with --follow and stdout on a terminal; elsewhere
    /// the plain table is printed at the end.
    #[arg(long, env = "TRIALTAIL_LIVE", help_heading = "Output")]
    pub live: bool,

    /// Where the log comes from: `log` (LOG, standard input or a command) or `pod-log`
    ///
    /// `pod-log` is the native sidecar mode: trialtail runs in the training pod (POD_NAME and POD_NAMESPACE
    /// from the downward API), follows the training container's log through the Kubernetes API (in-cluster
    /// service account, or KUBECONFIG), and exits 0 once the container terminated for good and its log was read
    /// (or on SIGTERM). It finds the Katib Trial (--trial, KATIB_TRIAL_NAME, the pod label
    /// katib.kubeflow.org/trial, or the pod's controller owners) and reads it once: with no rule flags it parses
    /// as Katib would for that Trial (its metricsFormat, else Katib's default filter, Katib semantics, the
    /// objective and additional metrics). When trialtail is the Trial's collector (collector kind Push, or Custom
    /// with trialtail's image) and this is the primary pod, it reports the rows to Katib's DB manager
    /// (--katib-db, every --report-interval and at the end) and writes live observations to the Trial's status
    /// (--trial-status). With another collector kind (Katib's own collector reports), in a pod that is not the
    /// primary one, or without a Trial it runs for Prometheus only and says why once. Takes no LOG.
    #[arg(
        long = "source",
        value_enum,
        value_name = "KIND",
        default_value = "log",
        env = "TRIALTAIL_SOURCE",
        help_heading = "Kubernetes"
    )]
    pub source_kind: SourceKind,

    /// With --source pod-log: the container whose log is read
    ///
    /// Default: the Trial's spec.primaryContainerName (with collector kind StdOut, Katib's
    /// metrics-logger-and-collector container, which re-prints the output Katib redirected), else the pod's
    /// first regular container that is not trialtail itself.
    #[arg(long, value_name = "NAME", env = "TRIALTAIL_CONTAINER", help_heading = "Kubernetes")]
    pub container: Option<String>,

    /// With --source pod-log: `live` writes observations to the Trial's status while it trains, `off` never
    ///
    /// Live writes follow rules that keep every Katib decision as with Katib's own collector: the objective is
    /// written only when its strategy is min or max (a value the trial really reached), never when it is
    /// latest; when the training container fails, the last write clears the observation again; when it
    /// succeeds, the final values are written and Katib's controller then takes the observation from the DB
    /// rows. Only when trialtail is the Trial's collector (see --source).
    #[arg(
        long,
        value_enum,
        value_name = "MODE",
        default_value = "live",
        env = "TRIALTAIL_TRIAL_STATUS",
        help_heading = "Kubernetes"
    )]
    pub trial_status: TrialStatusMode,

    /// With --source pod-log: time between two writes of the Trial's status
    ///
    /// A duration such as 5s or 1m (default 5s, at least 100ms). Each write is one merge patch setting
    /// status.observation.metrics to {name, latest, min, max} for the metrics the Trial asks for (objective,
    /// additional metrics, metricStrategies). A write happens only when something new was observed, so an idle
    /// trial costs no requests; the final values are written at once when training ends.
    #[arg(long, value_name = "DURATION", env = "TRIALTAIL_STATUS_INTERVAL", help_heading = "Kubernetes")]
    pub status_interval: Option<String>,

    /// With --source pod-log: Katib's DB manager, HOST:PORT
    ///
    /// Where the rows go when trialtail is the Trial's collector (DBManager.ReportObservationLog, plaintext
    /// gRPC). Default: Katib's own default address, katib-db-manager.kubeflow:6789.
    #[arg(
        long,
        value_name = "HOST:PORT",
        default_value = DEFAULT_KATIB_DB,
        env = "TRIALTAIL_KATIB_DB",
        help_heading = "Kubernetes"
    )]
    pub katib_db: String,

    /// With --source pod-log: report the new rows to Katib's DB this often while training runs
    ///
    /// A duration (default 10s; 0 reports only at the end). Rows are held back until the objective metric was
    /// seen once (Katib's collector reports nothing but one `unavailable` row for a trial without it), then
    /// sent in chunks, each row exactly once: a call whose outcome is unknown is checked against the DB's row
    /// count before anything is sent again. The Katib UI draws its curves from these rows.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10s",
        env = "TRIALTAIL_REPORT_INTERVAL",
        help_heading = "Kubernetes"
    )]
    pub report_interval: String,

    /// With --source pod-log: time the final report to Katib's DB may take, retries included
    ///
    /// A duration (default 20s). The pod counts as Succeeded only after the sidecar exited, and Kubernetes
    /// kills it terminationGracePeriodSeconds (default 30s) after the training container ended: keep this and
    /// --shutdown-grace below that.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "20s",
        env = "TRIALTAIL_REPORT_DEADLINE",
        help_heading = "Kubernetes"
    )]
    pub report_deadline: String,

    /// With --check-config and --source pod-log: the Katib Trial (or Experiment) to assume, a YAML or JSON file
    ///
    /// Shows the rules, metrics and role the sidecar would take from it (and where each comes from) without
    /// contacting anything. An Experiment stands for the Trials Katib creates from it.
    #[arg(
        long,
        value_name = "FILE",
        requires = "check_config",
        env = "TRIALTAIL_ASSUME_TRIAL",
        help_heading = "Kubernetes"
    )]
    pub assume_trial: Option<PathBuf>,

    #[command(flatten)]
    pub rules: RuleArgs,

    #[command(flatten)]
    pub export: ExportArgs,
}

/// Katib's default DB manager address (`GetDBManagerAddr`, `pkg/common/v1beta1/katib_manager_util.go`).
pub const DEFAULT_KATIB_DB: &str = "katib-db-manager.kubeflow:6789";

/// `--trial-status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TrialStatusMode {
    /// Write observations while the trial trains, under rules that never mislead Katib.
    Live,
    /// Never write the Trial's status.
    Off,
}

/// `--source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceKind {
    /// LOG, standard input (`-`) or a command after `--`.
    Log,
    /// A container's log through the Kubernetes API (native sidecar).
    PodLog,
}

/// The rule and limit flags, shared by `run` and `plot`.
#[derive(Debug, Args)]
pub struct RuleArgs {
    /// A Katib-style filter; repeatable
    ///
    /// A regex with named groups (?P<name>…) and (?P<value>…), optionally (?P<step>…); or, as in Katib, at least
    /// two groups where group 1 is the name and group 2 the value. Applied to every line, all matches taken.
    /// Giving any rule flag (or --metrics) turns the recognition off.
    #[arg(long = "filter", value_name = "REGEX", env = "TRIALTAIL_FILTER", help_heading = "Rules")]
    pub filters: Vec<String>,

    /// A metric with a fixed name; repeatable
    ///
    /// NAME=REGEX: every match of REGEX is an observation of NAME; the value is the (?P<value>…) group, or the
    /// only group. An optional (?P<step>…) group gives the step.
    /// Example: --metric accuracy='Accuracy at step (?P<step>\d+): (?P<value>\S+)'
    #[arg(long = "metric", value_name = "NAME=REGEX", env = "TRIALTAIL_METRIC", help_heading = "Rules")]
    pub metric_rules: Vec<String>,

    /// Built-in rules for a framework's output; repeatable or comma-separated
    ///
    /// katib: name=value pairs (loss=0.2351). tf-step: `Accuracy at step 120: 0.9134`. keras: `- loss: 0.3 -
    /// accuracy: 0.9`, progress-bar redraws included. hf-trainer: {'loss': 0.69, 'epoch': 1.0}. xgboost:
    /// [3]<TAB>validation_0-logloss:0.61. lightgbm: [10]<TAB>valid_0's binary_logloss: 0.3. sklearn: `Iteration
    /// 3, loss = 0.41`, `Validation score: 0.9`. tqdm: postfixes `…it/s, loss=0.3, acc=0.9]`.
    /// Metrics are named as the framework prints them. With no rule flag and no --metrics, every format is
    /// recognised from the log itself (these and more: Lightning's bars and tables, Hugging Face's metrics blocks,
    /// scikit-learn's SGD, PyTorch loops, Katib's {metricName: …} and JSON lines), values printed once are
    /// parameters, and --explain says which format each metric came from; --metrics alone means katib,tf-step.
    #[arg(
        long = "preset",
        value_enum,
        value_delimiter = ',',
        value_name = "NAME",
        env = "TRIALTAIL_PRESET",
        help_heading = "Rules"
    )]
    pub presets: Vec<Preset>,

    /// Keep only these metric names (comma- or semicolon-separated; Katib's -m)
    ///
    /// Names must match exactly as printed, and a line is only looked at when it contains one of them, which
    /// makes collection faster. Without rule flags it reads the katib and tf-step presets (no recognition); add
    /// --preset for other formats. With --katib-semantics the first name is Katib's objective.
    #[arg(short = 'm', long = "metrics", value_name = "NAMES", env = "TRIALTAIL_METRICS", help_heading = "Rules")]
    pub metrics: Vec<String>,

    /// How the log's lines are written: free text, or one JSON object per line (how results are printed is
    /// --output)
    ///
    /// json: every key whose value is a number or a numeric string is a metric (with --metrics, those keys);
    /// `timestamp` (RFC 3339 string or epoch seconds) is the observation time, `step`/`global_step` the step.
    /// Katib's JSON lines are recognised without it too. For JSON output, use --output json.
    #[arg(long, value_enum, default_value_t = LineFormat::Text, env = "TRIALTAIL_FORMAT", help_heading = "Rules")]
    pub format: LineFormat,

    /// Parse exactly as Katib's file metrics collector does
    ///
    /// ASCII classes, lines looked at only when they contain a metric name, exact names, values kept as printed
    /// (not validated), `\r` not split, the first token as timestamp when RFC 3339, JSON string values only, and
    /// the `unavailable` row when the objective (the first of --metrics) never appears. Needs --metrics; takes
    /// --filter only. Output is what Katib would report, at the end.
    #[arg(long, env = "TRIALTAIL_KATIB_SEMANTICS", help_heading = "Rules")]
    pub katib_semantics: bool,

    /// At most this many distinct metric names
    ///
    /// Observations of further new names are counted and dropped, with one warning. Range 1 to 1000000. A name
    /// or a value longer than 1024 bytes is never a metric: its observation is dropped whole (not cut), counted
    /// (`oversized` in --stats, trialtail_observations_oversized_total) and the first is said once.
    #[arg(
        long,
        default_value_t = DEFAULT_MAX_METRICS,
        value_name = "N",
        env = "TRIALTAIL_MAX_METRICS",
        help_heading = "Limits"
    )]
    pub max_metrics: usize,

    /// Cut lines longer than this (default 64KiB; 4MiB with --katib-semantics)
    ///
    /// Bytes, with an optional K, KiB, M or MiB suffix (powers of 1024). The first SIZE bytes of a longer line are
    /// still parsed; the rest up to the newline is skipped and counted. With --katib-semantics a longer line is
    /// dropped whole and counted (Katib reads lines whole, so a part of one would not be what Katib reports).
    /// Range 16 bytes to 64 MiB.
    #[arg(long, value_name = "SIZE", env = "TRIALTAIL_MAX_LINE_BYTES", help_heading = "Limits")]
    pub max_line_bytes: Option<String>,
}

/// The Prometheus endpoint, the Pushgateway and the labels they add (shared by every mode that exports).
#[derive(Debug, Clone, Default, Args)]
pub struct ExportArgs {
    /// Serve the live page (/), /metrics, /healthz and /readyz on this address (conventional port 9478)
    ///
    /// HOST:PORT, [IPV6]:PORT, or :PORT for every interface, e.g. `--listen :9478` or `--listen 127.0.0.1:9478`
    /// (9478 is trialtail's port). Open http://localhost:9478/ in a browser for the training curves, updated as
    /// lines arrive (the page is built in and fetches nothing else; its data is /api/series). /metrics speaks the
    /// Prometheus text format, or OpenMetrics when the scraper asks for it; /readyz answers 200 once the log was
    /// opened and read. Off by default in `trialtail run`, which reads a finished log and exits; when the log ends
    /// it keeps serving for --linger. At most 64
    /// connections: at the limit a new one takes the place of the oldest one not being answered, and a client that
    /// does not read its answer for 10 s is disconnected, so a scrape always gets through.
    #[arg(long, value_name = "ADDR", env = "TRIALTAIL_LISTEN", help_heading = "Prometheus")]
    pub listen: Option<String>,

    /// After the log ended, serve until one scrape returned the final values, at most this long
    ///
    /// A duration: 30s, 500ms, 2m, or plain seconds; 0 exits at once. Default 30s. Only with --listen. What is
    /// printed (the table, the JSON, --output-file) is written before the linger starts. SIGINT/SIGTERM ends the
    /// linger at once (exit 0), and a run stopped by a signal lingers at most --shutdown-grace; a second signal
    /// exits 128+N. The live page at / says meanwhile that the run has ended.
    #[arg(long, value_name = "DURATION", default_value = "30s", env = "TRIALTAIL_LINGER", help_heading = "Prometheus")]
    pub linger: String,

    /// Push the final values to this Prometheus Pushgateway
    ///
    /// http://HOST[:PORT][/PREFIX] (port 9091 by default; no https). The exposition is PUT to
    /// /metrics/job/trialtail/trial/<trial>/namespace/<namespace> (the labels that are known) when the log ended,
    /// and every --push-interval before. A failed push is retried, logged and counted, never fatal. Of the
    /// gateway's answer only the status is read, and an error's first 512 bytes.
    #[arg(long, value_name = "URL", env = "TRIALTAIL_PUSHGATEWAY", help_heading = "Prometheus")]
    pub pushgateway: Option<String>,

    /// Also push to the Pushgateway this often while reading
    ///
    /// A duration (10s, 1m); 0, the default, pushes only at the end. Skips pushes when nothing changed.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "0",
        env = "TRIALTAIL_PUSH_INTERVAL",
        help_heading = "Prometheus"
    )]
    pub push_interval: String,

    /// The Katib trial, as label `trial` [env: KATIB_TRIAL_NAME as a fallback]
    ///
    /// Added to every per-metric series and used as a Pushgateway grouping label.
    #[arg(long, value_name = "NAME", env = "TRIALTAIL_TRIAL", help_heading = "Prometheus")]
    pub trial: Option<String>,

    /// The Katib experiment, as label `experiment`
    #[arg(long, value_name = "NAME", env = "TRIALTAIL_EXPERIMENT", help_heading = "Prometheus")]
    pub experiment: Option<String>,

    /// The Kubernetes namespace, as label `namespace` [env: POD_NAMESPACE as a fallback]
    ///
    /// Added to every per-metric series and used as a Pushgateway grouping label.
    #[arg(long, value_name = "NAME", env = "TRIALTAIL_NAMESPACE", help_heading = "Prometheus")]
    pub namespace: Option<String>,

    /// The pod, as label `pod` [env: POD_NAME as a fallback]
    #[arg(long, value_name = "NAME", env = "TRIALTAIL_POD", help_heading = "Prometheus")]
    pub pod: Option<String>,
}

const PLOT_ABOUT: &str = "Draw the curves of a training log's metrics as SVG or PNG.\n\n\
Reads LOG to its end (or standard input for `-`; a directory's TensorBoard event files) with the same rules as \
`trialtail run` and draws one panel per \
metric: x is the step when the rule captured one, else the observation's index; y is the value. Values that are \
NaN or infinite leave a gap in the line and get a red cross on the panel's edge. The legend gives each metric's \
latest, min and max; the min and max points are marked.\n\n\
With `--panels auto` (the default) metrics that differ only by a train/validation prefix share a panel \
(`loss` and `val_loss`, `train-rmse` and `eval-rmse`), as they share a scale; `--panels one` overlays all of them, \
`--panels each` gives every metric its own.\n\n\
Examples:\n  \
trialtail plot train.log -o curves.svg\n  \
trialtail plot --preset keras --metrics loss,val_loss train.log -o loss.png\n  \
trialtail plot --preset xgboost --panels each --width 1600 train.log -o xgb.png";

/// What the x axis shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum XAxis {
    /// The step when every observation in the panel has one, else the observation index.
    Auto,
    /// The observation's index within its metric (0, 1, 2, …).
    Index,
    /// The step the rule captured; observations without one are left out.
    Step,
    /// Seconds since the first timestamp in the log; observations without a timestamp are left out.
    Time,
}

/// How metrics are spread over panels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Panels {
    /// One panel per metric, but `x` with `val_x`, `train-x` with `eval-x` (and the like) together.
    Auto,
    /// One panel per metric.
    Each,
    /// Every metric overlaid in one panel.
    One,
}

/// `trialtail plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// The log to read; `-` reads standard input; a directory reads its TensorBoard event files
    #[arg(value_name = "LOG", env = "TRIALTAIL_PATH")]
    pub log: PathBuf,

    /// The picture to write: FILE.svg or FILE.png
    ///
    /// The format follows the extension. The PNG's text uses the DejaVu Sans font built into trialtail; the
    /// SVG names `sans-serif` and is laid out for DejaVu Sans's metrics.
    #[arg(short = 'o', long, value_name = "FILE", env = "TRIALTAIL_PLOT_OUTPUT", help_heading = "Picture")]
    pub output: PathBuf,

    /// Width of the picture in pixels
    ///
    /// Range 200 to 8000. With more than 3 panels they are laid out in two columns.
    #[arg(long, default_value_t = 1000, value_name = "PX", env = "TRIALTAIL_WIDTH", help_heading = "Picture")]
    pub width: u32,

    /// Height of the picture in pixels; default 300 per row of panels plus the title
    ///
    /// Range 150 to 8000.
    #[arg(long, value_name = "PX", env = "TRIALTAIL_HEIGHT", help_heading = "Picture")]
    pub height: Option<u32>,

    /// What the x axis shows: auto, index, step or time
    ///
    /// auto: the step when every observation in a panel has one, else the index. time: seconds since the
    /// first timestamp (a line's RFC 3339 first token, or a JSON line's `timestamp`).
    #[arg(long, value_enum, default_value_t = XAxis::Auto, value_name = "AXIS", env = "TRIALTAIL_X", help_heading = "Picture")]
    pub x: XAxis,

    /// How metrics share panels: auto, each or one
    ///
    /// auto: metrics whose names differ only by a train/val/valid/validation/eval/test prefix share a panel.
    /// each: a panel per metric. one: everything overlaid in one panel (pick metrics on one scale with
    /// --metrics).
    #[arg(long, value_enum, default_value_t = Panels::Auto, env = "TRIALTAIL_PANELS", help_heading = "Picture")]
    pub panels: Panels,

    #[command(flatten)]
    pub rules: RuleArgs,
}

const WEBHOOK_ABOUT: &str = "Serve the admission webhook that injects trialtail into training pods as a sidecar.\n\n\
An HTTPS server answering \
Kubernetes AdmissionReview v1 requests for pod CREATE on POST /mutate. A pod is mutated when it has the label \
`trialtail.io/inject: \"true\"` or is a Katib trial pod (label `katib.kubeflow.org/trial`), is in a --namespace \
(any namespace when none is given), has no container named `trialtail` yet, and does not opt out with the label \
or annotation `trialtail.io/inject: \"false\"`.\n\n\
The certificate comes from --tls-cert and --tls-key (files, e.g. from cert-manager, reloaded when they \
change), or the webhook manages it itself with --cert-secret: a Secret it creates and renews, and the caBundle of \
its MutatingWebhookConfiguration, which it keeps (for clusters without cert-manager).\n\n\
The sidecar runs `trialtail run --source pod-log --listen :9478 --log-format json` as a native sidecar (an init container with \
restartPolicy Always; a regular container with --no-native-sidecar), with POD_NAME and POD_NAMESPACE from the \
downward API, a restricted securityContext, the port `trialtail-prom` (9478), a readiness probe on /readyz, the \
label `trialtail.io/injected: \"true\"` and the prometheus.io/scrape, port and path annotations (those the pod \
sets are kept). The pod's annotations choose the rules:\n  \
trialtail.io/metrics     metric names, comma-separated (--metrics)\n  \
trialtail.io/preset      preset names, comma-separated (--preset)\n  \
trialtail.io/filters     filter regexes, one per line, each trimmed (--filter each)\n  \
trialtail.io/container   the container whose log is read (default: a Katib trial's primary container, else \
the pod's first container)\n\
They are checked with trialtail's own parser; a pod whose annotations do not parse is admitted unchanged, with a \
warning naming the annotation: the webhook never stops a pod from starting. What one pod may cost is bounded: \
each annotation is read up to 32 KiB, and trialtail.io/filters holds at most 8 filters of at most 512 KiB of \
compiled regex each (Unicode \\w alone is some 50 KB; (?-u) makes it ASCII).\n\n\
Bounded whatever clients send: at most 256 connections per port, and at the limit a new one takes the place of \
the oldest one not being answered; request headers within 10 s and 16 KiB, a body within 10 s after them, a \
client that does not read its answer for 10 s is disconnected; the bodies in flight hold at most 4 times \
--max-body-bytes.\n\n\
/healthz, /readyz and /metrics (requests, mutations, errors, latency) are served over plain HTTP on \
--metrics-listen. SIGTERM or SIGINT stops accepting, lets the requests in flight finish (at most \
--shutdown-grace) and exits 0. --check-config validates every flag (and with --tls-cert the certificate and \
the key) and exits, contacting nothing.\n\n\
Example:\n  \
trialtail webhook --tls-cert /etc/trialtail/tls/tls.crt --tls-key /etc/trialtail/tls/tls.key\n  \
trialtail webhook --cert-secret trialtail-webhook-tls --log-format json\n  \
trialtail webhook --check-config --tls-cert tls.crt --tls-key tls.key --namespace kubeflow-user";

/// `trialtail webhook`.
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// Serve the webhook over HTTPS on this address
    ///
    /// HOST:PORT, [IPV6]:PORT, or :PORT for every interface. The API server calls POST /mutate on it (through
    /// the webhook's Service).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = ":8443",
        env = "TRIALTAIL_WEBHOOK_LISTEN",
        help_heading = "Server"
    )]
    pub listen: String,

    /// The TLS certificate chain, PEM (the server's certificate first); or use --cert-secret
    ///
    /// Reloaded when it changes: its directory is watched (Kubernetes secret volumes swap a `..data` symlink),
    /// and checked every 30s besides. A new pair that does not load (half written, key not matching) is ignored
    /// and the previous one kept, with a warning.
    #[arg(
        long,
        value_name = "PATH",
        env = "TRIALTAIL_WEBHOOK_TLS_CERT",
        requires = "tls_key",
        help_heading = "Certificate"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The TLS private key, PEM (PKCS#8, PKCS#1 or SEC1), matching --tls-cert
    ///
    /// Reloaded with the certificate.
    #[arg(
        long,
        value_name = "PATH",
        env = "TRIALTAIL_WEBHOOK_TLS_KEY",
        requires = "tls_cert",
        help_heading = "Certificate"
    )]
    pub tls_key: Option<PathBuf>,

    /// Manage the serving certificate in this Secret of the webhook's namespace, instead of --tls-cert/--tls-key
    ///
    /// For clusters without cert-manager. At start the webhook reads the Secret (type kubernetes.io/tls:
    /// tls.crt, tls.key, ca.crt, ca.key) and uses it when its certificate is valid for the Service's DNS names
    /// for at least 30 more days; otherwise it makes one – a CA (10 years) and a certificate signed by it (1
    /// year) – and creates or replaces the Secret (a replica that loses the race uses the winner's). It then
    /// keeps the caBundle of every entry of --webhook-configuration that calls --service equal to the Secret's
    /// ca.crt, and every --cert-recheck reads both again: a Secret another replica renewed is loaded, a
    /// certificate within 30 days of expiring is renewed with the same CA, a caBundle someone reset is put back.
    /// The namespace is POD_NAMESPACE, else the service account's. Needs get/update on this Secret, create on
    /// secrets, and get/patch on the MutatingWebhookConfiguration (manifests/components/self-managed-cert).
    #[arg(
        long,
        value_name = "NAME",
        env = "TRIALTAIL_WEBHOOK_CERT_SECRET",
        conflicts_with_all = ["tls_cert", "tls_key"],
        required_unless_present = "tls_cert",
        help_heading = "Certificate"
    )]
    pub cert_secret: Option<String>,

    /// With --cert-secret: the Service the API server calls; the certificate is made for its DNS names
    ///
    /// NAME.NAMESPACE.svc and NAME.NAMESPACE.svc.cluster.local, NAMESPACE being the webhook's own.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "trialtail-webhook",
        env = "TRIALTAIL_WEBHOOK_SERVICE",
        requires = "cert_secret",
        help_heading = "Certificate"
    )]
    pub service: String,

    /// With --cert-secret: the MutatingWebhookConfiguration whose caBundle the webhook keeps
    #[arg(
        long,
        value_name = "NAME",
        default_value = "trialtail",
        env = "TRIALTAIL_WEBHOOK_CONFIGURATION",
        requires = "cert_secret",
        help_heading = "Certificate"
    )]
    pub webhook_configuration: String,

    /// With --cert-secret: how often the Secret and the caBundle are checked again
    ///
    /// A duration such as 60s or 5m (default 1m, at least 1s, at most a day).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "1m",
        env = "TRIALTAIL_WEBHOOK_CERT_RECHECK",
        requires = "cert_secret",
        help_heading = "Certificate"
    )]
    pub cert_recheck: String,

    /// Serve /healthz, /readyz and /metrics over plain HTTP on this address
    ///
    /// HOST:PORT, [IPV6]:PORT, or :PORT. /metrics counts requests, mutations and errors, and the latency of
    /// reviews, in the Prometheus text format.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = ":9479",
        env = "TRIALTAIL_WEBHOOK_METRICS_LISTEN",
        help_heading = "Server"
    )]
    pub metrics_listen: String,

    /// Refuse request bodies larger than this with 413
    ///
    /// Bytes, with an optional K, KiB, M or MiB suffix (powers of 1024). Range 1 KiB to 64 MiB; default 4 MiB
    /// (a pod is at most about 1.5 MiB in etcd). The bodies in flight together hold at most 4 times this (the
    /// oldest still arriving give way to a new one): the Deployment's memory limit (128Mi) fits the default,
    /// raise it with this.
    #[arg(
        long,
        value_name = "SIZE",
        default_value = "4MiB",
        env = "TRIALTAIL_WEBHOOK_MAX_BODY_BYTES",
        help_heading = "Server"
    )]
    pub max_body_bytes: String,

    /// Time allowed for requests in flight after SIGTERM/SIGINT
    ///
    /// A duration such as 5s or 500ms; default 10s. New connections are refused at once.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10s",
        env = "TRIALTAIL_WEBHOOK_SHUTDOWN_GRACE",
        help_heading = "Server"
    )]
    pub shutdown_grace: String,

    /// Validate every flag, the certificate and the key, then exit without serving
    ///
    /// Exits 0 when all is well, else 2 with one line naming the bad flag and value.
    #[arg(long, env = "TRIALTAIL_WEBHOOK_CHECK_CONFIG", help_heading = "Server")]
    pub check_config: bool,

    /// The sidecar's image
    ///
    /// Default: this binary's version on ghcr.io.
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_IMAGE, env = "TRIALTAIL_WEBHOOK_IMAGE", help_heading = "Sidecar")]
    pub image: String,

    /// Only mutate pods in this namespace; repeatable or comma-separated
    ///
    /// Default: every namespace the MutatingWebhookConfiguration sends (its namespaceSelector decides).
    #[arg(
        long = "namespace",
        value_name = "NS",
        value_delimiter = ',',
        env = "TRIALTAIL_WEBHOOK_NAMESPACE",
        help_heading = "Sidecar"
    )]
    pub namespaces: Vec<String>,

    /// Inject a regular container instead of a native sidecar (for Kubernetes before 1.29)
    ///
    /// By default trialtail is added to initContainers with restartPolicy Always, which Kubernetes starts
    /// before and stops after the training containers. As a regular container it exits by itself once the
    /// training container terminated.
    #[arg(long, env = "TRIALTAIL_WEBHOOK_NO_NATIVE_SIDECAR", help_heading = "Sidecar")]
    pub no_native_sidecar: bool,

    /// The sidecar's CPU request, a Kubernetes quantity
    ///
    /// Cores (0.5) or millicores (50m). Following a log costs a few millicores; the limit bounds the bursts
    /// of a very chatty log.
    #[arg(
        long,
        value_name = "QUANTITY",
        default_value = DEFAULT_CPU_REQUEST,
        env = "TRIALTAIL_WEBHOOK_CPU_REQUEST",
        help_heading = "Sidecar"
    )]
    pub cpu_request: String,

    /// The sidecar's memory request, a Kubernetes quantity
    ///
    /// Bytes with a binary (16Mi) or decimal (16M) suffix. trialtail's memory is bounded by --max-line-bytes and
    /// --max-metrics, not by the log's size.
    #[arg(
        long,
        value_name = "QUANTITY",
        default_value = DEFAULT_MEMORY_REQUEST,
        env = "TRIALTAIL_WEBHOOK_MEMORY_REQUEST",
        help_heading = "Sidecar"
    )]
    pub memory_request: String,

    /// The sidecar's CPU limit, a Kubernetes quantity
    ///
    /// Cores (0.5) or millicores (500m).
    #[arg(
        long,
        value_name = "QUANTITY",
        default_value = DEFAULT_CPU_LIMIT,
        env = "TRIALTAIL_WEBHOOK_CPU_LIMIT",
        help_heading = "Sidecar"
    )]
    pub cpu_limit: String,

    /// The sidecar's memory limit, a Kubernetes quantity
    ///
    /// Bytes with a binary (100Mi) or decimal (100M) suffix.
    #[arg(
        long,
        value_name = "QUANTITY",
        default_value = DEFAULT_MEMORY_LIMIT,
        env = "TRIALTAIL_WEBHOOK_MEMORY_LIMIT",
        help_heading = "Sidecar"
    )]
    pub memory_limit: String,
}

/// The sidecar's default CPU request.
pub const DEFAULT_CPU_REQUEST: &str = "50m";
/// The sidecar's default memory request.
pub const DEFAULT_MEMORY_REQUEST: &str = "16Mi";
/// The sidecar's default CPU limit.
pub const DEFAULT_CPU_LIMIT: &str = "500m";
/// The sidecar's default memory limit.
pub const DEFAULT_MEMORY_LIMIT: &str = "100Mi";

/// The sidecar image of this version.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/trialtail/trialtail:", env!("CARGO_PKG_VERSION"));
