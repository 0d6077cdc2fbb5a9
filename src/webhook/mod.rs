//! `trialtail webhook`: the mutating admission webhook that adds trialtail to training pods.
//!
//! Two halves: [`mutate`](mod@mutate), pure and idempotent (a pod and the [`Settings`] in, a JSON patch out: the
//! sidecar added, nothing beside another metrics collector, or the sidecar taken out again when Katib's webhook
//! added its collector after it – either order of the two webhooks gives the same pod), and
//! the HTTPS server around it: [`review`] (the AdmissionReview handler as a function of the body), [`tls`] (the
//! certificate, reloaded when its files change), [`metrics`] (the webhook's counters) and [`server`] (bounded
//! connections and bodies, graceful shutdown, a plain HTTP port for `/healthz`, `/readyz` and `/metrics`).
//!
//! Fail-open: whatever the pod says, a well-formed review is answered `allowed: true`; a collector must never
//! stop training from starting. Only a request that is not an AdmissionReview at all gets an HTTP error.

pub mod certs;
pub mod metrics;
pub mod mutate;
pub mod review;
pub mod server;
pub mod tls;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use certs::SecretSettings;
pub use mutate::{Mutation, Outcome, Resources, Settings, mutate};

use crate::cli::WebhookArgs;
use crate::config::{parse_duration, parse_listen, parse_size};

/// Why the webhook's flags do not make a configuration, or why it cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("--{flag} {value:?}: expected HOST:PORT, [IPV6]:PORT or :PORT")]
    Listen { flag: &'static str, value: String },
    #[error("--image: must not be empty")]
    Image,
    #[error("--{flag} {value:?}: expected a Kubernetes quantity such as 50m, 0.5, 16Mi or 1G")]
    Quantity { flag: &'static str, value: String },
    #[error("--max-body-bytes {value:?}: expected a size from 1KiB to 64MiB")]
    MaxBody { value: String },
    #[error("--shutdown-grace {value:?}: expected a duration such as 10s or 500ms (at most a day)")]
    Grace { value: String },
    #[error("--namespace {value:?}: not a namespace name (lowercase letters, digits and `-`, at most 63)")]
    Namespace { value: String },
    #[error("--{flag} {value:?}: not a Kubernetes object name (lowercase letters, digits, `-` and `.`, at most 253)")]
    ObjectName { flag: &'static str, value: String },
    #[error("--cert-recheck {value:?}: expected a duration from 1s to a day, such as 60s or 5m")]
    Recheck { value: String },
    #[error("no certificate: give --tls-cert and --tls-key, or --cert-secret")]
    NoCertificate,
    #[error("--{flag} {path}: cannot read it")]
    Read {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("--{flag} {path}: {reason}")]
    Pem { flag: &'static str, path: PathBuf, reason: String },
    #[error("--tls-key {path}: not the key of the certificate in --tls-cert")]
    KeyMismatch { path: PathBuf },
    #[error("--{flag} {addr}: cannot listen")]
    Bind {
        flag: &'static str,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("TLS set-up failed")]
    Tls(#[source] rustls::Error),
    #[error(transparent)]
    Cert(Box<certs::CertError>),
    #[error("cannot start the runtime")]
    Runtime(#[source] io::Error),
}

impl From<certs::CertError> for WebhookError {
    fn from(e: certs::CertError) -> Self {
        WebhookError::Cert(Box::new(e))
    }
}

impl WebhookError {
    /// The process exit code: 2 for what the flags or the files they name get wrong, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            WebhookError::Runtime(_) | WebhookError::Tls(_) | WebhookError::Cert(_) => 1,
            _ => 2,
        }
    }
}

/// Where the webhook's serving certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// `--tls-cert` and `--tls-key`: files, reloaded when they change.
    Files {
        /// The certificate chain's file.
        cert: PathBuf,
        /// The private key's file.
        key: PathBuf,
    },
    /// `--cert-secret`: made and kept by the webhook in a Secret ([`certs`]).
    Secret(SecretSettings),
}

/// A validated `trialtail webhook`.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The HTTPS address.
    pub listen: SocketAddr,
    /// The plain HTTP address of `/healthz`, `/readyz` and `/metrics`.
    pub metrics_listen: SocketAddr,
    /// Where the serving certificate comes from.
    pub certificate: CertSource,
    /// Request bodies larger than this get 413.
    pub max_body_bytes: usize,
    /// Time allowed for requests in flight after a signal.
    pub shutdown_grace: Duration,
    /// Validate and exit.
    pub check_config: bool,
    /// What is injected.
    pub settings: Settings,
}

impl TryFrom<WebhookArgs> for WebhookConfig {
    type Error = WebhookError;

    fn try_from(a: WebhookArgs) -> Result<Self, WebhookError> {
        let listen = |flag: &'static str, value: &str| {
            parse_listen(value).ok_or_else(|| WebhookError::Listen { flag, value: value.to_string() })
        };
        let quantity = |flag: &'static str, value: String| {
            let value = value.trim().to_string();
            if is_quantity(&value) { Ok(value) } else { Err(WebhookError::Quantity { flag, value }) }
        };
        let max_body_bytes = parse_size(&a.max_body_bytes)
            .filter(|n| (1 << 10..=64 << 20).contains(n))
            .ok_or_else(|| WebhookError::MaxBody { value: a.max_body_bytes.clone() })?;
        let shutdown_grace =
            parse_duration(&a.shutdown_grace).ok_or_else(|| WebhookError::Grace { value: a.shutdown_grace.clone() })?;
        let image = a.image.trim().to_string();
        if image.is_empty() {
            return Err(WebhookError::Image);
        }
        let namespaces: Vec<String> =
            a.namespaces.iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect();
        if let Some(bad) = namespaces.iter().find(|n| !is_dns_label(n)) {
            return Err(WebhookError::Namespace { value: bad.clone() });
        }
        let object_name = |flag: &'static str, value: &str| {
            let value = value.trim().to_string();
            if is_dns_subdomain(&value) { Ok(value) } else { Err(WebhookError::ObjectName { flag, value }) }
        };
        let certificate = match (a.tls_cert, a.tls_key, a.cert_secret) {
            (Some(cert), Some(key), None) => CertSource::Files { cert, key },
            (None, None, Some(secret)) => {
                let recheck = parse_duration(&a.cert_recheck)
                    .filter(|d| (Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(d))
                    .ok_or_else(|| WebhookError::Recheck { value: a.cert_recheck.clone() })?;
                let service = a.service.trim().to_string();
                if !is_dns_label(&service) {
                    return Err(WebhookError::ObjectName { flag: "service", value: service });
                }
                CertSource::Secret(SecretSettings {
                    secret: object_name("cert-secret", &secret)?,
                    service,
                    webhook_configuration: object_name("webhook-configuration", &a.webhook_configuration)?,
                    recheck,
                })
            }
            _ => return Err(WebhookError::NoCertificate),
        };
        Ok(WebhookConfig {
            listen: listen("listen", &a.listen)?,
            metrics_listen: listen("metrics-listen", &a.metrics_listen)?,
            certificate,
            max_body_bytes,
            shutdown_grace,
            check_config: a.check_config,
            settings: Settings {
                image,
                native_sidecar: !a.no_native_sidecar,
                namespaces,
                resources: Resources {
                    cpu_request: quantity("cpu-request", a.cpu_request)?,
                    memory_request: quantity("memory-request", a.memory_request)?,
                    cpu_limit: quantity("cpu-limit", a.cpu_limit)?,
                    memory_limit: quantity("memory-limit", a.memory_limit)?,
                },
            },
        })
    }
}

/// Whether `s` is a Kubernetes resource quantity: a non-negative decimal number (`1`, `0.5`, `.5`) with an
/// optional binary suffix (`Ki` … `Ei`), decimal suffix (`n`, `u`, `m`, `k`, `M` … `E`) or exponent (`1e3`).
pub fn is_quantity(s: &str) -> bool {
    let s = s.strip_prefix('+').unwrap_or(s);
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(end);
    let number_ok = number.matches('.').count() <= 1 && number.bytes().any(|b| b.is_ascii_digit());
    let exponent_ok = |e: &str| {
        let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    };
    let suffix_ok = match suffix {
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => true,
        _ => suffix.strip_prefix(['e', 'E']).is_some_and(exponent_ok),
    };
    number_ok && suffix_ok
}

/// Whether `s` is a DNS label (RFC 1123), as namespace names are.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether `s` is a DNS subdomain (RFC 1123), as the names of most Kubernetes objects are.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Runs `trialtail webhook`: loads the certificate files (failing when they do not load), then, unless
/// `--check-config`, serves until SIGTERM/SIGINT and drains. With `--cert-secret` the certificate is read or made
/// when serving starts.
pub fn run(cfg: WebhookConfig) -> Result<(), WebhookError> {
    let tls = match &cfg.certificate {
        CertSource::Files { cert, key } => Some(tls::load_certified_key(cert, key)?),
        CertSource::Secret(_) => None,
    };
    if cfg.check_config {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(WebhookError::Runtime)?;
    rt.block_on(server::serve(cfg, tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_quantities_follow_kubernetes_syntax() {
        for ok in ["50m", "0.5", ".5", "1", "16Mi", "100Mi", "1G", "1e3", "1E-2", "+2", "500k"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "m", "-1", "1.2.3", "16MB", "1Ki2", "abc", "1e", "1 Mi", "."] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn webhook_namespaces_are_dns_labels() {
        assert!(is_dns_label("kubeflow-user-1"));
        assert!(!is_dns_label("Kubeflow") && !is_dns_label("-a") && !is_dns_label("a_b") && !is_dns_label(""));
        assert!(is_dns_subdomain("trialtail-webhook.tls") && !is_dns_subdomain("a..b") && !is_dns_subdomain("A"));
    }
}
