//! Fuzzing with proptest (cargo-fuzz needs a nightly toolchain; these run on stable, in the normal suite):
//! random and mutated inputs through the line path (bytes → lines → rules → observations, native and Katib
//! semantics), the JSON-lines rules, and Katib's collector arguments, for a fixed time per target.
//!
//! Each target runs for `TRIALTAIL_FUZZ_SECONDS` (default 3: the suite's short run; `TRIALTAIL_FUZZ_SECONDS=600
//! cargo test --test it fuzz:: -- --nocapture` for a long one) and at least 64 cases. The inputs are seeded
//! from the example logs (`examples/logs/*.log`), mutated by byte flips, insertions, deletions, repeats and long
//! runs, or are random bytes. The run's seed is printed; `TRIALTAIL_FUZZ_SEED=<hex>` replays it. A failure is
//! shrunk to a minimal input by proptest and the test fails with it.
//!
//! What each target checks besides "no panic": the same observations whatever the chunking; every name and
//! value within the documented bounds ([`MAX_NAME_BYTES`], [`MAX_VALUE_BYTES`]); at most `--max-metrics`
//! metrics; line numbers that never go back; Katib's report holds exactly the observations; and for Katib's
//! arguments, that whatever parses has an objective and rules and stop rules that build or fail cleanly.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestCaseResult, TestRng, TestRunner};
use trialtail::katib::report::KatibReport;
use trialtail::lines::LineBuffer;
use trialtail::parser::{MAX_NAME_BYTES, MAX_VALUE_BYTES, Observation, ObservationSink, Parser};
use trialtail::rules::{LineFormat, Preset, RuleSpec, Rules, Semantics};

/// Cases run at least, whatever the time budget.
const MIN_CASES: u32 = 64;

/// The metric limit the targets run with (small, so the limit is reached).
const MAX_METRICS: usize = 40;

fn budget() -> Duration {
    let secs = std::env::var("TRIALTAIL_FUZZ_SECONDS").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(3.0);
    Duration::from_secs_f64(secs.max(0.0))
}

fn seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    if let Ok(hex) = std::env::var("TRIALTAIL_FUZZ_SEED") {
        for (i, b) in seed.iter_mut().enumerate() {
            *b = hex.get(2 * i..2 * i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()).unwrap_or(0);
        }
        return seed;
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    for (i, b) in seed.iter_mut().enumerate() {
        *b = (nanos >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(151);
    }
    seed
}

/// Runs `test` on values of `strategy` for the time budget (at least [`MIN_CASES`] cases); a failure is shrunk
/// and fails the test with the seed to replay it.
fn fuzz<S: Strategy>(target: &str, strategy: S, test: impl Fn(S::Value) -> TestCaseResult)
where
    S::Value: Debug,
{
    let seed = seed();
    let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    let config = Config { failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let (started, budget) = (Instant::now(), budget());
    let mut cases = 0u32;
    while cases < MIN_CASES || started.elapsed() < budget {
        let tree = strategy.new_tree(&mut runner).expect("a case");
        if let Err(e) = runner.run_one(tree, &test) {
            panic!("fuzz {target}: {e}\nreplay with TRIALTAIL_FUZZ_SEED={hex}");
        }
        cases += 1;
    }
    eprintln!("fuzz {target}: {cases} cases in {:.1?} (seed {hex})", started.elapsed());
}

/// The example logs: the corpus the mutations start from (read once).
fn corpus() -> Vec<Vec<u8>> {
    static CORPUS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    CORPUS.get_or_init(read_corpus).clone()
}

fn read_corpus() -> Vec<Vec<u8>> {
    let mut logs: Vec<_> = std::fs::read_dir(crate::root().join("examples/logs"))
        .expect("examples/logs")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs.into_iter().map(|p| std::fs::read(p).expect("an example log")).collect()
}

/// One mutation of a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Repeat(usize, usize, u8),
    Run(usize, u8, usize),
}

fn interesting_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..16),
        prop::sample::select(vec![
            &b"\n"[..],
            b"\r",
            b"\r\n",
            b"\0",
            b"=",
            b" loss=",
            b"accuracy=0.9",
            b"Accuracy at step 12: ",
            b"\x1b[32m",
            b"\x08",
            b"{\"loss\": \"0.5\", \"step\": 3}",
            b"2024-05-01T12:00:00Z ",
            b"nan",
            b"-inf",
            b"1e308",
            b"\xff\xfe",
            b"\xe2\x80\x83",
            b"{'loss': 0.69, 'epoch': 1.0}",
            b"[3]\tvalidation_0-logloss:0.61",
        ])
        .prop_map(<[u8]>::to_vec),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Flip(at, b)),
        (any::<usize>(), interesting_bytes()).prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<usize>(), 0..64usize).prop_map(|(at, n)| Mutation::Delete(at, n)),
        (any::<usize>(), 1..256usize, 1..8u8).prop_map(|(at, n, times)| Mutation::Repeat(at, n, times)),
        (any::<usize>(), any::<u8>(), 1..3000usize).prop_map(|(at, b, n)| Mutation::Run(at, b, n)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let at = |i: usize| if bytes.is_empty() { 0 } else { i % (bytes.len() + 1) };
        match m {
            Mutation::Flip(i, b) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes[i] ^= b | 1;
            }
            Mutation::Flip(..) => {}
            Mutation::Insert(i, b) => {
                let i = at(*i);
                bytes.splice(i..i, b.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let i = at(*i);
                let end = (i + n).min(bytes.len());
                bytes.drain(i..end);
            }
            Mutation::Repeat(i, n, times) => {
                let i = at(*i);
                let end = (i + n).min(bytes.len());
                let piece = bytes[i..end].to_vec();
                for _ in 0..*times {
                    bytes.splice(end..end, piece.iter().copied());
                }
            }
            Mutation::Run(i, b, n) => {
                let i = at(*i);
                bytes.splice(i..i, std::iter::repeat_n(*b, *n));
            }
        }
    }
    bytes
}

/// An input: a mutated example log (most of the time) or random bytes.
fn input(corpus: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = corpus.len();
    prop_oneof![
        4 => (0..n, prop::collection::vec(mutation(), 0..12)).prop_map(move |(i, ms)| mutate(corpus[i].clone(), &ms)),
        1 => prop::collection::vec(prop_oneof![any::<u8>(), Just(b'\n'), Just(b'=')], 0..4096),
    ]
}

/// One observation as seen: name, raw value, step, time, line.
type Seen1 = (Vec<u8>, Vec<u8>, Option<u64>, Option<Vec<u8>>, u64);

/// What a run observed.
#[derive(Debug, Default, PartialEq)]
struct Seen(Vec<Seen1>);

impl ObservationSink for Seen {
    fn observe(&mut self, o: &Observation<'_>) {
        self.0.push((o.name.to_vec(), o.raw.to_vec(), o.step, o.time.map(<[u8]>::to_vec), o.line));
    }
}

/// The rules a line-path case runs with.
#[derive(Debug, Clone, Copy)]
enum RuleChoice {
    Defaults,
    AllPresets,
    NativeFilter,
    Katib,
    KatibFilter,
}

fn rules(choice: RuleChoice, format: LineFormat) -> Rules {
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (specs, metrics, semantics) = match choice {
        RuleChoice::Defaults => (vec![], vec![], Semantics::Native),
        RuleChoice::AllPresets => {
            (Preset::ALL.iter().map(|p| RuleSpec::Preset(*p)).collect(), vec![], Semantics::Native)
        }
        RuleChoice::NativeFilter => {
            (vec![RuleSpec::Filter(r"(?P<name>\w+)\s*[:=]\s*(?P<value>\S+)".into())], vec![], Semantics::Native)
        }
        RuleChoice::Katib => (vec![], names(&["loss", "accuracy", "Accuracy", "val_loss"]), Semantics::Katib),
        RuleChoice::KatibFilter => (
            vec![RuleSpec::Filter(r"(\w+)\s*[:=]\s*(\S+)".into())],
            names(&["loss", "accuracy", "epoch", "step"]),
            Semantics::Katib,
        ),
    };
    Rules::new(&specs, &metrics, semantics, format).expect("the targets' rules build")
}

/// Parses `input` fed in pieces cut at `cuts` through a buffer of `max_line` bytes; returns what was observed,
/// the Katib report and the parser.
fn parse(
    input: &[u8],
    cuts: &[usize],
    choice: RuleChoice,
    format: LineFormat,
    max_line: usize,
) -> (Seen, KatibReport, Parser) {
    let mut parser = Parser::new(rules(choice, format), MAX_METRICS);
    let mut lines = LineBuffer::new(max_line);
    let mut sink = (Seen::default(), KatibReport::new("loss"));
    let mut at = 0;
    for &cut in cuts.iter().chain([&input.len()]) {
        let cut = cut.clamp(at, input.len());
        lines.feed_into(&input[at..cut], &mut parser.lines(&mut sink));
        at = cut;
    }
    lines.finish_into(&mut parser.lines(&mut sink));
    (sink.0, sink.1, parser)
}

fn check_line_path(
    input: &[u8],
    cuts: &[usize],
    choice: RuleChoice,
    format: LineFormat,
    max_line: usize,
) -> TestCaseResult {
    let (whole, report, parser) = parse(input, &[], choice, format, max_line);
    let (pieces, ..) = parse(input, cuts, choice, format, max_line);
    prop_assert_eq!(&whole, &pieces, "the same observations whatever the chunking");
    prop_assert!(parser.aggregate().metrics().len() <= MAX_METRICS);
    prop_assert_eq!(parser.counters().observations, whole.0.len() as u64);
    // Per name, line numbers never go back (the recognition holds a name's first values back until the log shows
    // it is a metric, so another name's later line may come first).
    let mut last = std::collections::HashMap::new();
    for (name, raw, _, _, line) in &whole.0 {
        prop_assert!(name.len() <= MAX_NAME_BYTES && raw.len() <= MAX_VALUE_BYTES);
        let before = last.insert(name.clone(), *line).unwrap_or(0);
        prop_assert!(*line >= before, "a name's line numbers never go back");
    }
    prop_assert_eq!(report.len(), whole.0.len(), "the report holds every observation");
    for (i, (name, raw, ..)) in whole.0.iter().enumerate() {
        let row = report.row(i).ok_or_else(|| TestCaseError::fail("a row"))?;
        prop_assert_eq!(row.name, String::from_utf8_lossy(name));
        prop_assert_eq!(row.value, String::from_utf8_lossy(raw));
    }
    Ok(())
}

fn rule_choice() -> impl Strategy<Value = RuleChoice> {
    prop::sample::select(vec![
        RuleChoice::Defaults,
        RuleChoice::AllPresets,
        RuleChoice::NativeFilter,
        RuleChoice::Katib,
        RuleChoice::KatibFilter,
    ])
}

#[test]
fn line_path_bytes_to_observations() {
    let strategy = (
        input(corpus()),
        prop::collection::vec(any::<usize>().prop_map(|c| c % 5000), 0..8),
        rule_choice(),
        prop::sample::select(vec![16usize, 100, 4096, 65536]),
    );
    fuzz("line path", strategy, |(input, mut cuts, choice, max_line)| {
        cuts.sort_unstable();
        check_line_path(&input, &cuts, choice, LineFormat::Text, max_line)
    });
}

/// A JSON value as a training script might print one, or worse.
fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<f64>().prop_map(|v| format!("{v}")),
        any::<i64>().prop_map(|v| v.to_string()),
        prop::sample::select(vec![
            "\"0.5\"",
            "\"nan\"",
            "\"1e-3\"",
            "null",
            "true",
            "\"\\ud800\"",
            "\"\\u00e9\"",
            "1e999",
            "-0",
            "\"2024-05-01T12:00:00Z\"",
            "\"\""
        ])
        .prop_map(str::to_string),
        "[a-z0-9 .\\-]{0,12}".prop_map(|s| format!("{s:?}")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((json_key(), inner), 0..4).prop_map(|kv| {
                let fields: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["loss", "accuracy", "epoch", "step", "global_step", "timestamp", "val_loss"])
            .prop_map(str::to_string),
        "[a-zA-Z_]{1,8}",
    ]
}

/// A line of JSON: an object of metric-like keys (duplicates allowed), sometimes cut or garbled.
fn json_line() -> impl Strategy<Value = Vec<u8>> {
    let object = prop::collection::vec((json_key(), json_value()), 0..8).prop_map(|kv| {
        let fields: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k:?}: {v}")).collect();
        format!("{{{}}}", fields.join(", ")).into_bytes()
    });
    (object, prop::collection::vec(mutation(), 0..3)).prop_map(|(o, ms)| mutate(o, &ms))
}

#[test]
fn json_lines_to_observations() {
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for log in corpus() {
        seeds.extend(log.split(|&b| b == b'\n').filter(|l| l.first() == Some(&b'{')).map(<[u8]>::to_vec));
    }
    let seeded =
        (prop::sample::select(seeds), prop::collection::vec(mutation(), 0..4)).prop_map(|(l, ms)| mutate(l, &ms));
    let line = prop_oneof![json_line(), seeded];
    let strategy = (
        prop::collection::vec(line, 1..12),
        prop::collection::vec(any::<usize>().prop_map(|c| c % 2000), 0..6),
        prop::sample::select(vec![RuleChoice::Defaults, RuleChoice::Katib]),
    );
    fuzz("JSON lines", strategy, |(lines, mut cuts, choice)| {
        cuts.sort_unstable();
        let input = lines.join(&b'\n');
        check_line_path(&input, &cuts, choice, LineFormat::Json, 65536)
    });
}

/// Katib's collector arguments: its flags (and trialtail's own drop-in flags) with values of every shape.
fn katib_args() -> impl Strategy<Value = Vec<String>> {
    let flag = prop::sample::select(vec![
        "-t",
        "-m",
        "-s-db",
        "-s",
        "-path",
        "-format",
        "-f",
        "-stop-rule",
        "-o-type",
        "-p",
        "-timeout",
        "-w",
        "-report-deadline",
        "-listen",
        "-main-pid",
        "-early-stop-wait",
        "-proc-root",
        "-s-earlystop",
        "--t",
        "-m=",
        "-t=trial",
        "-h",
        "--",
        "-unknown",
        "-",
    ])
    .prop_map(str::to_string);
    let value = prop_oneof![
        prop::sample::select(vec![
            "loss",
            "loss;accuracy",
            ";",
            "",
            "TEXT",
            "JSON",
            "text",
            "minimize",
            "maximize",
            "1s",
            "30",
            "-1s",
            "1h2m3.5s",
            "9999999999h",
            "true",
            "false",
            "1",
            "0",
            "4294967296",
            ":9478",
            "off",
            "[::1]:1",
            "a:b:c",
            "loss;0.5;less;2",
            "loss;nan;equal;0",
            "loss;1;greater;-1",
            "accuracy;x;less;1",
            "loss;1;less",
            "([\\w|-]+)\\s*=\\s*(\\S+)",
            "(unclosed",
            "(a)(b);(c)(d)",
            "{metricName: ([\\w|-]+), metricValue: ((-?\\d+)(\\.\\d+)?)}",
            "/var/log/katib/metrics.log",
            "katib-db-manager.kubeflow:6789",
        ])
        .prop_map(str::to_string),
        "[ -~]{0,12}",
        "\\PC{0,6}",
    ];
    prop::collection::vec(prop_oneof![flag, value], 0..16)
}

static CORPUS_HEAD: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();

#[test]
fn katib_arguments_parse_or_fail_cleanly() {
    fuzz("Katib arguments", katib_args(), |args| {
        let _ = trialtail::katib::args::is_katib_command_line(&args);
        let env = |name: &str| (name == "TRIALTAIL_LISTEN").then(|| "off".to_string());
        let Ok(a) = trialtail::katib::args::parse(&args, env) else { return Ok(()) };
        prop_assert!(!a.metrics.is_empty(), "what parses names an objective: {:?}", a.metrics);
        let specs: Vec<RuleSpec> = a.filters.iter().cloned().map(RuleSpec::Filter).collect();
        if let Ok(rules) = Rules::new(&specs, &a.metrics, Semantics::Katib, a.format) {
            // The rules that build parse the corpus without a panic.
            let mut parser = Parser::new(rules, MAX_METRICS);
            let mut lines = LineBuffer::new(4096);
            for log in CORPUS_HEAD.get_or_init(|| corpus().into_iter().take(2).collect()) {
                lines.feed_into(log, &mut parser.lines(&mut ()));
            }
        }
        for rule in &a.stop_rules {
            let _ = trialtail::katib::early_stop::parse_rule(rule);
        }
        Ok(())
    });
}
