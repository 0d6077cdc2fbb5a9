//! What `trialtail run` shows on a terminal and what it writes into a pipe.
//!
//! A pseudo-terminal comes from util-linux's `script -qec CMD /dev/null` (stdout and stderr both on the pty,
//! merged in what `script` prints); the pipe is the plain [`trialtail`] helper. The large log is written here:
//! 9 MiB of lines, just above the size that gets a progress bar.

use std::path::Path;
use std::process::Command;

use crate::{example, stderr, stdout, trialtail};

/// Quotes `s` for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs the binary with `args` on a pseudo-terminal; returns everything it wrote there.
fn on_a_terminal(args: &[&str]) -> String {
    on_a_terminal_with(args, &[])
}

/// [`on_a_terminal`] with `env` set (and `NO_COLOR` unset unless `env` sets it).
fn on_a_terminal_with(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = sh_quote(env!("CARGO_BIN_EXE_trialtail"));
    for a in args {
        cmd.push(' ');
        cmd.push_str(&sh_quote(a));
    }
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env_remove("TRIALTAIL_LOG")
        .env_remove("NO_COLOR")
        .env_remove("TRIALTAIL_COLOR")
        .env("TERM", "xterm")
        .envs(env.iter().copied())
        .output()
        .expect("util-linux `script` runs");
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes the large log; returns its path and its number of `loss` observations.
fn big_log(dir: &Path) -> (String, u64) {
    let path = dir.join("big.log");
    let mut text = String::with_capacity(9 << 20);
    let mut i = 0u64;
    while text.len() < 9 << 20 {
        text.push_str(&format!("step {i} some chatter that does not match anything at all ........ loss={}\n", i % 7));
        i += 1;
    }
    std::fs::write(&path, text).unwrap();
    (path.to_str().unwrap().to_string(), i)
}

#[test]
fn the_table_has_a_sparkline_column_on_a_terminal_only() {
    let log = example("xgboost_native.log");
    let log = log.to_str().unwrap();
    let tty = on_a_terminal(&["run", "--preset", "xgboost", log]);
    let header = tty.lines().next().unwrap();
    assert!(header.ends_with("trend\r") || header.ends_with("trend"), "{tty:?}");
    let eval = tty.lines().find(|l| l.starts_with("eval-rmse")).unwrap();
    // eval-rmse falls fast, then flattens and rises a little: the first block is the highest.
    assert!(eval.contains('█'), "{eval}");
    assert!(eval.trim_end().chars().rev().take(16).all(|c| "▁▂▃▄▅▆▇█".contains(c)), "{eval}");

    let piped = trialtail(&["run", "--preset", "xgboost", log], None);
    let text = stdout(&piped);
    assert!(!text.contains("trend") && !text.contains('█') && !text.contains('\x1b'), "{text}");
    assert_eq!(text.lines().next().unwrap(), "metric      count    latest       min       max  step");
}

#[test]
fn the_progress_bar_shows_on_a_terminal_and_erases_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = big_log(dir.path());
    let tty = on_a_terminal(&["run", &log]);
    assert!(tty.contains("MB/s") && tty.contains("ETA"), "{tty:?}");
    assert!(tty.contains("\r\x1b[2K"), "erased before the table: {tty:?}");
    let table_at = tty.find("metric").unwrap();
    assert!(tty[..table_at].ends_with("\x1b[2K"), "the table starts on a clean line: {tty:?}");

    for flag in ["--no-progress", "--quiet"] {
        let quiet = on_a_terminal(&["run", flag, &log]);
        assert!(!quiet.contains("MB/s") && !quiet.contains("\x1b[2K"), "{flag}: {quiet:?}");
        assert!(quiet.contains("loss"), "{flag}: the table is still printed: {quiet:?}");
    }
}

#[test]
fn nothing_but_the_table_goes_into_pipes() {
    let dir = tempfile::tempdir().unwrap();
    let (log, lines) = big_log(dir.path());
    let out = trialtail(&["run", &log], None);
    assert!(out.status.success());
    assert_eq!(stderr(&out), "", "no progress bar into a pipe");
    let table = stdout(&out);
    assert!(!table.contains('\x1b') && !table.contains("trend"), "{table}");
    assert_eq!(
        table.lines().nth(1).unwrap().split_whitespace().take(2).collect::<Vec<_>>(),
        ["loss", &lines.to_string()]
    );
}

#[test]
fn quiet_silences_warnings() {
    let input = b"a=1 b=2 c=3\n";
    let loud = trialtail(&["run", "--preset", "katib", "--max-metrics", "1", "-"], Some(input));
    assert!(stderr(&loud).contains("metric limit reached"));
    let quiet = trialtail(&["run", "--preset", "katib", "--quiet", "--max-metrics", "1", "-"], Some(input));
    assert_eq!(stderr(&quiet), "");
    assert_eq!(stdout(&quiet), stdout(&loud));
}

#[test]
fn live_without_follow_says_it_has_no_effect() {
    let out = trialtail(&["run", "--live", "-"], Some(b"loss=1\nloss=2\n"));
    assert!(out.status.success());
    assert!(stderr(&out).contains("--live redraws the table while following a log"), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("metric"));
}

#[test]
fn live_redraws_the_followed_table_on_a_terminal_and_not_in_a_pipe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("train.log");
    std::fs::write(&path, "loss=0.9\nloss=0.5\nAccuracy at step 3: 0.7\n").expect("write the log");
    let path = path.to_str().expect("utf-8 path");
    let screen = on_a_terminal(&["run", "--follow", "--live", "--until-idle", "500ms", path]);
    // At least two frames: the second moves the cursor back up over the first and clears below it.
    assert!(screen.contains("\x1b[J"), "no redraw: {screen:?}");
    assert!(screen.contains("trend"), "no sparkline column: {screen:?}");
    assert!(screen.contains("Accuracy"), "{screen:?}");
    let piped = trialtail(&["run", "--follow", "--live", "--until-idle", "500ms", path], None);
    assert!(piped.status.success());
    assert!(!stdout(&piped).contains('\x1b'), "escape codes in a pipe: {:?}", stdout(&piped));
    assert!(stdout(&piped).starts_with("metric"));
}

#[test]
fn diagnostics_are_coloured_on_a_terminal_unless_no_color_color_never_or_a_dumb_terminal() {
    // --live without --follow logs a warning: the one diagnostic of this run.
    let log = example("tf_accuracy_at_step.log");
    let args = ["run", "--live", log.to_str().unwrap()];
    let with = |extra: &[&str], env: &[(&str, &str)]| on_a_terminal_with(&[extra, &args[..]].concat(), env);
    let coloured = |screen: &str| screen.lines().any(|l| l.contains("WARN") && l.contains('\x1b'));
    let plain = |screen: &str| screen.contains("WARN") && !screen.contains('\x1b');
    assert!(coloured(&with(&[], &[])), "auto on a terminal: {:?}", with(&[], &[]));
    assert!(plain(&with(&[], &[("NO_COLOR", "1")])), "NO_COLOR");
    assert!(coloured(&with(&[], &[("NO_COLOR", "")])), "an empty NO_COLOR is no NO_COLOR");
    assert!(plain(&with(&[], &[("TERM", "dumb")])), "TERM=dumb");
    assert!(plain(&with(&["--color", "never"], &[])), "--color never");
    assert!(plain(&with(&[], &[("TRIALTAIL_COLOR", "never")])), "TRIALTAIL_COLOR=never");
    assert!(coloured(&with(&["--color=always"], &[("NO_COLOR", "1")])), "a flag beats NO_COLOR");
    assert!(plain(&with(&["--log-format", "json"], &[])), "JSON is never coloured");

    // Into a pipe: plain unless asked.
    let piped = trialtail(&args, None);
    assert!(plain(&stderr(&piped)), "{}", stderr(&piped));
    let forced = trialtail(&[&["--color", "always"], &args[..]].concat(), None);
    assert!(stderr(&forced).contains("\x1b["), "{}", stderr(&forced));
    // clap's own messages follow the flag too.
    let error = trialtail(&["--color", "always", "run", "--no-such-flag"], None);
    assert!(stderr(&error).contains("\x1b["), "{}", stderr(&error));
    let error = trialtail(&["--color", "never", "run", "--no-such-flag"], None);
    assert!(!stderr(&error).contains('\x1b') && stderr(&error).contains("--no-such-flag"), "{}", stderr(&error));
}

#[test]
fn a_dumb_terminal_gets_neither_a_progress_bar_nor_redraws() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = big_log(dir.path());
    let tty = on_a_terminal_with(&["run", &log], &[("TERM", "dumb")]);
    assert!(!tty.contains("MB/s") && !tty.contains('\x1b'), "{tty:?}");
    assert!(tty.contains("loss"), "the table: {tty:?}");
    let path = dir.path().join("train.log");
    std::fs::write(&path, "loss=0.9\nloss=0.5\n").unwrap();
    let args = ["run", "--follow", "--live", "--until-idle", "300ms", path.to_str().unwrap()];
    let screen = on_a_terminal_with(&args, &[("TERM", "dumb")]);
    assert!(!screen.contains('\x1b') && screen.contains("loss"), "{screen:?}");
}
