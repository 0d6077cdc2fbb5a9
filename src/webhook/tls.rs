//! The webhook's certificate: loaded and checked at start, served through a resolver holding the current pair,
//! and reloaded when its files change.
//!
//! The directories of `--tls-cert` and `--tls-key` are watched (a Kubernetes secret volume swaps a `..data`
//! symlink, so events name the directory's entries, not the files), and the files are compared every [`RECHECK`]
//! besides. A changed pair that loads replaces the old one for new handshakes; one that does not (half written,
//! key not matching) is logged and counted, and the old pair stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{Notify, watch};

use super::WebhookError;
use super::metrics::Metrics;

/// The certificate files are compared this often even without a file system event.
pub const RECHECK: Duration = Duration::from_secs(30);
/// After an event, wait this long for the rest of a rotation's writes.
const SETTLE: Duration = Duration::from_millis(100);

pub(super) fn crypto() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate and key as loaded, with the file contents they came from (to tell a later change).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub(super) key: Arc<CertifiedKey>,
    pub(super) files: (Vec<u8>, Vec<u8>),
}

/// Reads and checks the certificate chain and key: both parse, and the key is the certificate's.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Loaded, WebhookError> {
    let files = read_pair(cert, key)?;
    Ok(Loaded { key: parse_pair(cert, &files.0, key, &files.1)?, files })
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), WebhookError> {
    let read = |flag, path: &Path| {
        std::fs::read(path).map_err(|source| WebhookError::Read { flag, path: path.to_path_buf(), source })
    };
    Ok((read("tls-cert", cert)?, read("tls-key", key)?))
}

pub(super) fn parse_pair(
    cert: &Path,
    cert_pem: &[u8],
    key: &Path,
    key_pem: &[u8],
) -> Result<Arc<CertifiedKey>, WebhookError> {
    let pem = |flag, path: &Path, reason: String| WebhookError::Pem { flag, path: path.to_path_buf(), reason };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem("tls-cert", cert, format!("not a PEM certificate chain ({e})")))?;
    if chain.is_empty() {
        return Err(pem("tls-cert", cert, "no CERTIFICATE block in it".to_string()));
    }
    let private = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| pem("tls-key", key, format!("not a PEM private key ({e})")))?;
    let provider = crypto();
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| pem("tls-key", key, format!("unusable private key ({e})")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(Arc::new(certified)),
        Err(_) => Err(WebhookError::KeyMismatch { path: key.to_path_buf() }),
    }
}

/// Hands the current certificate to every handshake.
#[derive(Debug)]
pub(super) struct Resolver(RwLock<Arc<CertifiedKey>>);

impl Resolver {
    /// A resolver serving `loaded`.
    pub(super) fn new(loaded: Arc<CertifiedKey>) -> Self {
        Resolver(RwLock::new(loaded))
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub(super) fn replace(&self, new: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = new;
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Watches the certificate's and key's directories; wakes `wake` on any event there.
fn watch_dirs(paths: &[&Path], wake: Arc<Notify>) -> Option<RecommendedWatcher> {
    let handler = move |_: notify::Result<notify::Event>| wake.notify_one();
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "inotify unavailable; checking the certificate every 30s");
            return None;
        }
    };
    let mut dirs: Vec<PathBuf> = paths
        .iter()
        .map(|p| p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf())
        .collect();
    dirs.dedup();
    for dir in dirs {
        if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the certificate's directory");
        }
    }
    Some(watcher)
}

/// Reloads the certificate when its files change, until `stop` fires.
pub(super) async fn reload_loop(
    cert: PathBuf,
    key: PathBuf,
    loaded_files: (Vec<u8>, Vec<u8>),
    resolver: Arc<Resolver>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let wake = Arc::new(Notify::new());
    let _watcher = watch_dirs(&[&cert, &key], wake.clone());
    let mut last = Some(loaded_files);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = wake.notified() => tokio::time::sleep(SETTLE).await,
            _ = tokio::time::sleep(RECHECK) => {}
        }
        let Ok(pair) = read_pair(&cert, &key) else { continue };
        if last.as_ref() == Some(&pair) {
            continue;
        }
        match parse_pair(&cert, &pair.0, &key, &pair.1) {
            Ok(new) => {
                resolver.replace(new);
                metrics.cert_reloaded();
                tracing::info!(cert = %cert.display(), "loaded the new certificate");
            }
            Err(e) => {
                metrics.error("cert_reload");
                tracing::warn!(error = %e, "the changed certificate does not load; keeping the previous one");
            }
        }
        last = Some(pair);
    }
}
