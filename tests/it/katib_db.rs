//! The drop-in against Katib's real DB manager (`katib-db-manager` built from `github.com/kubeflow/katib
//! v0.19.0`, on a throwaway PostgreSQL): for the same log, the rows trialtail's drop-in mode reports and the rows
//! Katib's own parser finds (the oracle's, reported with Katib's own client) are read back with Katib's
//! `GetObservationLog` and must be the same. The DB manager normalises times (UTC, microseconds) and returns rows
//! of equal time in no fixed order, so the comparison is of the rows as stored, as multisets.
//!
//! Fault injection (a slow, failing or refusing DB manager) stays with the tonic fake of `dropin.rs`: the real one
//! cannot fail on demand.

use std::path::Path;

use crate::support::katib::{self, Case, Rig, Row};

/// A pid that cannot exist: the training already ended, its marker says `completed`.
const ENDED: &str = "999999999";

/// Runs the drop-in on `content` as Katib's webhook would start it for `case`, reporting to the rig as `trial`.
fn drop_in(rig: &Rig, dir: &Path, trial: &str, case: &Case, content: &[u8]) -> std::process::Output {
    let path = dir.join(format!("{trial}.log"));
    std::fs::write(&path, content).unwrap();
    std::fs::write(dir.join(format!("{ENDED}.pid")), "completed").unwrap();
    let metrics = case.metrics.join(";");
    let mut args = vec!["-t", trial, "-m", &metrics, "-o-type", "maximize", "-s-db", &rig.addr];
    let path = path.to_str().unwrap();
    args.extend(["-path", path, "-format", &case.format, "-main-pid", ENDED, "-listen", "off", "-p", "20ms"]);
    args.extend(["-report-deadline", "30s"]);
    let filters = case.filters.join(";");
    if !case.filters.is_empty() {
        args.extend(["-f", &filters]);
    }
    crate::trialtail(&args, None)
}

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort();
    rows
}

#[test]
fn the_drop_in_stores_in_katibs_own_db_manager_the_rows_katib_finds() {
    let Some(rig) = Rig::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    // The hard cases the drop-in can be given (names and filters without `;`), as Katib's collector `main` reads
    // its `-f`: an empty flag is no filter at all (Katib's default), whatever the list joined into it.
    let cases: Vec<Case> = katib::hard_cases()
        .into_iter()
        .filter(|c| ["TEXT", "JSON"].contains(&c.format.as_str()))
        .filter(|c| c.metrics.iter().chain(&c.filters).all(|s| !s.contains(';')))
        .map(|c| if c.filters.join(";").is_empty() { Case { filters: vec![], ..c } } else { c })
        .collect();
    let answers = katib::oracle(&rig.bins.oracle, &cases);
    let (mut compared, mut sentinels) = (0, 0);
    let (mut differences, mut refusals) = (Vec::new(), Vec::new());
    for (i, (case, answer)) in cases.iter().zip(&answers).enumerate() {
        let reports = answer.error.is_none()
            && answer.wire_error.is_none()
            && !answer.rows.iter().any(|r| katib::year_out_of_range(&r.time_stamp));
        if !reports {
            continue;
        }
        let (ours, theirs) = (format!("tt-{i}"), format!("katib-{i}"));
        // Katib's collector sends its rows in one call; a row its DB cannot hold (a NUL character, a name over
        // 255 characters) makes the DB refuse them all: Katib reports nothing there.
        if let Err(refused) = rig.report_as_katib(&theirs, &answer.rows, 0) {
            // trialtail keeps what it can: the NUL replaced, the rows stored.
            let out = drop_in(&rig, dir.path(), &ours, case, &case.bytes());
            assert_eq!(out.status.code(), Some(0), "{}: {}", case.id, crate::stderr(&out));
            let stored = rig.rows(&ours, "");
            assert!(!stored.is_empty() && stored.iter().all(|r| !r.value.contains('\0')), "{}: {stored:?}", case.id);
            refusals.push(format!("{}: {}", case.id, refused.trim()));
            continue;
        }
        let out = drop_in(&rig, dir.path(), &ours, case, &case.bytes());
        if out.status.code() == Some(2) && crate::stderr(&out).contains("--filter") {
            continue; // an invalid filter: refused at start-up (the oracle test checks Katib crashes on it)
        }
        assert_eq!(out.status.code(), Some(0), "{}: {}", case.id, crate::stderr(&out));
        let (stored, expected) = (sorted(rig.rows(&ours, "")), sorted(rig.rows(&theirs, "")));
        if stored != expected {
            differences.push(format!("{}: Katib stored {expected:?}\n    trialtail stored {stored:?}", case.id));
        }
        sentinels += usize::from(expected.iter().any(|r| r.value == "unavailable"));
        compared += 1;
    }
    assert!(differences.is_empty(), "{} differences:\n{}", differences.len(), differences.join("\n"));
    eprintln!("{compared} hard cases stored alike ({sentinels} with the unavailable sentinel)");
    eprintln!("Katib's DB manager refuses Katib's own report of {} cases:\n{}", refusals.len(), refusals.join("\n"));
    assert!(compared >= 150 && sentinels >= 5, "{compared} compared, {sentinels} sentinels");
}

#[test]
fn fifty_thousand_rows_reach_katibs_own_db_manager_in_chunks() {
    let Some(rig) = Rig::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let log: String =
        (0..50_000).map(|i| format!("2024-03-04T17:55:{:02}.{i:06}Z step {i}: loss={i}\n", i % 60)).collect();
    let case = Case {
        id: "fifty-thousand".into(),
        metrics: vec!["loss".into()],
        filters: vec![],
        format: "TEXT".into(),
        content: Some(log.clone()),
        content_b64: None,
    };
    let out = drop_in(&rig, dir.path(), "tt-50k", &case, log.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", crate::stderr(&out));
    let answer = katib::oracle(&rig.bins.oracle, std::slice::from_ref(&case)).remove(0);
    assert_eq!(answer.rows.len(), 50_000);
    // Katib's own collector sends this in one call, which its DB manager refuses (more than 16 383 rows make one
    // INSERT exceed PostgreSQL's parameter limit); Katib's rows are stored here in chunks to compare with.
    rig.report_as_katib("katib-50k", &answer.rows, 4000).unwrap();
    let stored = sorted(rig.rows("tt-50k", "loss"));
    assert_eq!(stored.len(), 50_000, "every row stored once");
    assert_eq!(stored, sorted(rig.rows("katib-50k", "loss")));
}
