//! `trialtail webhook --cert-secret`: the webhook's serving certificate, made and kept by the webhook itself, for
//! clusters without cert-manager.
//!
//! The certificate lives in a Secret of the webhook's namespace (type `kubernetes.io/tls`: `tls.crt`, `tls.key`,
//! `ca.crt`, and `ca.key` to sign the next certificate with the same CA). At start, and every `--cert-recheck`
//! after, [`Keeper::refresh_secret`] reads it: a certificate that verifies against the Secret's CA for the
//! Service's DNS name, now and [`RENEW_BEFORE`] from now, is used as it is; anything else (no Secret, a key
//! that is not the certificate's, a wrong name, an expiry within 30 days) is replaced by [`issue`] – a
//! certificate signed by the Secret's CA when that CA outlives it, else a new CA – written with the
//! `resourceVersion` it was read at. A replica that loses that race (409) reads the winner's Secret and uses
//! it, so replicas converge on one certificate. [`Keeper::ensure_ca_bundle`] then keeps the `caBundle` of every
//! entry of the MutatingWebhookConfiguration that calls the Service equal to the Secret's `ca.crt`, with a JSON
//! patch whose `test` operations make it apply only to the entries it was computed for.
//!
//! A renewal keeps the CA, so a replica still serving the previous certificate stays trusted until it reloads
//! the Secret at its next check. What the API server accepts is checked with rustls's own WebPKI verifier (the
//! same path-building a TLS client does), plus the CA's notAfter ([`not_after`]): WebPKI takes a trust anchor's
//! validity on trust, Go's `crypto/x509`, which the API server verifies with, does not (`verify.go`:
//! `buildChains` calls `isValid`, the NotBefore/NotAfter check, on every candidate, roots included).
//!
//! The pure half – [`issue`] and [`check`] – takes the time as an argument and is unit-tested; the API half
//! is tested against the fake API server in `tests/it/support/kube_fake.rs`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use serde_json::{Value, json};

use super::tls::crypto;

/// A certificate expiring sooner than this is renewed.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);
/// How long a new CA is valid, in days.
const CA_DAYS: i64 = 3650;
/// How long a new serving certificate is valid, in days.
const CERT_DAYS: i64 = 365;
/// The CA's common name: a certificate signed with the Secret's `ca.key` names this issuer.
const CA_NAME: &str = "trialtail webhook CA";
/// The Secret's keys.
const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
const CA_CRT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";

/// `--cert-secret` and the flags that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSettings {
    /// The Secret, in the webhook's namespace.
    pub secret: String,
    /// The Service the API server calls.
    pub service: String,
    /// The MutatingWebhookConfiguration whose caBundle is kept.
    pub webhook_configuration: String,
    /// How often the Secret and the caBundle are checked again.
    pub recheck: Duration,
}

/// Why the certificate could not be made, read, stored or published.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("--cert-secret: no Kubernetes configuration (neither in-cluster nor a kubeconfig)")]
    Config(#[source] Box<kube::Error>),
    #[error("--cert-secret: no namespace (set POD_NAMESPACE from the downward API, or mount a service account)")]
    NoNamespace,
    #[error("cannot {verb} Secret {namespace}/{name} (needs verb {verb} on secrets)")]
    Secret {
        verb: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("Secret {namespace}/{name} was replaced by another writer with a certificate that is not usable")]
    Contended { namespace: String, name: String },
    #[error("cannot {verb} MutatingWebhookConfiguration {name} (needs verb {verb} on mutatingwebhookconfigurations)")]
    Configuration {
        verb: &'static str,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("MutatingWebhookConfiguration {name} has no webhook that calls Service {namespace}/{service}")]
    NoWebhook { name: String, namespace: String, service: String },
    #[error("cannot make a certificate")]
    Generate(#[source] rcgen::Error),
    #[error("the certificate just made does not verify: {0}")]
    Made(String),
}

impl CertError {
    /// The `kind` of `trialtail_webhook_errors_total` this counts under.
    pub fn kind(&self) -> &'static str {
        match self {
            CertError::Configuration { .. } | CertError::NoWebhook { .. } => "ca_bundle",
            _ => "cert_secret",
        }
    }
}

/// The four PEM files of the Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Material {
    /// The serving certificate (`tls.crt`).
    pub cert: Vec<u8>,
    /// Its PKCS#8 key (`tls.key`).
    pub key: Vec<u8>,
    /// The CA certificate (`ca.crt`): what the caBundle holds.
    pub ca: Vec<u8>,
    /// The CA's PKCS#8 key (`ca.key`).
    pub ca_key: Vec<u8>,
}

/// The DNS names the API server may use for `service` in `namespace` (it calls `SERVICE.NAMESPACE.svc`).
pub fn dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![format!("{service}.{namespace}.svc"), format!("{service}.{namespace}.svc.cluster.local")]
}

/// PEM text of one DER block.
fn pem(label: &str, der: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out.into_bytes()
}

/// Sets the validity of `params` to the day before `date` until `days` after it (whole days, UTC).
fn valid(params: &mut CertificateParams, date: jiff::civil::Date, days: i64) {
    let ymd = |n: i64| {
        let d = date.checked_add(jiff::Span::new().days(n)).unwrap_or(date);
        rcgen::date_time_ymd(i32::from(d.year()), d.month().unsigned_abs(), d.day().unsigned_abs())
    };
    params.not_before = ymd(-1);
    params.not_after = ymd(days);
}

/// Today's date, UTC.
pub fn today() -> jiff::civil::Date {
    jiff::tz::TimeZone::UTC.to_datetime(jiff::Timestamp::now()).date()
}

/// The CA's parameters: the same for every CA this module makes, so a stored CA key re-creates its issuer.
fn ca_params(today: jiff::civil::Date) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    valid(&mut params, today, CA_DAYS);
    params
}

/// A new serving certificate for `names`, signed by `existing`'s CA when it is ours and outlives the new
/// certificate, else by a new CA. `today` is the UTC date.
pub fn issue(existing: Option<&Material>, names: &[String], today: jiff::civil::Date) -> Result<Material, CertError> {
    let leaf_key = KeyPair::generate().map_err(CertError::Generate)?;
    let mut leaf = CertificateParams::new(names.to_vec()).map_err(CertError::Generate)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, names.first().map_or("trialtail-webhook", String::as_str));
    leaf.distinguished_name = dn;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    valid(&mut leaf, today, CERT_DAYS);
    let key = pem("PRIVATE KEY", leaf_key.serialized_der());
    let reuse = existing.and_then(|m| {
        let der = PrivatePkcs8KeyDer::from_pem_slice(&m.ca_key).ok()?;
        let ca_key = KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ECDSA_P256_SHA256).ok()?;
        let issuer = Issuer::new(ca_params(today), ca_key);
        let cert = leaf.signed_by(&leaf_key, &issuer).ok()?;
        let made = Material {
            cert: pem("CERTIFICATE", cert.der()),
            key: key.clone(),
            ca: m.ca.clone(),
            ca_key: m.ca_key.clone(),
        };
        // Usable until shortly before the new certificate ends: the CA outlives it.
        let until = SystemTime::now() + Duration::from_secs((CERT_DAYS as u64 - 31) * 86_400);
        check(&made, names, until).ok().map(|_| made)
    });
    if let Some(made) = reuse {
        return Ok(made);
    }
    let ca_key = KeyPair::generate().map_err(CertError::Generate)?;
    let ca_cert = ca_params(today).self_signed(&ca_key).map_err(CertError::Generate)?;
    let ca_pem = pem("CERTIFICATE", ca_cert.der());
    let ca_key_pem = pem("PRIVATE KEY", ca_key.serialized_der());
    let issuer = Issuer::new(ca_params(today), ca_key);
    let cert = leaf.signed_by(&leaf_key, &issuer).map_err(CertError::Generate)?;
    Ok(Material { cert: pem("CERTIFICATE", cert.der()), key, ca: ca_pem, ca_key: ca_key_pem })
}

/// The certified key of `m` when its certificate is the key's, and verifies against its CA for `names[0]` both
/// now and at `until` (the API server's check, done by rustls's WebPKI verifier).
pub fn check(m: &Material, names: &[String], until: SystemTime) -> Result<Arc<CertifiedKey>, String> {
    let name = names.first().ok_or("no DNS name")?;
    let key =
        super::tls::parse_pair(Path::new(TLS_CRT), &m.cert, Path::new(TLS_KEY), &m.key).map_err(|e| e.to_string())?;
    let mut roots = RootCertStore::empty();
    let until_secs = until.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    for ca in CertificateDer::pem_slice_iter(&m.ca) {
        let ca = ca.map_err(|e| format!("{CA_CRT}: {e}"))?;
        // WebPKI takes a trust anchor's validity on trust; the API server's Go verifier checks it.
        let ends = not_after(&ca).ok_or_else(|| format!("{CA_CRT}: no validity in the certificate"))?;
        if ends < until_secs {
            return Err(format!("{CA_CRT}: the CA ends before {}", timestamp(until)));
        }
        roots.add(ca).map_err(|e| format!("{CA_CRT}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("no certificate in {CA_CRT}"));
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crypto())
        .build()
        .map_err(|e| format!("{CA_CRT}: {e}"))?;
    let server = ServerName::try_from(name.clone()).map_err(|e| format!("{name}: {e}"))?;
    let (leaf, chain) = key.cert.split_first().ok_or("no certificate in tls.crt")?;
    for at in [SystemTime::now(), until] {
        let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        verifier
            .verify_server_cert(leaf, chain, &server, &[], UnixTime::since_unix_epoch(since))
            .map_err(|e| format!("not valid for {name} until {}: {e}", timestamp(at)))?;
    }
    Ok(key)
}

/// A DER element: its tag, its content and what follows it.
fn tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |acc, b| acc << 8 | usize::from(*b)), &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// A certificate's notAfter (RFC 5280 §4.1: tbsCertificate's version, serialNumber, signature, issuer, then
/// validity), in seconds since the epoch.
fn not_after(der: &[u8]) -> Option<u64> {
    let (_, certificate, _) = tlv(der)?;
    let (_, tbs, _) = tlv(certificate)?;
    let (tag, _, after_version) = tlv(tbs)?;
    let mut rest = if tag == 0xa0 { after_version } else { tbs };
    for _ in 0..3 {
        rest = tlv(rest)?.2; // serialNumber, signature, issuer
    }
    let (_, validity, _) = tlv(rest)?;
    let (tag, time, _) = tlv(tlv(validity)?.2)?;
    let text = std::str::from_utf8(time).ok()?.strip_suffix('Z')?;
    let full = match (tag, text.len()) {
        // UTCTime YYMMDDHHMMSS: 50–99 are 19xx (RFC 5280 §4.1.2.5.1).
        (0x17, 12) => format!("{}{text}", if text[..2] >= *"50" { "19" } else { "20" }),
        (0x18, 14) => text.to_string(),
        _ => return None,
    };
    let n = |r: std::ops::Range<usize>| full.get(r)?.parse::<i16>().ok();
    let (y, mo, d, h, mi, sec) = (n(0..4)?, n(4..6)?, n(6..8)?, n(8..10)?, n(10..12)?, n(12..14)?);
    let at = jiff::civil::DateTime::new(
        y,
        i8::try_from(mo).ok()?,
        i8::try_from(d).ok()?,
        i8::try_from(h).ok()?,
        i8::try_from(mi).ok()?,
        i8::try_from(sec).ok()?,
        0,
    )
    .ok()?;
    let ts = jiff::tz::TimeZone::UTC.to_timestamp(at).ok()?;
    u64::try_from(ts.as_second()).ok()
}

fn timestamp(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t).map_or_else(|_| "?".to_string(), |t| t.strftime("%Y-%m-%d").to_string())
}

fn material(secret: &Secret) -> Material {
    let data = secret.data.as_ref();
    let get = |k: &str| data.and_then(|d| d.get(k)).map(|b| b.0.clone()).unwrap_or_default();
    Material { cert: get(TLS_CRT), key: get(TLS_KEY), ca: get(CA_CRT), ca_key: get(CA_KEY) }
}

/// Keeps the Secret and the caBundle, through the Kubernetes API.
pub struct Keeper {
    secrets: Api<Secret>,
    configurations: Api<DynamicObject>,
    namespace: String,
    settings: SecretSettings,
    names: Vec<String>,
    current: Option<Material>,
}

impl Keeper {
    /// A keeper for `settings`, with the in-cluster client or the kubeconfig, in `namespace`.
    pub async fn connect(settings: SecretSettings, namespace: String) -> Result<Self, CertError> {
        let client = crate::k8s::bounded::client().await.map_err(|e| CertError::Config(Box::new(e)))?;
        let gvk = GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration");
        let resource = ApiResource::from_gvk_with_plural(&gvk, "mutatingwebhookconfigurations");
        Ok(Keeper {
            secrets: Api::namespaced(client.clone(), &namespace),
            configurations: Api::all_with(client, &resource),
            names: dns_names(&settings.service, &namespace),
            namespace,
            settings,
            current: None,
        })
    }

    fn secret_error(&self, verb: &'static str) -> impl FnOnce(kube::Error) -> CertError + '_ {
        move |source| CertError::Secret {
            verb,
            namespace: self.namespace.clone(),
            name: self.settings.secret.clone(),
            source: Box::new(source),
        }
    }

    /// Reads the Secret, renewing or creating it when its certificate is not usable; returns the certified key
    /// when it differs from the one returned before.
    pub async fn refresh_secret(&mut self) -> Result<Option<Arc<CertifiedKey>>, CertError> {
        let name = self.settings.secret.clone();
        let found = self.secrets.get_opt(&name).await.map_err(self.secret_error("get"))?;
        let until = SystemTime::now() + RENEW_BEFORE;
        let stored = found.as_ref().map(material);
        let (made, key) = match stored.as_ref().map(|m| (m, check(m, &self.names, until))) {
            Some((m, Ok(key))) => (m.clone(), key),
            other => {
                match other {
                    Some((_, Err(why))) => {
                        tracing::info!(secret = %name, reason = %why, "renewing the webhook's certificate")
                    }
                    _ => tracing::info!(secret = %name, "making the webhook's certificate"),
                }
                let made = issue(stored.as_ref(), &self.names, today())?;
                let key = check(&made, &self.names, until).map_err(CertError::Made)?;
                match self.store(found, &made).await {
                    Ok(()) => (made, key),
                    Err(e) if is_race(&e) => {
                        // Another replica wrote first: use its certificate.
                        let theirs = self.secrets.get(&name).await.map_err(self.secret_error("get"))?;
                        let theirs = material(&theirs);
                        let key = check(&theirs, &self.names, until).map_err(|_| CertError::Contended {
                            namespace: self.namespace.clone(),
                            name: name.clone(),
                        })?;
                        (theirs, key)
                    }
                    Err(source) => {
                        let verb = if stored.is_some() { "update" } else { "create" };
                        return Err(self.secret_error(verb)(source));
                    }
                }
            }
        };
        if self.current.as_ref() == Some(&made) {
            return Ok(None);
        }
        self.current = Some(made);
        Ok(Some(key))
    }

    /// Creates the Secret, or replaces `found` at the resourceVersion it was read at.
    async fn store(&self, found: Option<Secret>, m: &Material) -> Result<(), kube::Error> {
        let data = [(TLS_CRT, &m.cert), (TLS_KEY, &m.key), (CA_CRT, &m.ca), (CA_KEY, &m.ca_key)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.clone())))
            .collect();
        let labels = [("app.kubernetes.io/name", "trialtail"), ("app.kubernetes.io/managed-by", "trialtail-webhook")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let pp = PostParams::default();
        match found {
            Some(mut secret) => {
                secret.data = Some(data);
                secret.string_data = None;
                secret.type_ = Some("kubernetes.io/tls".to_string());
                self.secrets.replace(&self.settings.secret, &pp, &secret).await.map(drop)
            }
            None => {
                let mut secret =
                    Secret { data: Some(data), type_: Some("kubernetes.io/tls".to_string()), ..Secret::default() };
                secret.metadata.name = Some(self.settings.secret.clone());
                secret.metadata.namespace = Some(self.namespace.clone());
                secret.metadata.labels = Some(labels);
                self.secrets.create(&pp, &secret).await.map(drop)
            }
        }
    }

    /// Sets the caBundle of every webhook entry that calls the Service to the current CA; returns how many
    /// entries changed.
    pub async fn ensure_ca_bundle(&self) -> Result<usize, CertError> {
        let Some(current) = &self.current else { return Ok(0) };
        let name = &self.settings.webhook_configuration;
        let error =
            |verb| move |source| CertError::Configuration { verb, name: name.clone(), source: Box::new(source) };
        let config = self.configurations.get(name).await.map_err(error("get"))?;
        let ops = ca_bundle_patch(&config.data, &self.settings.service, &self.namespace, &current.ca);
        let Some(ops) = ops else {
            return Err(CertError::NoWebhook {
                name: name.clone(),
                namespace: self.namespace.clone(),
                service: self.settings.service.clone(),
            });
        };
        let changed = ops.len() / 2;
        if changed > 0 {
            let patch: json_patch::Patch =
                serde_json::from_value(Value::Array(ops)).map_err(|e| CertError::Made(e.to_string()))?;
            self.configurations
                .patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
                .await
                .map_err(error("patch"))?;
            tracing::info!(configuration = %name, webhooks = changed, "set the caBundle");
        }
        Ok(changed)
    }

    /// How often to check again.
    pub fn recheck(&self) -> Duration {
        self.settings.recheck
    }
}

fn is_race(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_conflict() || s.is_already_exists())
}

/// The JSON patch that sets `caBundle` (base64 of `ca_pem`) on each entry of `config` calling `service` in
/// `namespace` whose caBundle differs (a `test` of the entry's name before each change); `None` when no entry
/// calls the Service.
pub fn ca_bundle_patch(config: &Value, service: &str, namespace: &str, ca_pem: &[u8]) -> Option<Vec<Value>> {
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let hooks = config.get("webhooks")?.as_array()?;
    let mut ours = 0;
    let mut ops = Vec::new();
    for (i, hook) in hooks.iter().enumerate() {
        let to = &hook["clientConfig"]["service"];
        if to["name"] != service || to["namespace"] != namespace {
            continue;
        }
        ours += 1;
        if hook["clientConfig"]["caBundle"] != bundle.as_str() {
            ops.push(json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": hook["name"]}));
            ops.push(json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": bundle}));
        }
    }
    (ours > 0).then_some(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        dns_names("trialtail-webhook", "trialtail-system")
    }

    fn soon() -> SystemTime {
        SystemTime::now() + RENEW_BEFORE
    }

    #[test]
    fn certs_a_new_certificate_verifies_for_the_service_name_for_30_days_and_more() {
        let m = issue(None, &names(), today()).unwrap();
        check(&m, &names(), soon()).unwrap();
        check(&m, &names(), SystemTime::now() + Duration::from_secs(300 * 86_400)).unwrap();
        assert!(String::from_utf8_lossy(&m.cert).starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(String::from_utf8_lossy(&m.key).starts_with("-----BEGIN PRIVATE KEY-----\n"));
        // Other names, and a year and a half from now, do not.
        let other = dns_names("other", "trialtail-system");
        assert!(check(&m, &other, soon()).unwrap_err().contains("other.trialtail-system.svc"));
        assert!(check(&m, &names(), SystemTime::now() + Duration::from_secs(550 * 86_400)).is_err());
    }

    #[test]
    fn certs_not_after_reads_the_certificates_validity() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 2);
        params.not_after = rcgen::date_time_ymd(2049, 12, 31);
        let utc = params.self_signed(&key).unwrap();
        assert_eq!(not_after(utc.der()), Some(2_524_521_600), "UTCTime, 2049-12-31");
        params.not_after = rcgen::date_time_ymd(2060, 3, 1);
        let generalized = params.self_signed(&key).unwrap();
        assert_eq!(not_after(generalized.der()), Some(2_845_324_800), "GeneralizedTime, 2060-03-01");
        assert_eq!(not_after(b"\x30\x03\x02\x01"), None, "truncated");
        assert_eq!(not_after(&[]), None);
    }

    #[test]
    fn certs_a_renewal_keeps_the_ca_so_the_previous_certificate_stays_trusted() {
        let first = issue(None, &names(), today()).unwrap();
        let second = issue(Some(&first), &names(), today()).unwrap();
        assert_eq!(second.ca, first.ca, "the same CA");
        assert_ne!(second.cert, first.cert);
        check(&second, &names(), soon()).unwrap();
        // The old certificate against the (unchanged) bundle.
        check(&Material { ca: second.ca.clone(), ..first.clone() }, &names(), soon()).unwrap();
    }

    #[test]
    fn certs_a_ca_that_would_expire_before_the_new_certificate_is_replaced() {
        // A CA made 3600 days ago ends in 50 days, before a new 365-day certificate would.
        let old_day = today().checked_sub(jiff::Span::new().days(3600)).unwrap();
        let old = issue(None, &names(), old_day).unwrap();
        let renewed = issue(Some(&old), &names(), today()).unwrap();
        assert_ne!(renewed.ca, old.ca, "a new CA");
        check(&renewed, &names(), soon()).unwrap();
        // And a CA that ends within 30 days makes the Secret unusable, though its certificate verifies.
        let ending = Material {
            ca: old.ca.clone(),
            ca_key: old.ca_key.clone(),
            ..issue(Some(&old), &names(), old_day).unwrap()
        };
        let in_60_days = SystemTime::now() + Duration::from_secs(60 * 86_400);
        assert!(check(&ending, &names(), in_60_days).unwrap_err().contains("the CA ends before"));
    }

    #[test]
    fn certs_a_mismatched_or_foreign_secret_is_not_usable() {
        let a = issue(None, &names(), today()).unwrap();
        let b = issue(None, &names(), today()).unwrap();
        assert!(check(&Material { key: b.key.clone(), ..a.clone() }, &names(), soon()).is_err(), "key of another");
        assert!(check(&Material { ca: b.ca.clone(), ..a.clone() }, &names(), soon()).is_err(), "another CA");
        assert!(check(&Material { ca: Vec::new(), ..a.clone() }, &names(), soon()).is_err(), "no CA");
        assert!(check(&Material::default(), &names(), soon()).is_err(), "empty");
        // A CA key that is not ours cannot sign: a new CA is made.
        let foreign = Material { ca_key: b"garbage".to_vec(), ..a.clone() };
        assert_ne!(issue(Some(&foreign), &names(), today()).unwrap().ca, a.ca);
    }

    #[test]
    fn certs_the_ca_bundle_patch_touches_only_the_entries_calling_the_service_and_only_when_they_differ() {
        let config = json!({"webhooks": [
            {"name": "a", "clientConfig": {"service": {"name": "trialtail-webhook", "namespace": "trialtail-system"}}},
            {"name": "b", "clientConfig": {"service": {"name": "other", "namespace": "trialtail-system"}}},
            {"name": "c", "clientConfig": {"service": {"name": "trialtail-webhook", "namespace": "trialtail-system"},
                                           "caBundle": base64::engine::general_purpose::STANDARD.encode(b"CA")}},
        ]});
        let ops = ca_bundle_patch(&config, "trialtail-webhook", "trialtail-system", b"CA").unwrap();
        assert_eq!(
            ops,
            vec![
                json!({"op": "test", "path": "/webhooks/0/name", "value": "a"}),
                json!({"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "Q0E="}),
            ]
        );
        let mut patched = config.clone();
        json_patch::patch(&mut patched, &serde_json::from_value::<json_patch::Patch>(Value::Array(ops)).unwrap())
            .unwrap();
        assert_eq!(ca_bundle_patch(&patched, "trialtail-webhook", "trialtail-system", b"CA"), Some(vec![]));
        assert_eq!(ca_bundle_patch(&config, "nothing", "trialtail-system", b"CA"), None);
    }
}
