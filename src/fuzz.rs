//! The fuzzing driver of the unit tests' fuzz targets (`fuzz_*`): proptest strategies run for a time budget
//! instead of a number of cases, each failure shrunk to a minimal input. (`cargo fuzz` needs a nightly
//! toolchain; proptest runs on the stable one the project builds with.)
//!
//! The budget is `TRIALTAIL_FUZZ_SECONDS` per target: 5 s when unset – what `cargo test` (and so CI) spends –,
//! as long as wanted on demand, e.g. `TRIALTAIL_FUZZ_SECONDS=3600 cargo test --lib fuzz_`. The seed is random
//! each run, so runs explore different inputs; a failure prints the minimal input that fails.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseResult, TestRunner};

/// The budget per target when `TRIALTAIL_FUZZ_SECONDS` is unset.
pub const DEFAULT_SECONDS: u64 = 5;

/// The time each fuzz target runs.
pub fn budget() -> Duration {
    let seconds = std::env::var("TRIALTAIL_FUZZ_SECONDS").ok().and_then(|s| s.trim().parse().ok());
    Duration::from_secs(seconds.unwrap_or(DEFAULT_SECONDS))
}

/// Runs `test` on inputs drawn from `strategy` for [`budget`]; a failure panics with the minimal failing input.
/// At least one case runs, whatever the budget. Returns how many ran.
pub fn fuzz<S>(target: &str, strategy: S, test: impl Fn(S::Value) -> TestCaseResult) -> u64
where
    S: Strategy,
    S::Value: Debug,
{
    let budget = budget();
    let config = Config { failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let started = Instant::now();
    let mut cases = 0;
    while cases == 0 || started.elapsed() < budget {
        let tree = strategy.new_tree(&mut runner).unwrap_or_else(|e| panic!("{target}: no input: {e}"));
        if let Err(failure) = runner.run_one(tree, &test) {
            panic!("fuzz target {target} failed after {cases} cases: {failure}");
        }
        cases += 1;
    }
    eprintln!("fuzz target {target}: {cases} cases in {:.1?}", started.elapsed());
    cases
}
