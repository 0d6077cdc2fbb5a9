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
until SIGINT/SIGTERM or `--until-idle`. After `--`, a command is run instead (no shell) and its stdout and stderr \
are passed through and parsed; trialtail exits with its exit code and prints the summary to stderr.\n\n\
Examples:\n  \
trialtail run train.log\n  \
trialtail run --explain train.log\n  \
trialtail run --follow --output json /var/log/train.log\n  \
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
    /// The log to read; `-` reads standard input
    ///
    /// Read to its end, or followed with --follow. Leave it out when wrapping a command after `--`.
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
    /// deletion and recreation, and truncation (copytruncate) are followed. Ends on SIGINT/SIGTERM (after reading
    /// what is readable, within --shutdown-grace) or after --until-idle.
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
    /// has. A second signal exits at once (128+N). Default 5s.
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
    /// from the downward API), follows --container's log through the Kubernetes API (in-cluster service
    /// account, or KUBECONFIG), finds the Katib Trial (--trial, KATIB_TRIAL_NAME, the pod label
    /// katib.kubeflow.org/trial, or the pod's controller owners), writes live observations to the Trial's status
    /// every --status-interval, and exits 0 once the container terminated and its log was read (or on
    /// SIGTERM). Without a Trial it still runs, for Prometheus only. Takes no LOG.
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
    /// Default: the Trial's spec.primaryContainerName, else the pod's first regular container that is not
    /// trialtail itself (named `trialtail` or `metrics-logger-and-collector`).
    #[arg(long, value_name = "NAME", env = "TRIALTAIL_CONTAINER", help_heading = "Kubernetes")]
    pub container: Option<String>,

    /// With --source pod-log: time between two writes of the Trial's status
    ///
    /// A duration such as 5s or 1m (default 5s, at least 100ms). Each write is one merge patch setting
    /// status.observation.metrics to {name, latest, min, max} for the metrics the Trial asks for (objective,
    /// additional metrics, metricStrategies). A write happens only when something new was observed, so an idle
    /// trial costs no requests; the final values are written at once when training ends.
    #[arg(long, value_name = "DURATION", env = "TRIALTAIL_STATUS_INTERVAL", help_heading = "Kubernetes")]
    pub status_interval: Option<String>,

    /// With --source pod-log: do not write observations to the Trial's status
    ///
    /// The Trial is still looked up for the `trial` label and the default container.
    #[arg(long, env = "TRIALTAIL_NO_TRIAL_STATUS", help_heading = "Kubernetes")]
    pub no_trial_status: bool,

    #[command(flatten)]
    pub rules: RuleArgs,

    #[command(flatten)]
    pub export: ExportArgs,
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
    /// Observations of further new names are counted and dropped, with one warning. Range 1 to 1000000.
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
    /// Serve /metrics, /healthz and /readyz on this address (conventional port 9478)
    ///
    /// HOST:PORT, [IPV6]:PORT, or :PORT for every interface, e.g. `--listen :9478` or `--listen 127.0.0.1:9478`
    /// (9478 is trialtail's port). /metrics speaks the Prometheus text format, or OpenMetrics when the scraper asks
    /// for it; /readyz answers 200 once the log was opened and read. Off by default in `trialtail run`, which
    /// reads a finished log and exits; when the log ends it keeps serving for --linger.
    #[arg(long, value_name = "ADDR", env = "TRIALTAIL_LISTEN", help_heading = "Prometheus")]
    pub listen: Option<String>,

    /// After the log ended, serve until one scrape returned the final values, at most this long
    ///
    /// A duration: 30s, 500ms, 2m, or plain seconds; 0 exits at once. Default 30s. Only with --listen.
    #[arg(long, value_name = "DURATION", default_value = "30s", env = "TRIALTAIL_LINGER", help_heading = "Prometheus")]
    pub linger: String,

    /// Push the final values to this Prometheus Pushgateway
    ///
    /// http://HOST[:PORT][/PREFIX] (port 9091 by default; no https). The exposition is PUT to
    /// /metrics/job/trialtail/trial/<trial>/namespace/<namespace> (the labels that are known) when the log ended,
    /// and every --push-interval before. A failed push is retried, logged and counted, never fatal.
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
Reads LOG to its end (or standard input for `-`) with the same rules as `trialtail run` and draws one panel per \
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
    /// The log to read; `-` reads standard input
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
An HTTPS server (the certificate and key from --tls-cert and --tls-key, reloaded when they change) answering \
Kubernetes AdmissionReview v1 requests for pod CREATE on POST /mutate. A pod is mutated when it has the label \
`trialtail.io/inject: \"true\"` or is a Katib trial pod (label `katib.kubeflow.org/trial`), is in a --namespace \
(any namespace when none is given), has no container named `trialtail` yet, and does not opt out with the label \
or annotation `trialtail.io/inject: \"false\"`.\n\n\
The sidecar runs `trialtail run --source pod-log --listen :9478` as a native sidecar (an init container with \
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
warning naming the annotation: the webhook never stops a pod from starting.\n\n\
/healthz, /readyz and /metrics (requests, mutations, errors, latency) are served over plain HTTP on \
--metrics-listen. SIGTERM or SIGINT stops accepting, lets the requests in flight finish (at most \
--shutdown-grace) and exits 0. --check-config validates every flag, the certificate and the key, and exits.\n\n\
Example:\n  \
trialtail webhook --tls-cert /etc/trialtail/tls/tls.crt --tls-key /etc/trialtail/tls/tls.key\n  \
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

    /// The TLS certificate chain, PEM (the server's certificate first)
    ///
    /// Reloaded when it changes: its directory is watched (Kubernetes secret volumes swap a `..data` symlink),
    /// and checked every 30s besides. A new pair that does not load (half written, key not matching) is ignored
    /// and the previous one kept, with a warning.
    #[arg(long, value_name = "PATH", env = "TRIALTAIL_WEBHOOK_TLS_CERT", help_heading = "Server")]
    pub tls_cert: PathBuf,

    /// The TLS private key, PEM (PKCS#8, PKCS#1 or SEC1), matching --tls-cert
    ///
    /// Reloaded with the certificate.
    #[arg(long, value_name = "PATH", env = "TRIALTAIL_WEBHOOK_TLS_KEY", help_heading = "Server")]
    pub tls_key: PathBuf,

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
    /// (a pod is at most about 1.5 MiB in etcd).
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
