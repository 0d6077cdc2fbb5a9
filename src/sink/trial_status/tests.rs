//! `tower_test` scenarios for the Trial status sink: each drives the sink against a mocked API server and
//! checks every request it makes (method, path, content type, body shape) and when it makes it (paused time).

use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::*;
use crate::aggregate::MetricStats;
use crate::katib::trial::Trial;
use crate::sink::stats::SinkStats;
use crate::snapshot::{Phase, Snapshot, Training};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Responder = tower_test::mock::SendResponse<Response<Body>>;

const TRIAL_PATH: &str = "/apis/kubeflow.org/v1beta1/namespaces/ns/trials/t1";

fn sink_for(interval: Duration, trial: &Value) -> (TrialStatus, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "ns");
    let cfg = StatusConfig { trial: "t1".into(), namespace: "ns".into(), interval };
    (TrialStatus::new(client, cfg, Policy::for_trial(&Trial::from_json(trial))), handle)
}

fn sink(interval: Duration) -> (TrialStatus, Handle) {
    sink_for(interval, &trial())
}

fn metric(name: &str, values: &[f64]) -> MetricStats {
    let text = |v: f64| v.to_string();
    let min = values.iter().copied().fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))));
    let max = values.iter().copied().fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    MetricStats {
        name: name.into(),
        count: values.len() as u64,
        latest_raw: values.last().map(|v| text(*v)).unwrap_or_default().as_str().into(),
        latest: values.last().copied(),
        min: min.map(|v| (v, text(v))),
        max: max.map(|v| (v, text(v))),
        step: None,
        line: values.len() as u64,
    }
}

/// A snapshot; an ended one says the training succeeded (see [`ended`] for others).
fn snapshot(generation: u64, phase: Phase, metrics: Vec<MetricStats>) -> Arc<Snapshot> {
    ended(generation, phase, metrics, Training::Succeeded)
}

fn ended(generation: u64, phase: Phase, metrics: Vec<MetricStats>, training: Training) -> Arc<Snapshot> {
    let mut s = Snapshot { metrics, phase, generation, ..Snapshot::default() };
    if phase == Phase::Ended {
        s.source.training = training;
    }
    Arc::new(s)
}

fn trial() -> Value {
    json!({
        "apiVersion": "kubeflow.org/v1beta1", "kind": "Trial",
        "metadata": {"name": "t1", "namespace": "ns", "resourceVersion": "7"},
        "spec": {"objective": {"type": "maximize", "objectiveMetricName": "accuracy",
                               "additionalMetricNames": ["loss"]}},
    })
}

fn respond(send: Responder, code: u16, body: &Value) {
    let response = Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap();
    send.send_response(response);
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason, "reason": reason, "code": code})
}

/// The next request, checked to be a merge patch of the Trial status; returns its body.
async fn expect_any_patch(handle: &mut Handle) -> (Value, Responder) {
    let (req, send) = handle.next_request().await.expect("a request");
    assert_eq!((req.method(), req.uri().path()), (&Method::PATCH, format!("{TRIAL_PATH}/status").as_str()));
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok());
    assert_eq!(content_type, Some("application/merge-patch+json"));
    let bytes = req.into_body().collect_bytes().await.unwrap();
    (serde_json::from_slice(&bytes).unwrap(), send)
}

/// The next request, checked to be a merge patch of observations in Katib's shape; returns its body.
async fn expect_patch(handle: &mut Handle) -> (Value, Responder) {
    let (body, send) = expect_any_patch(handle).await;
    check_katib_shape(&body).unwrap_or_else(|e| panic!("not Katib's shape: {e}: {body}"));
    (body, send)
}

/// No request within `within` (paused time: this passes instantly).
async fn expect_none(handle: &mut Handle, within: Duration) {
    if let Ok(Some((req, _))) = tokio::time::timeout(within, handle.next_request()).await {
        panic!("unexpected request {} {}", req.method(), req.uri());
    }
}

#[tokio::test(start_paused = true)]
async fn patches_the_requested_metrics_as_strings_with_merge_patch_once_per_interval() {
    let (sink, mut handle) = sink(Duration::from_secs(5));
    let (tx, rx) = watch::channel(snapshot(0, Phase::Starting, vec![]));
    let task = sink.spawn(rx);
    expect_none(&mut handle, Duration::from_secs(60)).await; // nothing observed yet: no request
    // Many snapshots within one interval: one patch, of the newest.
    for g in 1..=50 {
        tx.send_replace(snapshot(g, Phase::Reading, vec![metric("loss", &[0.5, 0.25]), metric("other", &[1.0])]));
    }
    let (body, send) = expect_patch(&mut handle).await;
    assert_eq!(
        body,
        json!({"status": {"observation": {"metrics": [
            {"name": "accuracy", "latest": "unavailable", "min": "unavailable", "max": "unavailable"},
            {"name": "loss", "latest": "0.25", "min": "0.25", "max": "0.5"},
        ]}}})
    );
    respond(send, 200, &trial());
    expect_none(&mut handle, Duration::from_secs(60)).await; // same generation: idle costs nothing
    // The end is written at once, without waiting for the tick.
    let t0 = Instant::now();
    tx.send_replace(snapshot(51, Phase::Ended, vec![metric("loss", &[0.5, 0.25, 0.125]), metric("accuracy", &[0.9])]));
    let (body, send) = expect_patch(&mut handle).await;
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!(body["status"]["observation"]["metrics"][0]["latest"], "0.9");
    assert_eq!(body["status"]["observation"]["metrics"][1]["min"], "0.125");
    respond(send, 200, &trial());
    assert_eq!(task.await.unwrap().unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_hour_of_ten_observations_a_second_costs_one_patch_per_interval() {
    let (sink, mut handle) = sink(Duration::from_secs(5));
    let (tx, rx) = watch::channel(snapshot(0, Phase::Starting, vec![]));
    let task = sink.spawn(rx);
    let server = tokio::spawn(async move {
        let mut patches = 0u64;
        while let Some((req, send)) = handle.next_request().await {
            assert_eq!(req.method(), Method::PATCH);
            patches += 1;
            respond(send, 200, &trial());
        }
        patches
    });
    let hour = 36_000u64;
    for g in 1..=hour {
        let accuracy = g as f64 / hour as f64;
        tx.send_replace(snapshot(g, Phase::Reading, vec![metric("accuracy", &[accuracy])]));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tx.send_replace(snapshot(hour + 1, Phase::Ended, vec![metric("accuracy", &[1.0])]));
    let sent = task.await.unwrap().unwrap();
    assert_eq!(server.await.unwrap(), sent);
    // Ticks at 5 s, 10 s, … 3595 s, then the end.
    assert_eq!(sent, 720, "one patch per 5 s tick (719 within the hour) and the final one");
}

#[tokio::test(start_paused = true)]
async fn conflict_retries() {
    let (sink, mut handle) = sink(Duration::from_secs(5));
    let (_tx, rx) = watch::channel(snapshot(1, Phase::Ended, vec![metric("accuracy", &[0.8])]));
    let task = sink.spawn(rx);
    let (_, send) = expect_patch(&mut handle).await;
    respond(send, 409, &status(409, "Conflict"));
    let (body, send) = expect_patch(&mut handle).await;
    assert_eq!(body["status"]["observation"]["metrics"][0]["latest"], "0.8");
    respond(send, 200, &trial());
    assert_eq!(task.await.unwrap().unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn failures_and_deliveries_are_counted_in_the_runs_sink_statistics() {
    let (sink, mut handle) = sink(Duration::from_secs(5));
    let stats = Arc::new(SinkStats::default());
    let mut snap = (*snapshot(1, Phase::Ended, vec![metric("accuracy", &[0.8])])).clone();
    snap.counters.observations = 7;
    let (_tx, rx) = watch::channel(Arc::new(snap));
    let task = sink.with_stats(stats.clone()).spawn(rx);
    let (_, send) = expect_patch(&mut handle).await;
    respond(send, 503, &status(503, "ServiceUnavailable"));
    let (_, send) = expect_patch(&mut handle).await;
    respond(send, 409, &status(409, "Conflict"));
    let (_, send) = expect_patch(&mut handle).await;
    respond(send, 200, &trial());
    assert_eq!(task.await.unwrap().unwrap(), 3);
    let counts = &stats.snapshot()[SINK];
    let errors: Vec<_> = counts.errors.iter().map(|(k, n)| (*k, *n)).collect();
    assert_eq!(errors, [("conflict", 1), ("unavailable", 1)]);
    assert_eq!(counts.observations, 7, "the accepted patch delivered the snapshot's observations");
}

#[tokio::test(start_paused = true)]
async fn forbidden_stops_the_live_writes_with_one_error_and_the_final_write_is_still_tried() {
    let (sink, mut handle) = sink(Duration::from_secs(5));
    let (tx, rx) = watch::channel(snapshot(1, Phase::Reading, vec![metric("accuracy", &[0.8])]));
    let task = sink.spawn(rx);
    let (_, send) = expect_patch(&mut handle).await;
    respond(send, 403, &status(403, "Forbidden"));
    // No live write after the refusal, however long training runs.
    tx.send_replace(snapshot(2, Phase::Reading, vec![metric("accuracy", &[0.85])]));
    expect_none(&mut handle, Duration::from_secs(600)).await;
    // The end: one more try.
    tx.send_replace(snapshot(3, Phase::Ended, vec![metric("accuracy", &[0.9])]));
    let (body, send) = expect_patch(&mut handle).await;
    assert_eq!(body["status"]["observation"]["metrics"][0]["latest"], "0.9");
    respond(send, 403, &status(403, "Forbidden"));
    let err = task.await.unwrap().unwrap_err();
    let text = err.to_string();
    assert!(text.contains("verb \"patch\" on kubeflow.org trials/status") && text.contains("403"), "{text}");
    expect_none(&mut handle, Duration::from_secs(600)).await;
}

/// A restarted API server answers 403 until its RBAC is loaded: after accepted writes a 403 is retried with
/// back-off for up to [`DENIED_PATIENCE`]; past that the live writes stop, and the final write is still tried.
#[tokio::test(start_paused = true)]
async fn forbidden_after_accepted_writes_is_retried_for_a_bounded_time_and_the_final_write_is_tried() {
    let (sink, mut handle) = sink(Duration::from_secs(5));
    let (tx, rx) = watch::channel(snapshot(1, Phase::Reading, vec![metric("accuracy", &[0.8])]));
    let task = sink.spawn(rx);
    let (_, send) = expect_patch(&mut handle).await;
    respond(send, 200, &trial());
    // The API server restarts: a few 403s, then it writes again.
    tx.send_replace(snapshot(2, Phase::Reading, vec![metric("accuracy", &[0.85])]));
    for _ in 0..3 {
        let (_, send) = expect_patch(&mut handle).await;
        respond(send, 403, &status(403, "Forbidden"));
    }
    let (body, send) = expect_patch(&mut handle).await;
    assert_eq!(body["status"]["observation"]["metrics"][0]["latest"], "0.85");
    respond(send, 200, &trial());
    // Refused for good: retried until the patience is spent, then nothing until the end.
    tx.send_replace(snapshot(3, Phase::Reading, vec![metric("accuracy", &[0.87])]));
    let started = Instant::now();
    loop {
        let (_, send) = expect_patch(&mut handle).await;
        respond(send, 403, &status(403, "Forbidden"));
        if started.elapsed() >= DENIED_PATIENCE {
            break;
        }
    }
    assert!(started.elapsed() < DENIED_PATIENCE + Duration::from_secs(30), "{:?}", started.elapsed());
    expect_none(&mut handle, Duration::from_secs(600)).await;
    tx.send_replace(snapshot(4, Phase::Ended, vec![metric("accuracy", &[0.9])]));
    let (body, send) = expect_patch(&mut handle).await;
    assert_eq!(body["status"]["observation"]["metrics"][0]["latest"], "0.9");
    respond(send, 200, &trial());
    assert!(task.await.unwrap().is_ok(), "the final values were written after all");
}

#[tokio::test(start_paused = true)]
async fn server_errors_back_off_exponentially_and_retry_with_the_newest_snapshot() {
    let (sink, mut handle) = sink(Duration::from_secs(5));
    let (tx, rx) = watch::channel(snapshot(1, Phase::Reading, vec![metric("accuracy", &[0.1])]));
    let task = sink.spawn(rx);
    let (_, send) = expect_patch(&mut handle).await;
    let mut last = Instant::now();
    respond(send, 503, &status(503, "ServiceUnavailable"));
    let mut gaps = Vec::new();
    for code in [500, 429, 502] {
        let (_, send) = expect_patch(&mut handle).await;
        gaps.push(last.elapsed());
        last = Instant::now();
        respond(send, code, &status(code, "Error"));
    }
    tx.send_replace(snapshot(2, Phase::Reading, vec![metric("accuracy", &[0.1, 0.2])]));
    let (body, send) = expect_patch(&mut handle).await;
    gaps.push(last.elapsed());
    assert_eq!(body["status"]["observation"]["metrics"][0]["latest"], "0.2", "the newest state is retried");
    respond(send, 200, &trial());
    let ms: Vec<u128> = gaps.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [500, 1000, 2000, 4000]);
    tx.send_replace(snapshot(3, Phase::Ended, vec![metric("accuracy", &[0.1, 0.2])]));
    let (_, send) = expect_patch(&mut handle).await;
    respond(send, 200, &trial());
    assert_eq!(task.await.unwrap().unwrap(), 6);
}

#[tokio::test(start_paused = true)]
async fn a_latest_objective_is_never_written_while_training_and_written_at_a_successful_end() {
    let mut t = trial();
    t["spec"]["objective"]["metricStrategies"] =
        json!([{"name": "accuracy", "value": "latest"}, {"name": "loss", "value": "min"}]);
    let (sink, mut handle) = sink_for(Duration::from_secs(5), &t);
    let (tx, rx) = watch::channel(snapshot(1, Phase::Reading, vec![metric("accuracy", &[0.7, 0.99, 0.5])]));
    let task = sink.spawn(rx);
    let (body, send) = expect_patch(&mut handle).await;
    let unavailable = json!({"name": "accuracy", "latest": "unavailable", "min": "unavailable", "max": "unavailable"});
    assert_eq!(body["status"]["observation"]["metrics"][0], unavailable, "an interim latest could cross the goal");
    respond(send, 200, &t);
    tx.send_replace(snapshot(2, Phase::Ended, vec![metric("accuracy", &[0.7, 0.99, 0.5, 0.8])]));
    let (body, send) = expect_patch(&mut handle).await;
    let written = json!({"name": "accuracy", "latest": "0.8", "min": "0.5", "max": "0.99"});
    assert_eq!(body["status"]["observation"]["metrics"][0], written);
    respond(send, 200, &t);
    assert_eq!(task.await.unwrap().unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_min_or_max_objective_is_written_while_training() {
    let (sink, mut handle) = sink(Duration::from_secs(5));
    let (_tx, rx) = watch::channel(snapshot(1, Phase::Reading, vec![metric("accuracy", &[0.7, 0.9])]));
    let task = sink.spawn(rx);
    let (body, send) = expect_patch(&mut handle).await;
    assert_eq!(body["status"]["observation"]["metrics"][0]["max"], "0.9", "maximize: max, a value really reached");
    respond(send, 200, &trial());
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn failed_training_clears_what_was_written_and_writes_nothing_when_nothing_was() {
    let (sink, mut handle) = sink(Duration::from_secs(5));
    let (tx, rx) = watch::channel(snapshot(1, Phase::Reading, vec![metric("accuracy", &[0.9])]));
    let task = sink.spawn(rx);
    let (_, send) = expect_patch(&mut handle).await;
    respond(send, 200, &trial());
    tx.send_replace(ended(2, Phase::Ended, vec![metric("accuracy", &[0.9, 0.95])], Training::Failed));
    let (body, send) = expect_any_patch(&mut handle).await;
    assert_eq!(body, json!({"status": {"observation": null}}), "Katib never reads a failed trial's observation");
    respond(send, 200, &trial());
    assert_eq!(task.await.unwrap().unwrap(), 2);

    let (quiet, mut handle) = sink_for(Duration::from_secs(3600), &trial());
    let (_tx, rx) = watch::channel(ended(1, Phase::Ended, vec![metric("accuracy", &[0.9])], Training::Failed));
    let task = quiet.spawn(rx);
    assert_eq!(task.await.unwrap().unwrap(), 0);
    expect_none(&mut handle, Duration::from_secs(60)).await;
}

#[tokio::test(start_paused = true)]
async fn the_trials_strategies_name_the_metrics_written() {
    let mut t = trial();
    t["spec"]["objective"]["metricStrategies"] = json!([{"name": "accuracy", "value": "max"},
        {"name": "val_loss", "value": "min"}]);
    let (sink, mut handle) = sink_for(Duration::from_secs(5), &t);
    let (_tx, rx) = watch::channel(snapshot(1, Phase::Ended, vec![metric("val_loss", &[0.3, 0.2])]));
    let task = sink.spawn(rx);
    let (body, send) = expect_patch(&mut handle).await;
    let names: Vec<&str> = body["status"]["observation"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["accuracy", "loss", "val_loss"]);
    assert_eq!(body["status"]["observation"]["metrics"][2]["min"], "0.2");
    respond(send, 200, &t);
    assert_eq!(task.await.unwrap().unwrap(), 1);
}

#[test]
fn the_shape_check_rejects_numbers_and_duplicates() {
    let ok = observation_patch(&["a".to_string()], &[metric("a", &[1.0])], None);
    assert!(check_katib_shape(&ok).is_ok());
    let number = json!({"status": {"observation": {"metrics": [{"name": "a", "latest": 1, "min": "1", "max": "1"}]}}});
    assert!(check_katib_shape(&number).is_err());
    let m = json!({"name": "a", "latest": "1", "min": "1", "max": "1"});
    assert!(check_katib_shape(&json!({"status": {"observation": {"metrics": [m, m]}}})).is_err());
}
