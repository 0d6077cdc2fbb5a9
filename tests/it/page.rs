//! The live page (`/` and `/api/series`) as a user meets it: the JSON endpoint of a following run over real
//! HTTP (cursors, no point twice, bounded answers, 400 for bad cursors), and the page itself in a real browser –
//! Debian's Chromium, headless, driven over the Chrome DevTools protocol – while lines are appended to the log,
//! and after the run ended.
//!
//! The browser tests need `chromium` (`apt-get install chromium`, which `.ci/run` does): without it they skip
//! with a message, and with `CI` set they fail. Their screenshots go under the tests' output directory
//! (`$CARGO_TARGET_TMPDIR/live-page/`); with `UPDATE_DOCS=1` the example log's are also written to
//! `docs/live.png` and `docs/live-dark.png`. The logs are written by each test, so the values it expects sit
//! beside them.

use std::collections::HashSet;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::support::{self, free_addr, get, wait_for};

/// The longest an appended value may take to show on the page.
const VISIBLE_WITHIN: Duration = Duration::from_secs(2);

/// A running trialtail, killed when dropped; its stderr in a file.
struct Trialtail {
    child: Child,
    addr: SocketAddr,
    stderr: tempfile::NamedTempFile,
}

impl Trialtail {
    /// `trialtail run ARGS --listen ADDR`, once `/readyz` answers 200.
    fn start(args: &[&str]) -> Trialtail {
        let addr = free_addr();
        let stderr = tempfile::NamedTempFile::new().expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_trialtail"))
            .arg("run")
            .args(args)
            .args(["--listen", &addr.to_string()])
            .env("TRIALTAIL_LOG", "info")
            .env_remove("KATIB_TRIAL_NAME")
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr.reopen().expect("reopen stderr file"))
            .spawn()
            .expect("spawn trialtail");
        let mut t = Trialtail { child, addr, stderr };
        wait_for("trialtail's /readyz", || {
            if let Ok(Some(status)) = t.child.try_wait() {
                panic!("trialtail exited with {status}: {}", t.stderr());
            }
            get(addr, "/readyz", None).ok().filter(|r| r.status == 200)
        });
        t
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// `GET /api/series?QUERY`: the status and the body as JSON.
    fn series(&self, query: &str) -> (u16, Value, usize) {
        let r = get(self.addr, &format!("/api/series?{query}"), None).expect("GET /api/series");
        let body = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.body));
        (r.status, body, r.body.len())
    }
}

impl Drop for Trialtail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).create(true).open(path).expect("open the log");
    f.write_all(text.as_bytes()).expect("append to the log");
}

/// Debian's Chromium, headless, showing one page and driven over the DevTools protocol.
struct Browser {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    id: u64,
    _chromium: Chromium,
}

/// The browser's process and profile: asked to quit (SIGTERM, so its helper processes go too), then killed.
struct Chromium {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Chromium {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` from Chromium's DevTools HTTP server (HTTP/1.1 only; it keeps the connection open, so the body is
/// read by its length).
fn devtools_get(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::{BufRead, BufReader, Read};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut r = BufReader::new(s);
    let (mut line, mut len) = (String::new(), None);
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((_, v)) = l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
            len = v.trim().parse::<usize>().ok();
        }
    }
    let mut body = vec![0; len?];
    r.read_exact(&mut body).ok()?;
    String::from_utf8(body).ok()
}

impl Browser {
    /// Opens `url`; `None` when Chromium is missing outside CI.
    fn open(url: &str) -> Option<Browser> {
        let chromium = support::tool_of("chromium", "apt-get install chromium")?;
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                "--window-size=1280,900",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromium");
        let port_file = profile.path().join("DevToolsActivePort");
        let chromium = Chromium { child, _profile: profile };
        // Chromium writes the port it took (and the browser's path) into the profile.
        let port: u16 = wait_for("Chromium's DevTools port", || {
            std::fs::read_to_string(&port_file).ok()?.lines().next()?.trim().parse().ok()
        });
        let devtools = SocketAddr::from(([127, 0, 0, 1], port));
        let target = wait_for("the page's DevTools target", || {
            let list: Value = serde_json::from_str(&devtools_get(devtools, "/json/list")?).ok()?;
            let page = list.as_array()?.iter().find(|t| t["type"] == "page" && t["url"] == url)?;
            page["webSocketDebuggerUrl"].as_str().map(str::to_string)
        });
        let (ws, _) = tungstenite::connect(target.as_str()).expect("connect to the page's DevTools");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(support::PATIENCE)).expect("read timeout");
        }
        Some(Browser { ws, id: 0, _chromium: chromium })
    }

    /// One DevTools command; its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.id += 1;
        let request = json!({"id": self.id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(request)).expect("send to DevTools");
        loop {
            let Message::Text(text) = self.ws.read().expect("read from DevTools") else { continue };
            let reply: Value = serde_json::from_str(text.as_str()).expect("DevTools sends JSON");
            if reply["id"] == self.id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// The value of a script expression in the page (a promise is awaited).
    fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true, "awaitPromise": true}));
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// What the page shows: panels, their headings, each metric's latest value as text, the status line, and
    /// the painted pixels of the canvases; `null` while the page is not loaded yet.
    fn shown(&mut self) -> Value {
        self.eval(
            r#"(() => {
                if (!document.getElementById('status')) return null;
                const all = (q) => [...document.querySelectorAll(q)];
                const painted = all('canvas').map((c) => {
                    if (!c.width || !c.height) return 0;
                    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    let n = 0;
                    for (let i = 3; i < d.length; i += 4) if (d[i]) n++;
                    return n;
                });
                return {
                    panels: all('main > section.panel').length,
                    headings: all('main > section.panel h2').map((h) => h.textContent),
                    latest: Object.fromEntries(all('li[data-metric]').map((li) =>
                        [li.dataset.metric, li.querySelector('.latest').textContent])),
                    gaps: all('main > section.panel').filter((s) => s.querySelector('.bad-item')).length,
                    status: document.getElementById('status').textContent,
                    header: document.getElementById('labels').textContent,
                    painted,
                };
            })()"#,
        )
    }

    /// Polls [`Browser::shown`] until `cond` holds; panics naming `what` after `within`.
    fn wait_shown(&mut self, what: &str, within: Duration, cond: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let shown = self.shown();
            if cond(&shown) {
                return shown;
            }
            assert!(start.elapsed() < within, "the page did not show {what} within {within:?}: {shown}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// After the next two frames (what was drawn is painted).
    fn settle(&mut self) {
        self.eval("new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))");
    }

    /// A PNG of the page at `path`.
    fn screenshot(&mut self, path: &Path) {
        self.settle();
        let r = self.call("Page.captureScreenshot", json!({"format": "png", "captureBeyondViewport": true}));
        let png = base64::engine::general_purpose::STANDARD.decode(r["data"].as_str().unwrap_or("")).expect("base64");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::create_dir_all(path.parent().expect("a directory")).expect("create the screenshot directory");
        std::fs::write(path, png).expect("write the screenshot");
        eprintln!("screenshot: {}", path.display());
    }

    /// Shows the page as a dark (`true`) or light colour scheme would.
    fn dark(&mut self, dark: bool) {
        let value = if dark { "dark" } else { "light" };
        self.call(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": value}]}),
        );
        self.settle();
    }
}

/// Where a test's screenshots go.
fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("live-page")
}

#[test]
fn the_page_follows_a_growing_log_and_shows_each_appended_value_within_2s() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("train.log");
    append(&log, "epoch 1 loss=0.9 val_loss=1.1 accuracy=0.41\nepoch 2 loss=0.7 val_loss=0.95 accuracy=0.55\n");
    let path = log.to_str().expect("utf-8 path");
    let labels = ["--trial", "page-trial-1", "--experiment", "page-exp", "--pod", "page-pod-0"];
    let mut args = vec!["--follow", path, "--linger", "0"];
    args.extend(labels);
    let t = Trialtail::start(&args);
    let Some(mut browser) = Browser::open(&t.url()) else { return };

    let first = browser.wait_shown("the first two panels", support::PATIENCE, |s| {
        s["panels"] == 2 && s["latest"]["accuracy"] == "0.55"
    });
    assert_eq!(first["headings"], json!(["loss", "accuracy"]), "loss and val_loss share a panel, as in the plot");
    assert_eq!(first["latest"]["val_loss"], "0.95");
    assert!(first["header"].as_str().unwrap().contains("trial page-trial-1"), "{first}");
    assert!(first["status"].as_str().unwrap().starts_with("Live"), "{first}");

    let mut latencies = Vec::new();
    for i in 3..23 {
        let value = format!("{:.4}", 0.7 / f64::from(i));
        append(&log, &format!("epoch {i} loss={value} val_loss=0.9 accuracy=0.6\n"));
        let appended = Instant::now();
        browser.wait_shown(&format!("loss {value}"), VISIBLE_WITHIN, |s| s["latest"]["loss"] == value.as_str());
        latencies.push(appended.elapsed());
        std::thread::sleep(Duration::from_millis(30));
    }
    latencies.sort();
    eprintln!(
        "append → visible over {} appends: median {:?}, max {:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );

    // A new metric brings its panel; a non-finite value is a gap with its legend item.
    let appended = Instant::now();
    append(&log, "grad_norm=1.5\ngrad_norm=0.5\ngrad_norm=inf\n");
    let last = browser.wait_shown("the grad_norm panel", VISIBLE_WITHIN, |s| {
        s["panels"] == 3 && s["latest"]["grad_norm"] == "inf" && s["gaps"] == 1
    });
    eprintln!("a new metric's panel appeared after {:?}", appended.elapsed());
    assert_eq!(last["headings"], json!(["loss", "accuracy", "grad_norm"]));
    browser.settle();
    let painted = browser.shown()["painted"].clone();
    assert!(painted.as_array().unwrap().iter().all(|n| n.as_u64().unwrap() > 1000), "every panel drawn: {painted}");
    browser.screenshot(&shots().join("following.png"));
}

#[test]
fn the_page_of_an_ended_run_says_so_while_trialtail_lingers_and_after_it_exits() {
    let example = crate::example("keras_fit_verbose2.log");
    let labels = ["--trial", "mnist-keras-1", "--experiment", "mnist-keras", "--pod", "mnist-keras-1-worker-0"];
    let mut args = vec!["--preset", "keras", example.to_str().expect("utf-8 path"), "--linger", "300s"];
    args.extend(labels);
    let mut t = Trialtail::start(&args);
    let Some(mut browser) = Browser::open(&t.url()) else { return };

    let ended = browser.wait_shown("the ended run", support::PATIENCE, |s| {
        s["status"].as_str().unwrap_or("").starts_with("The run has ended") && s["panels"] == 3
    });
    // As `trialtail plot --preset keras` groups them (docs/keras.png).
    assert_eq!(ended["headings"], json!(["accuracy", "loss", "sparse_top_k_categorical_accuracy"]));
    assert_eq!(ended["latest"]["val_loss"], "0.3358");
    assert!(ended["status"].as_str().unwrap().contains("300 s after the end (--linger)"), "{ended}");
    browser.settle();
    let painted = browser.shown()["painted"].clone();
    assert!(painted.as_array().unwrap().iter().all(|n| n.as_u64().unwrap() > 1000), "every panel drawn: {painted}");
    let (light, dark) = (shots().join("ended.png"), shots().join("ended-dark.png"));
    browser.screenshot(&light);
    browser.dark(true);
    browser.screenshot(&dark);
    browser.dark(false);
    if std::env::var_os("UPDATE_DOCS").is_some() {
        let docs = crate::root().join("docs");
        std::fs::copy(&light, docs.join("live.png")).expect("write docs/live.png");
        std::fs::copy(&dark, docs.join("live-dark.png")).expect("write docs/live-dark.png");
    }

    assert!(t.child.try_wait().expect("try_wait").is_none(), "trialtail lingers: {}", t.stderr());
    t.child.kill().expect("stop trialtail");
    let _ = t.child.wait();
    let gone = browser.wait_shown("that trialtail exited", support::PATIENCE, |s| {
        s["status"].as_str().unwrap_or("").starts_with("trialtail has exited")
    });
    assert_eq!(gone["panels"], 3, "the curves stay");
}

/// Every point of an answer as `(metric, index)`.
fn points(answer: &Value) -> Vec<(String, u64, Value)> {
    let mut out = Vec::new();
    for m in answer["metrics"].as_array().expect("metrics") {
        for p in m["points"].as_array().expect("points") {
            out.push((m["name"].as_str().unwrap().to_string(), p[0].as_u64().unwrap(), p[3].clone()));
        }
    }
    out
}

/// Waits until `/metrics` counts `n` observations.
fn wait_observed(t: &Trialtail, n: u64) {
    let want = format!("\ntrialtail_observations_total {n}\n");
    wait_for(&format!("{n} observations"), || get(t.addr, "/metrics", None).ok().filter(|r| r.body.contains(&want)));
}

#[test]
fn the_series_endpoint_of_a_following_run_pages_by_cursor_without_duplicates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("train.log");
    append(&log, "");
    let t = Trialtail::start(&["--follow", log.to_str().expect("utf-8 path"), "--linger", "0"]);
    let (status, first, _) = t.series("");
    assert_eq!((status, first["metrics"].as_array().unwrap().len()), (200, 0));
    let mut cursor = first["cursor"].as_str().unwrap().to_string();
    let mut seen = HashSet::new();
    let mut take = |answer: &Value| {
        for (metric, index, _) in points(answer) {
            assert!(seen.insert((metric.clone(), index)), "{metric} #{index} sent twice");
        }
    };

    // 12 metrics of 1000 points: more than an answer holds, so the first answer is cut and says `more`.
    let mut text = String::new();
    for i in 0..1000 {
        for m in 0..12 {
            text.push_str(&format!("m{m}={i}\n"));
        }
    }
    append(&log, &text);
    wait_observed(&t, 12_000);
    let (_, cut, bytes) = t.series(&format!("after={cursor}"));
    assert_eq!((points(&cut).len(), cut["more"].as_bool()), (10_000, Some(true)));
    assert!(bytes < 1 << 20, "an answer is bounded: {bytes} bytes");
    take(&cut);
    let (_, rest, _) = t.series(&format!("after={}", cut["cursor"].as_str().unwrap()));
    assert_eq!(
        (points(&rest).len(), rest["more"].as_bool(), rest["observations"].as_u64()),
        (2000, Some(false), Some(12_000))
    );
    take(&rest);
    cursor = rest["cursor"].as_str().unwrap().to_string();

    // Bursts while a poller follows the cursors, waiting for news: every kept point arrives once.
    let mut written = 12_000u64;
    let mut answers = 0;
    for burst in 0..5 {
        let mut text = String::new();
        for i in 0..4000u64 {
            let n = burst * 4000 + i;
            text.push_str(&format!("a={n}\nb={n}\nc={n}\n"));
        }
        append(&log, &text);
        written += 12_000;
        loop {
            let (status, a, bytes) = t.series(&format!("after={cursor}&wait=10"));
            assert_eq!(status, 200, "{a}");
            assert!(bytes < 1 << 20, "an answer is bounded: {bytes} bytes");
            answers += 1;
            take(&a);
            cursor = a["cursor"].as_str().unwrap().to_string();
            if a["observations"] == written && a["more"] == false {
                break;
            }
        }
    }
    assert!(answers < 200, "{answers} answers");
    // 20000 observations per metric: the history kept every 32nd (its stride doubled past 1024 points). A new
    // page gets it all, in answers of at most 10000 points.
    let (mut a_points, mut after, mut a) = (0, String::new(), Value::Null);
    loop {
        let (_, whole, _) = t.series(&after);
        for m in whole["metrics"].as_array().unwrap().iter().filter(|m| m["name"] == "a") {
            a_points += m["points"].as_array().unwrap().len();
            a = m.clone();
        }
        after = format!("after={}", whole["cursor"].as_str().unwrap());
        if whole["more"] == false {
            break;
        }
    }
    assert_eq!((a["count"].as_u64(), a["stride"].as_u64()), (Some(20_000), Some(32)));
    assert_eq!(a_points, 20_000 / 32);
    assert_eq!(a["latest_raw"], "19999");
    assert!(seen.contains(&("c".to_string(), 19_968)), "the last kept point reached the poller");

    // A cursor of another run, one ahead of this run, nonsense and a bad wait: 400, each saying why.
    let (run, rest) = cursor.split_once('.').expect("RUN.SEQ.META");
    let other = format!("{}.{rest}", if run == "1" { "2" } else { "1" });
    let (seq, meta) = rest.split_once('.').expect("SEQ.META");
    let ahead = format!("{run}.{}.{meta}", seq.parse::<u64>().unwrap() + 1);
    for (query, says) in [
        (format!("after={other}"), "another run"),
        (format!("after={ahead}"), "ahead of this run"),
        ("after=12".to_string(), "not a cursor"),
        (format!("after={cursor}&wait=60"), "give seconds from 0 to 30"),
    ] {
        let (status, body, _) = t.series(&query);
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["error"].as_str().unwrap_or("").contains(says), "{query}: {body}");
    }
    // Nothing new: a waiting poll answers after its wait with the same cursor and no metrics.
    let started = Instant::now();
    let (_, idle, _) = t.series(&format!("after={cursor}&wait=0.3"));
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!((idle["cursor"].as_str(), idle["metrics"].as_array().unwrap().len()), (Some(cursor.as_str()), 0));
}

#[test]
fn the_parameters_a_log_prints_before_training_reach_the_series_endpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("train.log");
    append(&log, "Namespace(lr=0.01, batch_size=64)\n");
    let t = Trialtail::start(&["--follow", log.to_str().expect("utf-8 path"), "--linger", "0"]);
    append(&log, "epoch 1: loss=0.9\nepoch 2: loss=0.7\n");
    let answer = wait_for("the parameters on /api/series", || {
        let (status, answer, _) = t.series("");
        assert_eq!(status, 200);
        (answer["parameters"].as_array().is_some_and(|p| !p.is_empty()) && answer["metrics"].as_array()?.len() == 1)
            .then_some(answer)
    });
    assert_eq!(
        answer["parameters"],
        json!([{"name": "lr", "value": "0.01"}, {"name": "batch_size", "value": "64"}]),
        "{answer}"
    );
    assert_eq!(answer["metrics"][0]["name"], "loss", "{answer}");
}
