//! `tower_test` scenarios for finding the own pod and its Trial: every GET the owner walk makes is checked.

use hyper::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

use super::*;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn client() -> (kube::Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "ns"), handle)
}

fn owner(api_version: &str, kind: &str, name: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": format!("uid-{name}"), "controller": true})
}

fn pod(labels: Value, owners: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p1", "namespace": "ns", "labels": labels, "ownerReferences": owners},
    }))
    .unwrap()
}

/// Serves `(path, status, body)` in order, asserting each request is a GET of that path.
fn serve(mut handle: Handle, script: Vec<(&'static str, u16, Value)>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for (path, code, body) in script {
            let (req, send) = handle.next_request().await.expect("a request");
            assert_eq!((req.method(), req.uri().path()), (&Method::GET, path));
            let response = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap();
            send.send_response(response);
        }
        // No further request.
        assert!(handle.next_request().await.is_none(), "an unexpected request");
    })
}

#[test]
fn identity_from_the_downward_api_then_the_namespace_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("namespace");
    std::fs::write(&file, "from-file\n").unwrap();
    let env = |k: &str| match k {
        "POD_NAME" => Some("p1".to_string()),
        "POD_NAMESPACE" => Some("ns".to_string()),
        _ => None,
    };
    assert_eq!(pod_identity(env, &file).unwrap(), PodIdentity { name: Some("p1".into()), namespace: "ns".into() });
    let none = |_: &str| None;
    assert_eq!(pod_identity(none, &file).unwrap(), PodIdentity { name: None, namespace: "from-file".into() });
    assert!(matches!(pod_identity(none, &dir.path().join("missing")), Err(KubeError::NoNamespace)));
}

#[test]
fn flag_then_env_then_label_without_requests() {
    let p = pod(json!({TRIAL_LABEL: "from-label"}), json!([]));
    let found = |flag, env, pod| trial_without_requests(flag, env, pod).map(|f| (f.name, f.via));
    assert_eq!(found(Some("f"), Some("e"), Some(&p)), Some(("f".into(), "flag")));
    assert_eq!(found(None, Some("e"), Some(&p)), Some(("e".into(), "env")));
    assert_eq!(found(None, Some(""), Some(&p)), Some(("from-label".into(), "label")));
    assert_eq!(found(None, None, None), None);
}

#[tokio::test]
async fn owner_walk_pod_job_trial() {
    let (client, handle) = client();
    let job = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "t1", "namespace": "ns",
                     "ownerReferences": [owner("kubeflow.org/v1beta1", "Trial", "t1")]}});
    let server = serve(handle, vec![("/apis/batch/v1/namespaces/ns/jobs/t1", 200, job)]);
    let p = pod(json!({}), json!([owner("batch/v1", "Job", "t1")]));
    let found = find_trial(&client, None, None, Some(&p), "ns").await;
    assert_eq!(found, Some(FoundTrial { name: "t1".into(), via: "owner" }));
    drop(client);
    server.await.unwrap();
}

#[tokio::test]
async fn owner_walk_pod_pytorchjob_trial() {
    let (client, handle) = client();
    let job = json!({"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
        "metadata": {"name": "pt", "namespace": "ns",
                     "ownerReferences": [owner("kubeflow.org/v1beta1", "Trial", "t2")]}});
    let server = serve(handle, vec![("/apis/kubeflow.org/v1/namespaces/ns/pytorchjobs/pt", 200, job)]);
    let p = pod(json!({}), json!([owner("kubeflow.org/v1", "PyTorchJob", "pt")]));
    assert_eq!(trial_from_owners(&client, &p, "ns").await.as_deref(), Some("t2"));
    drop(client);
    server.await.unwrap();
}

#[tokio::test]
async fn owner_walk_ends_without_a_trial_on_a_plain_job_or_a_forbidden_owner() {
    let (client, handle) = client();
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "ns"}});
    let forbidden =
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403, "reason": "Forbidden"});
    let server = serve(
        handle,
        vec![
            ("/apis/batch/v1/namespaces/ns/jobs/j", 200, job),
            ("/apis/batch/v1/namespaces/ns/jobs/j", 403, forbidden),
        ],
    );
    let p = pod(json!({}), json!([owner("batch/v1", "Job", "j")]));
    assert_eq!(trial_from_owners(&client, &p, "ns").await, None);
    assert_eq!(trial_from_owners(&client, &p, "ns").await, None);
    let orphan = pod(json!({}), json!([]));
    assert_eq!(find_trial(&client, None, None, Some(&orphan), "ns").await, None);
    drop(client);
    server.await.unwrap();
}

#[tokio::test]
async fn get_pod_reads_the_own_pod() {
    let (client, handle) = client();
    let body = serde_json::to_value(pod(json!({TRIAL_LABEL: "t3"}), json!([]))).unwrap();
    let server = serve(handle, vec![("/api/v1/namespaces/ns/pods/p1", 200, body)]);
    let p = get_pod(&client, "p1", "ns").await.unwrap();
    assert_eq!(find_trial(&client, None, None, Some(&p), "ns").await.map(|f| f.via), Some("label"));
    drop(client);
    server.await.unwrap();
}
