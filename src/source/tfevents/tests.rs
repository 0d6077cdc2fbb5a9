//! The native reader over the fixtures written by the real writers (`tests/tfevents/fixtures/`: the `tensorboard`
//! package's writer, TF1's `FileWriter`, TF2's `tf.summary`, Keras, `torch.utils.tensorboard`, tensorboardX; each
//! directory has `expected.jsonl`, what its writer was given and stored), and the event scanner against the
//! decoder generated from the schemas.

use std::path::{Path, PathBuf};

use prost::Message;

use super::dir::{EventDir, Naming, Order};
use super::event::{Event, Kind, What};
use super::record::{DEFAULT_MAX_RECORD, frame};
use super::*;
use crate::parser::Observation;
use crate::rules::{LineFormat, Rules, Semantics};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tfevents/fixtures")
}

/// An observation as recorded.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    name: String,
    raw: String,
    value: Option<f64>,
    step: Option<u64>,
    time: Option<String>,
}

#[derive(Default)]
struct Seens(Vec<Seen>);

impl ObservationSink for Seens {
    fn observe(&mut self, o: &Observation<'_>) {
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        self.0.push(Seen { name: s(o.name), raw: s(o.raw), value: o.value, step: o.step, time: o.time.map(s) });
    }
}

fn parser() -> Parser {
    Parser::new(Rules::new(&[], &[], Semantics::Native, LineFormat::Text).unwrap(), 10_000)
}

/// Reads `path` natively with every run named; the observations and the counters.
fn read(path: &Path, naming: Naming) -> (Vec<Seen>, crate::snapshot::SourceStats) {
    let mut dir = EventDir::new(path, Order::Sorted, naming, Scalars::default(), DEFAULT_MAX_RECORD);
    let mut seen = Seens::default();
    dir.read_all(&mut parser(), &mut seen).unwrap();
    (seen.0, dir.stats())
}

/// A fixture's `expected.jsonl`, in the order the native walk reads its files.
fn expected(dir: &Path) -> Vec<serde_json::Value> {
    let walked: Vec<String> = super::dir::walk(dir, Order::Sorted)
        .into_iter()
        .map(|(p, _)| p.strip_prefix(dir).unwrap().to_string_lossy().into_owned())
        .collect();
    let text = std::fs::read_to_string(dir.join("expected.jsonl")).unwrap();
    // `multi_run/profile/*.profile-empty` holds a scalar its writer stored, which TensorBoard (and so every reader
    // here) does not read.
    let mut lines: Vec<(usize, usize, serde_json::Value)> = text
        .lines()
        .filter(|l| !l.contains(".profile-empty\""))
        .enumerate()
        .map(|(i, l)| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            // serde_json's own float parsing may miss by an ulp: the exact text is kept beside it.
            #[derive(serde::Deserialize)]
            struct Exact<'a> {
                #[serde(borrow)]
                value: &'a serde_json::value::RawValue,
            }
            let exact: Exact<'_> = serde_json::from_str(l).unwrap();
            v["value_text"] = exact.value.get().into();
            let file = v["file"].as_str().unwrap();
            (walked.iter().position(|w| w == file).unwrap(), i, v)
        })
        .collect();
    lines.sort_by_key(|l| (l.0, l.1));
    lines.into_iter().map(|(_, _, v)| v).collect()
}

/// Checks one observation against one expected line: name, value exactly, step, time.
fn check(seen: &Seen, want: &serde_json::Value, what: &str) {
    let file = want["file"].as_str().unwrap();
    let run = Path::new(file).parent().unwrap().to_string_lossy().into_owned();
    let name = if run.is_empty() {
        want["tag"].as_str().unwrap().to_string()
    } else {
        format!("{run}/{}", want["tag"].as_str().unwrap())
    };
    assert_eq!(seen.name, name, "{what}");
    let v = seen.value.unwrap();
    match &want["value"] {
        serde_json::Value::String(s) if s == "NaN" => assert!(v.is_nan(), "{what}: {seen:?}"),
        serde_json::Value::String(s) if s == "Infinity" => assert_eq!(v, f64::INFINITY, "{what}"),
        serde_json::Value::String(s) if s == "-Infinity" => assert_eq!(v, f64::NEG_INFINITY, "{what}"),
        n if n.is_i64() || n.is_u64() => assert_eq!(seen.raw, n.to_string(), "{what}: integers exactly"),
        n => {
            let exact: f64 = want["value_text"].as_str().unwrap().parse().unwrap();
            assert_eq!(v.to_bits(), exact.to_bits(), "{what}: {v} vs {n}")
        }
    }
    let step = want["step"].as_i64().unwrap();
    assert_eq!(seen.step, u64::try_from(step).ok(), "{what}: step {step}");
    let time = seen.time.as_deref().and_then(|t| crate::value::rfc3339_seconds(t.as_bytes())).unwrap();
    let (lo, hi) = match want["wall_time"].as_f64() {
        Some(t) => (t, t),
        None => (want["wall_time_range"][0].as_f64().unwrap(), want["wall_time_range"][1].as_f64().unwrap()),
    };
    assert!(time >= lo - 1e-6 && time <= hi + 1e-6, "{what}: time {time} not in [{lo}, {hi}]");
}

#[test]
fn every_fixture_reads_back_exactly_what_its_writer_stored() {
    let mut total = 0;
    for name in [
        "tf1_simple_value",
        "tf1_filewriter",
        "restart_sessionlog",
        "tf2_tensor",
        "keras_fit",
        "torch",
        "tensorboard_writer",
        "multi_run",
        "restart",
        "mixed_plugins",
    ] {
        let dir = fixtures().join(name);
        let want = expected(&dir);
        let (seen, stats) = read(&dir, Naming::Always);
        assert_eq!(seen.len(), want.len(), "{name}: {seen:#?}");
        for (i, (s, w)) in seen.iter().zip(&want).enumerate() {
            check(s, w, &format!("{name} #{i}"));
        }
        assert_eq!((stats.events.damaged, stats.events.undecodable), (0, 0), "{name}");
        total += seen.len();
    }
    assert!(total > 300, "{total}");
}

#[test]
fn other_plugins_are_skipped_and_counted() {
    let (seen, stats) = read(&fixtures().join("mixed_plugins"), Naming::Never);
    assert_eq!(seen.len(), 6);
    assert!(stats.events.skipped_values >= 4, "{stats:?}");
    let (_, stats) = read(&fixtures().join("tf2_tensor"), Naming::Never);
    assert!(stats.events.skipped_values >= 5, "vectors, histograms, images, text, audio: {stats:?}");
}

#[test]
fn scalars_print_as_numpy_prints_their_stored_type() {
    let (seen, _) = read(&fixtures().join("tf1_simple_value"), Naming::Never);
    let first = &seen[0];
    assert_eq!((first.name.as_str(), first.raw.as_str()), ("accuracy", "0.1"), "a float32 0.1 is shown as 0.1");
    assert_eq!(first.value, Some(f64::from(0.1f32)), "and its value is the float32's, exactly");
    assert_eq!(first.time.as_deref(), Some("2023-11-14T22:13:20Z"));
    let (seen, _) = read(&fixtures().join("tensorboard_writer"), Naming::Never);
    let raws: Vec<&str> = seen.iter().map(|s| s.raw.as_str()).collect();
    assert!(raws.contains(&"9223372036854775807"), "{raws:?}");
}

#[test]
fn damage_costs_the_damaged_record_only_where_the_framing_allows() {
    let source = expected(&fixtures().join("tf1_simple_value"));
    // A data CRC mismatch: that record (the 20th scalar) is lost, the rest read.
    let (seen, stats) = read(&fixtures().join("damaged/bad_crc"), Naming::Never);
    let mut want = source.clone();
    want.remove(19);
    assert_eq!(seen.len(), want.len());
    for (i, (s, w)) in seen.iter().zip(&want).enumerate() {
        check(s, w, &format!("bad_crc #{i}"));
    }
    assert_eq!(stats.events.damaged, 1);
    // A length CRC mismatch: nothing after it can be framed.
    let (seen, stats) = read(&fixtures().join("damaged/bad_length"), Naming::Never);
    assert_eq!((seen.len(), stats.events.damaged), (19, 1));
    // A cut last record.
    let (seen, stats) = read(&fixtures().join("damaged/truncated"), Naming::Never);
    assert_eq!((seen.len(), stats.events.damaged), (39, 1));
    // A record that is not an Event: skipped, everything else read.
    let (seen, stats) = read(&fixtures().join("damaged/bad_proto"), Naming::Never);
    assert_eq!((seen.len(), stats.events.undecodable), (40, 1));
}

#[test]
fn runs_are_named_only_when_there_are_several() {
    let (seen, _) = read(&fixtures().join("multi_run"), Naming::Several);
    let names: std::collections::BTreeSet<&str> = seen.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains("accuracy") && names.contains("train/accuracy") && names.contains("runs/exp1/train/loss"),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.starts_with("profile")), "the profiler's .profile-empty is not an event file");
    let (seen, _) = read(&fixtures().join("tf1_filewriter"), Naming::Several);
    assert!(seen.iter().all(|s| !s.name.contains('/')), "one run: bare tags");
    let one = std::fs::read_dir(fixtures().join("tf1_simple_value"))
        .unwrap()
        .flatten()
        .find(|e| is_event_file(e.file_name().as_encoded_bytes()));
    let (seen, _) = read(&one.unwrap().path(), Naming::Several);
    assert_eq!(seen.len(), 40, "a single event file");
}

/// A random `Summary.Value` built with the generated types.
fn value_strategy() -> impl proptest::strategy::Strategy<Value = proto::summary::Value> {
    use proptest::prelude::*;
    use proto::summary::value::Value as V;
    let tensor = (
        prop_oneof![Just(1), Just(2), Just(3), Just(9), Just(14), Just(19), Just(10), Just(7), Just(23)],
        proptest::collection::vec(0i64..3, 0..3),
        proptest::collection::vec(any::<f32>(), 0..3),
        proptest::collection::vec(any::<f64>(), 0..2),
        proptest::collection::vec(any::<i32>(), 0..2),
        proptest::collection::vec(any::<i64>(), 0..2),
        proptest::collection::vec(any::<u8>(), 0..9),
    )
        .prop_map(|(dtype, dims, f, d, i, l, content)| proto::TensorProto {
            dtype,
            tensor_shape: Some(proto::TensorShapeProto {
                dim: dims
                    .into_iter()
                    .map(|size| proto::tensor_shape_proto::Dim { size, name: String::new() })
                    .collect(),
                unknown_rank: false,
            }),
            float_val: f,
            double_val: d,
            int_val: i.clone(),
            half_val: i,
            int64_val: l,
            tensor_content: if content.len() % 2 == 0 { content } else { Vec::new() },
            ..Default::default()
        });
    let kind = prop_oneof![
        any::<f32>().prop_map(V::SimpleValue),
        tensor.prop_map(V::Tensor),
        Just(V::Image(proto::summary::Image { height: 2, width: 2, colorspace: 3, encoded_image_string: vec![1, 2] })),
        Just(V::Histo(proto::HistogramProto { min: 0.0, max: 1.0, num: 2.0, ..Default::default() })),
    ];
    ("[a-z/]{0,8}", "[a-z]{0,3}", proptest::option::of(kind), proptest::option::of("[a-z]{0,6}")).prop_map(
        |(tag, node_name, value, plugin)| proto::summary::Value {
            tag,
            node_name,
            metadata: plugin.map(|plugin_name| proto::SummaryMetadata {
                plugin_data: Some(proto::summary_metadata::PluginData { plugin_name, content: vec![1] }),
                ..Default::default()
            }),
            value,
        },
    )
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

    /// The scanner reads every event the generated encoder writes as the generated decoder does.
    #[test]
    fn the_scanner_reads_what_the_generated_decoder_reads(
        wall_time in proptest::prelude::any::<f64>(),
        step in proptest::prelude::any::<i64>(),
        values in proptest::collection::vec(value_strategy(), 0..4),
        session in proptest::option::of(0i32..4),
    ) {
        use proto::event::What as W;
        let what = match session {
            Some(status) => W::SessionLog(proto::SessionLog { status, ..Default::default() }),
            None => W::Summary(proto::Summary { value: values.clone() }),
        };
        let event = proto::Event { wall_time, step, what: Some(what), ..Default::default() };
        let bytes = event.encode_to_vec();
        let scanned = Event::parse(&bytes).unwrap();
        let decoded = proto::Event::decode(&bytes[..]).unwrap();
        proptest::prop_assert_eq!(scanned.wall_time.to_bits(), decoded.wall_time.to_bits());
        proptest::prop_assert_eq!(scanned.step, decoded.step);
        match (scanned.what, session) {
            (What::SessionLog(s), Some(status)) => proptest::prop_assert_eq!(s, status),
            (What::Summary(summary), None) => {
                let got: Vec<_> = summary.values().collect::<Result<_, _>>().unwrap();
                proptest::prop_assert_eq!(got.len(), values.len());
                for (g, v) in got.iter().zip(&values) {
                    proptest::prop_assert_eq!(g.tag, v.tag.as_bytes());
                    let plugin = v.metadata.as_ref().and_then(|m| m.plugin_data.as_ref()).map(|p| p.plugin_name.as_str());
                    proptest::prop_assert_eq!(g.plugin, plugin.unwrap_or("").as_bytes());
                    use proto::summary::value::Value as V;
                    match (&g.kind, &v.value) {
                        (Kind::Simple(a), Some(V::SimpleValue(b))) => proptest::prop_assert_eq!(a.to_bits(), b.to_bits()),
                        (Kind::Tensor(t), Some(V::Tensor(p))) => {
                            proptest::prop_assert_eq!(t.dtype, p.dtype);
                            let elements: i64 = p.tensor_shape.as_ref().unwrap().dim.iter().map(|d| d.size).product();
                            proptest::prop_assert_eq!(t.elements, elements);
                            proptest::prop_assert_eq!(t.content, &p.tensor_content[..]);
                            if let Some(s) = t.scalar() {
                                proptest::prop_assert_eq!(elements, 1);
                                let want = reference_scalar(p);
                                proptest::prop_assert!(want.is_some_and(|w| w.to_bits() == s.to_f64().to_bits() || (w.is_nan() && s.to_f64().is_nan())), "{:?} vs {:?}", s, want);
                            }
                        }
                        (Kind::Plugin(_), Some(V::Image(_) | V::Histo(_))) | (Kind::Empty, None) => {}
                        (a, b) => proptest::prop_assert!(false, "{:?} vs {:?}", a, b),
                    }
                }
            }
            (a, b) => proptest::prop_assert!(false, "{:?} vs {:?}", a, b),
        }
    }

    /// Records split anywhere, in any number of chunks: the same scalars.
    #[test]
    fn records_fed_in_any_chunks_give_the_same_observations(cuts in proptest::collection::vec(0usize..400, 0..6)) {
        let mut bytes = Vec::new();
        for step in 0..6 {
            let v = proto::summary::Value { tag: "loss".into(), value: Some(proto::summary::value::Value::SimpleValue(step as f32 / 4.0)), ..Default::default() };
            let e = proto::Event { wall_time: 1.7e9 + step as f64, step, what: Some(proto::event::What::Summary(proto::Summary { value: vec![v] })), ..Default::default() };
            frame(&e.encode_to_vec(), &mut bytes);
        }
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
        cuts.sort_unstable();
        let info = FileInfo { index: 0, path: "x".into(), run: String::new(), prefix: String::new() };
        let mut buf = record::RecordBuffer::default();
        let mut scalars = Scalars::default();
        let mut p = parser();
        let mut seen = Seens::default();
        let mut at = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            buf.feed(&bytes[at..cut], &mut |f| if let record::Frame::Record { data, .. } = f { scalars.record(&info, data, &mut p, &mut seen) });
            at = cut;
        }
        let raws: Vec<&str> = seen.0.iter().map(|s| s.raw.as_str()).collect();
        proptest::prop_assert_eq!(raws, ["0.0", "0.25", "0.5", "0.75", "1.0", "1.25"]);
    }
}

/// TensorFlow's `make_ndarray` of a one-element tensor, from the generated type.
fn reference_scalar(p: &proto::TensorProto) -> Option<f64> {
    let c = &p.tensor_content;
    if !c.is_empty() {
        return match p.dtype {
            1 => Some(f64::from(f32::from_le_bytes(c[..].try_into().ok()?))),
            2 => Some(f64::from_le_bytes(c[..].try_into().ok()?)),
            3 => Some(f64::from(i32::from_le_bytes(c[..].try_into().ok()?))),
            9 => Some(i64::from_le_bytes(c[..].try_into().ok()?) as f64),
            10 => (c.len() == 1).then(|| f64::from(c[0] != 0)),
            14 => Some(f64::from(f32::from_bits(u32::from(u16::from_le_bytes(c[..].try_into().ok()?)) << 16))),
            19 => Some(event::f16_to_f64(u16::from_le_bytes(c[..].try_into().ok()?))),
            23 => Some(u64::from_le_bytes(c[..].try_into().ok()?) as f64),
            _ => None,
        };
    }
    Some(match p.dtype {
        1 => f64::from(p.float_val.first().copied().unwrap_or(0.0)),
        2 => p.double_val.first().copied().unwrap_or(0.0),
        3 => f64::from(p.int_val.first().copied().unwrap_or(0)),
        9 => p.int64_val.first().copied().unwrap_or(0) as f64,
        10 => f64::from(p.bool_val.first().copied().unwrap_or(false)),
        14 => f64::from(f32::from_bits((p.half_val.first().copied().unwrap_or(0) as u32 & 0xffff) << 16)),
        19 => event::f16_to_f64(p.half_val.first().copied().unwrap_or(0) as u16),
        23 => p.uint64_val.first().copied().unwrap_or(0) as f64,
        _ => return None,
    })
}
