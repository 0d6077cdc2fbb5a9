//! The aggregator: per metric, the count, latest, min, max and last step; the single state every sink reads.
//!
//! Metric names are interned once into a dense [`MetricId`]; the map is looked up with the borrowed name bytes,
//! so an observation of a known metric allocates nothing (the latest value's bytes are copied into a buffer the
//! metric keeps, unchecked: [`RawText`] shows them as UTF-8 when read). At most `max_metrics` distinct names are
//! kept: later new names are counted and dropped.
//!
//! Min and max are over values that parse as numbers and are not NaN (as Katib's controller computes them);
//! `latest` is the last observation whatever it is.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// A metric's index in the aggregator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetricId(pub u32);

/// A value's text as printed: its bytes, copied on the line path without a UTF-8 check (the cost of one per
/// observation is a tenth of a recognised line's), shown with invalid UTF-8 replaced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawText(Vec<u8>);

impl RawText {
    /// The text (bytes that are not UTF-8 replaced).
    pub fn as_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    fn set(&mut self, bytes: &[u8]) {
        self.0.clear();
        self.0.extend_from_slice(bytes);
    }
}

impl From<&str> for RawText {
    fn from(s: &str) -> Self {
        RawText(s.as_bytes().to_vec())
    }
}

impl PartialEq<&str> for RawText {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl fmt::Display for RawText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl serde::Serialize for RawText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_str())
    }
}

/// One metric's running statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricStats {
    /// The name as printed (bytes that are not UTF-8 replaced).
    pub name: String,
    /// Observations.
    pub count: u64,
    /// The latest value's text as printed.
    pub latest_raw: RawText,
    /// The latest value, when it parsed.
    pub latest: Option<f64>,
    /// The smallest non-NaN value and its text.
    pub min: Option<(f64, String)>,
    /// The largest non-NaN value and its text.
    pub max: Option<(f64, String)>,
    /// The step of the latest observation that had one.
    pub step: Option<u64>,
    /// The line of the latest observation.
    pub line: u64,
}

impl MetricStats {
    fn new(name: String) -> Self {
        MetricStats {
            name,
            count: 0,
            latest_raw: RawText::default(),
            latest: None,
            min: None,
            max: None,
            step: None,
            line: 0,
        }
    }
}

/// FxHash: metric names are short and not attacker-chosen in a way that matters (the map is bounded).
#[derive(Default)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0xf135_7aea_2e62_a9c5;
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            h = (h.rotate_left(5) ^ u64::from_le_bytes(c.try_into().unwrap_or_default())).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
        self.0 = h;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Per-metric state, bounded in the number of metrics.
#[derive(Debug)]
pub struct Aggregator {
    ids: FxMap<Box<[u8]>, MetricId>,
    /// Ids by the rules' numbers for names (see [`Aggregator::intern_keyed`]).
    by_key: Vec<Option<MetricId>>,
    metrics: Vec<MetricStats>,
    max_metrics: usize,
    dropped: u64,
}

/// The default for `--max-metrics`.
pub const DEFAULT_MAX_METRICS: usize = 1000;

impl Aggregator {
    /// An aggregator that keeps at most `max_metrics` distinct names.
    pub fn new(max_metrics: usize) -> Self {
        Aggregator { ids: FxMap::default(), by_key: Vec::new(), metrics: Vec::new(), max_metrics, dropped: 0 }
    }

    /// The id of `name`, interning it when there is room; `None` when the metric limit is reached.
    pub fn intern(&mut self, name: &[u8]) -> Option<MetricId> {
        if let Some(&id) = self.ids.get(name) {
            return Some(id);
        }
        if self.metrics.len() >= self.max_metrics {
            if self.dropped == 0 {
                tracing::warn!(
                    limit = self.max_metrics,
                    name = %String::from_utf8_lossy(name),
                    "metric limit reached: observations of further new metric names are dropped (see --max-metrics)"
                );
            }
            self.dropped += 1;
            return None;
        }
        let id = MetricId(self.metrics.len() as u32);
        self.ids.insert(name.into(), id);
        self.metrics.push(MetricStats::new(String::from_utf8_lossy(name).into_owned()));
        Some(id)
    }

    /// [`Aggregator::intern`] for a name the rules numbered `key` (the same number for the same name, see
    /// `rules::Match::key`): its id is kept under the number, so the name is hashed once, not per observation.
    pub fn intern_keyed(&mut self, key: Option<u32>, name: &[u8]) -> Option<MetricId> {
        const MAX_KEYS: usize = 1 << 16;
        let Some(k) = key.map(|k| k as usize).filter(|&k| k < MAX_KEYS) else { return self.intern(name) };
        if let Some(Some(id)) = self.by_key.get(k) {
            return Some(*id);
        }
        let id = self.intern(name)?;
        if self.by_key.len() <= k {
            self.by_key.resize(k + 1, None);
        }
        self.by_key[k] = Some(id);
        Some(id)
    }

    /// Records one observation of an interned metric.
    pub fn record(&mut self, id: MetricId, raw: &[u8], value: Option<f64>, step: Option<u64>, line: u64) {
        let m = &mut self.metrics[id.0 as usize];
        m.count += 1;
        m.latest_raw.set(raw);
        m.latest = value;
        if step.is_some() {
            m.step = step;
        }
        m.line = line;
        if let Some(v) = value.filter(|v| !v.is_nan()) {
            // A new extreme reuses the old one's text buffer: a falling loss allocates nothing per observation.
            let set = |slot: &mut Option<(f64, String)>, latest: &str| match slot {
                Some((x, raw)) => {
                    *x = v;
                    raw.clear();
                    raw.push_str(latest);
                }
                None => *slot = Some((v, latest.to_string())),
            };
            if m.min.as_ref().is_none_or(|(min, _)| v < *min) {
                set(&mut m.min, &String::from_utf8_lossy(raw));
            }
            if m.max.as_ref().is_none_or(|(max, _)| v > *max) {
                set(&mut m.max, &String::from_utf8_lossy(raw));
            }
        }
    }

    /// Every metric, in order of first appearance.
    pub fn metrics(&self) -> &[MetricStats] {
        &self.metrics
    }

    /// One metric.
    pub fn get(&self, id: MetricId) -> &MetricStats {
        &self.metrics[id.0 as usize]
    }

    /// Observations dropped because the metric limit was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_names_get_the_ids_their_names_get() {
        let mut a = Aggregator::new(2);
        let loss = a.intern_keyed(Some(7), b"loss");
        assert_eq!(loss, a.intern(b"loss"));
        assert_eq!(a.intern_keyed(Some(7), b"loss"), loss);
        let acc = a.intern_keyed(None, b"acc");
        assert_eq!(a.intern_keyed(Some(3), b"acc"), acc);
        assert_eq!(a.intern_keyed(Some(u32::MAX), b"loss"), loss, "a key beyond the cache is looked up by name");
        assert_eq!(a.intern_keyed(Some(9), b"third"), None, "the metric limit holds");
        assert_eq!(a.dropped(), 1);
    }

    #[test]
    fn keeps_count_latest_min_max_and_step() {
        let mut a = Aggregator::new(10);
        let id = a.intern(b"loss").unwrap();
        a.record(id, b"0.5", Some(0.5), Some(1), 1);
        a.record(id, b"nan", Some(f64::NAN), None, 2);
        a.record(id, b"0.25", Some(0.25), Some(3), 3);
        a.record(id, b"0.75", Some(0.75), None, 4);
        let m = a.get(id);
        assert_eq!((m.count, &*m.latest_raw.as_str(), m.step, m.line), (4, "0.75", Some(3), 4));
        assert_eq!(m.min, Some((0.25, "0.25".to_string())));
        assert_eq!(m.max, Some((0.75, "0.75".to_string())));
    }

    #[test]
    fn non_numeric_values_count_but_do_not_move_min_max() {
        let mut a = Aggregator::new(10);
        let id = a.intern(b"genotype").unwrap();
        a.record(id, b"Genotype(normal=[])", None, None, 1);
        let m = a.get(id);
        assert_eq!((m.count, m.latest, m.min.clone()), (1, None, None));
    }

    #[test]
    fn the_metric_limit_drops_new_names_only() {
        let mut a = Aggregator::new(2);
        assert!(a.intern(b"a").is_some());
        assert!(a.intern(b"b").is_some());
        assert!(a.intern(b"c").is_none());
        assert!(a.intern(b"d").is_none());
        assert!(a.intern(b"a").is_some());
        assert_eq!((a.metrics().len(), a.dropped()), (2, 2));
    }
}
