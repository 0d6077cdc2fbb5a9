//! The export side of a run: the HTTP endpoint ([`crate::server`]) and the Pushgateway sink, started from an
//! [`ExportConfig`] and fed by a [`Publisher`]'s snapshots, plus the end-of-run sequence (final push, linger,
//! shutdown) every mode needs.
//!
//! Two entry points: [`Exporter`] for drivers that already run inside tokio (follow, wrapped command, pod log),
//! and [`Background`] for the synchronous local mode, which keeps its read loop on the calling thread while a
//! one-worker tokio runtime serves scrapes on another. Neither knows where the log comes from.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::collect::Collector;
use crate::server::{self, ServerError, ServerHandle};
use crate::sink::prometheus::{Exposition, Labels};
use crate::sink::pushgateway::{PushTarget, Pusher};
use crate::sink::stats::SinkStats;
use crate::snapshot::{PUBLISH_INTERVAL, Phase, Publisher, SnapshotRx, SourceStats};

/// trialtail's conventional port, for modes that serve by default (`--listen :9478`).
pub const DEFAULT_PORT: u16 = 9478;

/// Time responses in flight get to finish when the server shuts down.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What to export and where: the validated `--listen`, `--linger`, `--pushgateway`, `--push-interval` and
/// identity-label flags.
#[derive(Debug, Clone, Default)]
pub struct ExportConfig {
    /// Serve `/metrics`, `/healthz`, `/readyz` here.
    pub listen: Option<SocketAddr>,
    /// After the source ended, serve until the final values were scraped or this long.
    pub linger: Duration,
    /// Push to this Pushgateway at the end.
    pub pushgateway: Option<PushTarget>,
    /// Also push this often while reading.
    pub push_interval: Option<Duration>,
    /// The identity labels.
    pub labels: Labels,
}

impl ExportConfig {
    /// Whether anything is exported at all (otherwise no runtime, no publisher: the local mode's fast path).
    pub fn is_enabled(&self) -> bool {
        self.listen.is_some() || self.pushgateway.is_some()
    }
}

/// Why exporting could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("cannot start the runtime for the metrics endpoint")]
    Runtime(#[source] std::io::Error),
}

/// The running endpoint and pusher of one run.
#[derive(Debug)]
pub struct Exporter {
    sinks: Arc<SinkStats>,
    server: Option<ServerHandle>,
    pusher: Option<Arc<Pusher>>,
    periodic: Option<JoinHandle<()>>,
    linger: Duration,
}

impl Exporter {
    /// Starts what `cfg` asks for, reading snapshots from `rx`. Call from inside a tokio runtime.
    pub fn start(cfg: &ExportConfig, rx: SnapshotRx) -> Result<Self, ExportError> {
        let sinks = Arc::new(SinkStats::default());
        let exposition = Arc::new(Exposition::new(&cfg.labels, sinks.clone()));
        let server = cfg.listen.map(|addr| server::spawn(addr, rx.clone(), exposition.clone())).transpose()?;
        let pusher =
            cfg.pushgateway.clone().map(|target| Arc::new(Pusher::new(target, &cfg.labels, exposition.clone(), rx)));
        let periodic = match (&pusher, cfg.push_interval) {
            (Some(p), Some(every)) if !every.is_zero() => Some(p.clone().spawn_periodic(every)),
            _ => None,
        };
        Ok(Exporter { sinks, server, pusher, periodic, linger: cfg.linger })
    }

    /// The address `/metrics` is served on, when it is.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(ServerHandle::local_addr)
    }

    /// The sinks' counters this run exports: other sinks (stdout, Katib) report their deliveries and failures
    /// here, e.g. `exporter.sinks().delivered("stdout", observations)`.
    pub fn sinks(&self) -> &Arc<SinkStats> {
        &self.sinks
    }

    /// The end of a run, after [`Phase::Ended`] was published: pushes the final values, serves until one scrape
    /// returned them or `--linger` passed, then shuts the server down.
    pub async fn finish(self) {
        if let Some(periodic) = self.periodic {
            periodic.abort();
        }
        if let Some(pusher) = &self.pusher {
            match pusher.push().await {
                Ok(()) => tracing::info!("pushed the final values to the pushgateway"),
                Err(e) => tracing::warn!(error = %crate::sink::error_chain(&e), "pushing the final values failed"),
            }
        }
        if let Some(server) = self.server {
            if !server.final_scraped() && !self.linger.is_zero() {
                tracing::info!(linger = ?self.linger, "waiting for a scrape of the final values (--linger)");
                if !server.linger(self.linger).await {
                    tracing::warn!(linger = ?self.linger, "the final values were not scraped before --linger ran out");
                }
            }
            server.shutdown(SHUTDOWN_GRACE).await;
        }
    }
}

/// Exporting for a synchronous driver: a one-worker tokio runtime runs the endpoint and pusher in the
/// background while the caller reads on its own thread and publishes through [`Background::publisher`].
#[derive(Debug)]
pub struct Background {
    rt: Runtime,
    exporter: Exporter,
    publisher: Publisher,
}

impl Background {
    /// Starts exporting when `cfg` asks for it; `None` when it does not (nothing to run, nothing to publish).
    pub fn start(cfg: &ExportConfig) -> Result<Option<Self>, ExportError> {
        if !cfg.is_enabled() {
            return Ok(None);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("trialtail-export")
            .enable_all()
            .build()
            .map_err(ExportError::Runtime)?;
        let (publisher, rx) = Publisher::new(PUBLISH_INTERVAL);
        let exporter = {
            let _in_runtime = rt.enter();
            Exporter::start(cfg, rx)?
        };
        Ok(Some(Background { rt, exporter, publisher }))
    }

    /// The address `/metrics` is served on, when it is.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.exporter.local_addr()
    }

    /// The sinks' counters (see [`Exporter::sinks`]).
    pub fn sinks(&self) -> &Arc<SinkStats> {
        self.exporter.sinks()
    }

    /// The publisher the read loop calls ([`Publisher::maybe_publish`] after reads).
    pub fn publisher(&mut self) -> &mut Publisher {
        &mut self.publisher
    }

    /// Publishes the final state ([`Phase::Ended`]) and blocks through [`Exporter::finish`].
    pub fn finish(mut self, collector: &Collector, source: SourceStats) {
        self.publisher.publish(collector, source, Phase::Ended);
        let Background { rt, exporter, publisher } = self;
        rt.block_on(exporter.finish());
        drop(publisher);
        rt.shutdown_timeout(SHUTDOWN_GRACE);
    }
}
