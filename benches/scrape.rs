//! The Prometheus endpoint's speed: scrape cost with 100 metrics, and the latency from a line written until
//! `/metrics` shows it, for trialtail and for mtail (Debian's 3.0) measured in the same run.
//!
//! `cargo bench --bench scrape`:
//! 1. encode cost: `Exposition::encode` of a 100-metric snapshot, in process, text and OpenMetrics (the
//!    uncached cost the server pays once per new snapshot);
//! 2. scrape throughput: `trialtail run - --listen` fed 100 metrics through a pipe it keeps reading; keep-alive
//!    HTTP/1.1 clients on loopback `GET /metrics` for a few seconds (requests/s, per client count);
//! 3. latency: a line `probe=N` is written, then `/metrics` is polled back to back until it shows N (p50, p99
//!    over `BENCH_PROBES`, default 200, probes 20 ms apart). trialtail reads a pipe (`trialtail run -`), what a
//!    wrapped command's output is (`benches/follow.rs` times a followed file). mtail tails a file it
//!    polls: measured with its default poll and with `--poll_interval 1ms`, when `/usr/bin/mtail` exists;
//! 4. idle cost: CPU time (utime + stime from /proc) of each process over 5 s with nothing to read.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use trialtail::aggregate::MetricStats;
use trialtail::sink::prometheus::{Exposition, ExpositionFormat, Labels};
use trialtail::sink::stats::SinkStats;
use trialtail::snapshot::{Phase, Snapshot};

const METRICS: usize = 100;

fn free_addr() -> SocketAddr {
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind").port();
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A keep-alive HTTP/1.1 client for one server.
struct Client {
    reader: BufReader<TcpStream>,
    request: Vec<u8>,
    body: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes();
        Ok(Client { reader: BufReader::new(s), request, body: Vec::new() })
    }

    /// One `GET /metrics`; the body is in `self.body`.
    fn get(&mut self) -> std::io::Result<&[u8]> {
        self.reader.get_mut().write_all(&self.request)?;
        let (mut len, mut chunked, mut line) = (None, false, String::new());
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse::<usize>().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked") {
                    chunked = true;
                }
            }
        }
        self.body.clear();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let n = usize::from_str_radix(line.trim(), 16).map_err(|_| std::io::ErrorKind::InvalidData)?;
                let start = self.body.len();
                self.body.resize(start + n + 2, 0);
                self.reader.read_exact(&mut self.body[start..])?;
                self.body.truncate(start + n);
                if n == 0 {
                    break;
                }
            }
        } else {
            self.body.resize(len.ok_or(std::io::ErrorKind::InvalidData)?, 0);
            self.reader.read_exact(&mut self.body)?;
        }
        Ok(&self.body)
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `/metrics` at `listen` shows all [`METRICS`] metrics.
fn wait_serving(listen: SocketAddr) {
    wait_for("100 metrics on /metrics", || {
        Client::connect(listen).and_then(|mut c| c.get().map(|b| contains(b, b"metric_099"))).unwrap_or(false)
    });
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

/// Share of one core used by `pid` over `secs` seconds (clock ticks are 1/100 s).
fn idle_cpu(pid: u32, secs: u64) -> f64 {
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(secs));
    (cpu_ticks(pid) - before) as f64 / (100.0 * secs as f64)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn encode_cost() {
    let metrics: Vec<MetricStats> = (0..METRICS)
        .map(|i| MetricStats {
            name: format!("metric_{i:03}"),
            count: 1000,
            latest_raw: "0.123456".into(),
            latest: Some(0.123456),
            min: Some((0.001, "0.001".into())),
            max: Some((0.99, "0.99".into())),
            step: Some(1000),
            line: 1,
        })
        .collect();
    let snap = Snapshot { metrics, phase: Phase::Reading, generation: 1, ..Default::default() };
    let labels = Labels { trial: Some("trial-1".into()), namespace: Some("ns".into()), ..Default::default() };
    let exposition = Exposition::new(&labels, Arc::new(SinkStats::default()));
    for format in [ExpositionFormat::Text, ExpositionFormat::OpenMetrics] {
        let mut out = String::new();
        let rounds = 5000;
        let start = Instant::now();
        for _ in 0..rounds {
            out.clear();
            exposition.encode(&snap, format, &mut out);
        }
        let per = start.elapsed() / rounds;
        println!("encode {format:?}, {METRICS} metrics: {per:?} per scrape ({} bytes)", out.len());
    }
    client_library_cost(&snap, &labels, &exposition);
}

/// The same snapshot as the Prometheus project's client library encodes it: a per-scrape `Collector` over the
/// published snapshot (the shape the library offers for exporters), OpenMetrics, the library's only text format.
#[derive(Debug)]
struct ClientLibrary {
    snap: Arc<Snapshot>,
    identity: Vec<(String, String)>,
}

impl prometheus_client::collector::Collector for ClientLibrary {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::MetricType;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        type Get = fn(&MetricStats) -> Option<f64>;
        let families: [(&str, &str, Get); 4] = [
            ("trialtail_metric_latest", "Latest value.", |m| m.latest),
            ("trialtail_metric_min", "Smallest value.", |m| m.min.as_ref().map(|(v, _)| *v)),
            ("trialtail_metric_max", "Largest value.", |m| m.max.as_ref().map(|(v, _)| *v)),
            ("trialtail_metric_step", "Step.", |m| m.step.map(|s| s as f64)),
        ];
        let labels = |m: &MetricStats| {
            let mut l = vec![("metric".to_string(), m.name.clone())];
            l.extend(self.identity.iter().cloned());
            l
        };
        for (name, help, get) in families {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for m in &self.snap.metrics {
                if let Some(v) = get(m) {
                    ConstGauge::new(v).encode(family.encode_family(&labels(m))?)?;
                }
            }
        }
        let mut family =
            encoder.encode_descriptor("trialtail_metric_observations", "Observations.", None, MetricType::Counter)?;
        for m in &self.snap.metrics {
            ConstCounter::new(m.count).encode(family.encode_family(&labels(m))?)?;
        }
        Ok(())
    }
}

/// Encode cost of the per-metric families through `prometheus-client` against the hand-written encoder, same
/// snapshot, same process, OpenMetrics both.
fn client_library_cost(snap: &Snapshot, labels: &Labels, exposition: &Exposition) {
    let identity = labels.pairs().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(ClientLibrary { snap: Arc::new(snap.clone()), identity }));
    let rounds = 5000;
    let mut out = String::new();
    let start = Instant::now();
    for _ in 0..rounds {
        out.clear();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
    }
    let library = start.elapsed() / rounds;
    let library_bytes = out.len();
    let start = Instant::now();
    for _ in 0..rounds {
        out.clear();
        exposition.encode(snap, ExpositionFormat::OpenMetrics, &mut out);
    }
    let ours = start.elapsed() / rounds;
    println!(
        "encode OpenMetrics, {METRICS} metrics: prometheus-client {library:?} per scrape ({library_bytes} bytes, \
         per-metric families only), hand-written {ours:?} ({} bytes, every family): ratio {:.2}",
        out.len(),
        library.as_secs_f64() / ours.as_secs_f64()
    );
}

fn spawn_trialtail(listen: SocketAddr) -> Child {
    Command::new(env!("CARGO_BIN_EXE_trialtail"))
        .args(["run", "-", "--listen", &listen.to_string(), "--linger", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn trialtail")
}

fn throughput(addr: SocketAddr, clients: usize, secs: u64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, done) = (stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(addr).expect("connect");
                while !stop.load(Ordering::Relaxed) {
                    c.get().expect("scrape");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("client thread");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Latencies of `probes` lines: `write(i)` writes the line, then `/metrics` is polled until it has `seen(i)`.
fn latency(addr: SocketAddr, probes: u64, mut write: impl FnMut(u64), seen: impl Fn(u64) -> Vec<u8>) -> Vec<Duration> {
    let mut c = Client::connect(addr).expect("connect");
    let mut out = Vec::new();
    for i in 1..=probes {
        let needle = seen(i);
        let start = Instant::now();
        write(i);
        loop {
            if contains(c.get().expect("scrape"), &needle) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "probe {i} never showed up");
        }
        out.push(start.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    out.sort();
    out
}

fn report(name: &str, lat: &[Duration], idle: f64) {
    println!(
        "latency {name}: p50 {:?}, p99 {:?}, max {:?}; idle CPU {:.3} % of a core",
        percentile(lat, 0.5),
        percentile(lat, 0.99),
        lat[lat.len() - 1],
        idle * 100.0
    );
}

fn bench_trialtail(probes: u64) {
    let listen = free_addr();
    let mut child = spawn_trialtail(listen);
    let mut stdin = child.stdin.take().expect("stdin");
    let mut feed = String::new();
    for i in 0..METRICS {
        feed.push_str(&format!("step={i} metric_{i:03}=0.{i:03}\n"));
    }
    stdin.write_all(feed.as_bytes()).expect("feed");
    stdin.flush().expect("flush");
    wait_serving(listen);
    for clients in [1, 2, 4] {
        let rps = throughput(listen, clients, 3);
        println!("scrape trialtail, {METRICS} metrics, {clients} keep-alive client(s): {rps:.0} requests/s");
    }
    let lat = latency(
        listen,
        probes,
        |i| {
            stdin.write_all(format!("probe={i}\n").as_bytes()).expect("write probe");
        },
        |i| format!("trialtail_metric_latest{{metric=\"probe\"}} {i}\n").into_bytes(),
    );
    let idle = idle_cpu(child.id(), 5);
    report("trialtail (stdin pipe)", &lat, idle);
    drop(stdin);
    let _ = child.wait();
}

fn bench_mtail(probes: u64, poll: Option<&str>) {
    let Some(mtail) = ["/usr/bin/mtail", "/usr/local/bin/mtail"].into_iter().find(|p| std::path::Path::new(p).exists())
    else {
        println!("mtail: not installed (apt-get install mtail), skipped");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let progs = dir.path().join("progs");
    std::fs::create_dir(&progs).expect("progs dir");
    let mut prog = String::from("gauge probe\n/probe=(?P<v>\\d+)/ {\n  probe = $v\n}\n");
    for i in 0..METRICS {
        prog.push_str(&format!(
            "gauge metric_{i:03}\n/metric_{i:03}=(?P<v>\\S+)/ {{\n  metric_{i:03} = float($v)\n}}\n"
        ));
    }
    std::fs::write(progs.join("bench.mtail"), prog).expect("write the mtail program");
    let log = dir.path().join("train.log");
    let mut feed = String::new();
    for i in 0..METRICS {
        feed.push_str(&format!("step={i} metric_{i:03}=0.{i:03}\n"));
    }
    // mtail starts at the end of a file that exists: the metrics are appended once it listens.
    std::fs::write(&log, "").expect("create the log");
    let listen = free_addr();
    let mut cmd = Command::new(mtail);
    cmd.arg("--progs")
        .arg(&progs)
        .arg("--logs")
        .arg(&log)
        .args(["--address", "127.0.0.1", "--port", &listen.port().to_string(), "--logtostderr"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(p) = poll {
        cmd.args(["--poll_interval", p]);
    }
    let mut child = cmd.spawn().expect("spawn mtail");
    wait_for("mtail to listen", || Client::connect(listen).and_then(|mut c| c.get().map(drop)).is_ok());
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).expect("open the log to append");
    file.write_all(feed.as_bytes()).expect("append the metrics");
    wait_serving(listen);
    let name = format!("mtail ({})", poll.map_or("default poll".to_string(), |p| format!("--poll_interval {p}")));
    if poll.is_none() {
        let rps = throughput(listen, 1, 3);
        println!("scrape {name}, {METRICS} metrics, 1 keep-alive client: {rps:.0} requests/s");
    }
    let lat = latency(
        listen,
        probes,
        |i| {
            file.write_all(format!("probe={i}\n").as_bytes()).expect("append probe");
        },
        |i| format!("probe{{prog=\"bench.mtail\"}} {i}\n").into_bytes(),
    );
    let idle = idle_cpu(child.id(), 5);
    report(&name, &lat, idle);
    let _ = child.kill();
    let _ = child.wait();
}

fn main() {
    let probes = std::env::var("BENCH_PROBES").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    encode_cost();
    bench_trialtail(probes);
    bench_mtail(probes, None);
    bench_mtail(probes, Some("1ms"));
}
