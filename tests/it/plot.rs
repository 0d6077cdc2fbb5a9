//! `trialtail plot`: the pictures checked by what they contain, not pixel for pixel.
//!
//! The SVGs are parsed as XML: every metric's line is a `<polyline>` in its panel's palette colour (legend keys
//! are rectangles, so polylines of that colour are data only), a non-finite value is a break between two
//! polylines plus a red cross (two `<line>`s) on the panel's edge. The fixtures are the example logs (real
//! framework output) and small logs written here to put a `nan` and an `inf` where the test wants them.

use std::path::Path;

use serde_json::Value;

use crate::{example, stderr, stdout, trialtail};

const BLUE: &str = "#1F77B4";
const RED: &str = "#D62728";

/// Observations per metric, in order of first appearance, as `trialtail run --output json` reports them.
fn observations(args: &[&str]) -> Vec<(String, usize)> {
    let mut run = vec!["run", "--output", "json"];
    run.extend_from_slice(args);
    let out = trialtail(&run, None);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut counts: Vec<(String, usize)> = Vec::new();
    for line in stdout(&out).lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let name = v["metric"].as_str().unwrap().to_string();
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => counts.push((name, 1)),
        }
    }
    counts
}

/// Draws `args` into `dir/name` and returns the file's bytes.
fn plot(dir: &Path, name: &str, args: &[&str]) -> Vec<u8> {
    let path = dir.join(name);
    let mut all = vec!["plot", "-o", path.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = trialtail(&all, None);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    assert!(stdout(&out).is_empty() && stderr(&out).is_empty(), "a plot prints nothing");
    std::fs::read(path).unwrap()
}

struct Svg {
    /// The points of every polyline of a colour, in document order.
    polylines: Vec<(String, usize)>,
    /// The stroke colour of every `<line>`.
    lines: Vec<String>,
    /// Every text.
    texts: Vec<String>,
}

fn parse_svg(bytes: &[u8]) -> Svg {
    let text = std::str::from_utf8(bytes).unwrap();
    let doc = roxmltree::Document::parse(text).unwrap();
    let mut svg = Svg { polylines: Vec::new(), lines: Vec::new(), texts: Vec::new() };
    for n in doc.descendants() {
        let stroke = n.attribute("stroke").unwrap_or("").to_string();
        match n.tag_name().name() {
            "polyline" => svg.polylines.push((stroke, n.attribute("points").unwrap().split_whitespace().count())),
            "line" => svg.lines.push(stroke),
            "text" => svg.texts.push(n.text().unwrap_or("").trim().to_string()),
            _ => {}
        }
    }
    svg
}

impl Svg {
    fn points_of(&self, color: &str) -> Vec<usize> {
        self.polylines.iter().filter(|(c, _)| c == color).map(|(_, n)| *n).collect()
    }

    fn has_text(&self, needle: &str) -> bool {
        self.texts.iter().any(|t| t.contains(needle))
    }
}

#[test]
fn svg_of_a_golden_log_has_one_line_per_metric_with_every_observation() {
    let log = example("xgboost_native.log");
    let log = log.to_str().unwrap();
    let expected = observations(&["--preset", "xgboost", log]);
    assert_eq!(expected.len(), 4, "{expected:?}");
    let dir = tempfile::tempdir().unwrap();
    let svg = parse_svg(&plot(dir.path(), "xgb.svg", &["--preset", "xgboost", "--panels", "each", log]));
    // One panel per metric, each metric the first (blue) series of its panel, as one unbroken line.
    let counts: Vec<usize> = expected.iter().map(|(_, c)| *c).collect();
    assert_eq!(svg.points_of(BLUE), counts);
    assert!(svg.has_text("xgboost_native.log"), "title: {:?}", svg.texts);
    for (name, _) in &expected {
        assert!(svg.texts.iter().any(|t| t == name), "caption of {name}: {:?}", svg.texts);
    }
    let legends = svg.texts.iter().filter(|t| t.starts_with("latest ") && t.contains("   min ")).count();
    assert_eq!(legends, 4, "latest, min and max for each metric: {:?}", svg.texts);
    assert!(svg.has_text("step"), "xgboost's rounds are steps: {:?}", svg.texts);
    assert!(!svg.lines.iter().any(|c| c == RED), "no non-finite markers");
}

#[test]
fn train_and_validation_metrics_share_a_panel_by_default() {
    let log = example("keras_fit_verbose2.log");
    let log = log.to_str().unwrap();
    let expected = observations(&["--preset", "keras", log]);
    let dir = tempfile::tempdir().unwrap();
    let svg = parse_svg(&plot(dir.path(), "keras.svg", &["--preset", "keras", log]));
    // accuracy/val_accuracy, loss/val_loss, top-k/val_top-k: three panels of two lines, blue then orange.
    assert_eq!(expected.len(), 6, "{expected:?}");
    assert_eq!(svg.points_of(BLUE).len(), 3);
    assert_eq!(svg.points_of("#FF7F0E").len(), 3);
    let total: usize = svg.polylines.iter().filter(|(c, _)| c == BLUE || c == "#FF7F0E").map(|(_, n)| n).sum();
    assert_eq!(total, expected.iter().map(|(_, c)| c).sum::<usize>());
    assert!(svg.texts.iter().any(|t| t == "loss"), "the group's caption: {:?}", svg.texts);
    assert!(svg.has_text("val_loss   latest 0.3358   min 0.3358   max 1.513"), "{:?}", svg.texts);
    assert!(svg.has_text("observation"), "keras prints no step: x is the index: {:?}", svg.texts);
}

#[test]
fn non_finite_values_are_gaps_with_a_marker() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("gaps.log");
    std::fs::write(&log, "loss=1\nloss=2\nloss=nan\nloss=3\nloss=4\nloss=inf\nloss=5\nloss=6\n").unwrap();
    let svg = parse_svg(&plot(dir.path(), "gaps.svg", &[log.to_str().unwrap()]));
    assert_eq!(svg.points_of(BLUE), [2, 2, 2], "three runs of finite values");
    // Two crosses of two strokes each, and the legend's cross.
    assert_eq!(svg.lines.iter().filter(|c| *c == RED).count(), 2 * 3);
    assert!(svg.has_text("NaN / inf (gap)"), "{:?}", svg.texts);
    assert!(svg.has_text("latest 6   min 1   max 6"), "{:?}", svg.texts);
    assert!(svg.has_text("gaps.log"));
}

#[test]
fn png_decodes_to_the_requested_size_and_is_not_blank() {
    let log = example("tf_accuracy_at_step.log");
    let dir = tempfile::tempdir().unwrap();
    let bytes = plot(
        dir.path(),
        "acc.png",
        &["--metrics", "Accuracy", "--width", "640", "--height", "360", log.to_str().unwrap()],
    );
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (640, 360));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(3).collect();
    let non_white = pixels.iter().filter(|p| **p != [255, 255, 255]).count();
    assert!(non_white > pixels.len() / 50, "{non_white} of {} pixels drawn", pixels.len());
    assert!(pixels.iter().any(|p| *p == [0x1f, 0x77, 0xb4]), "the curve is drawn in blue");
    // Text was rendered with the built-in font: dark, black-ish pixels exist beyond the axes' lines.
    assert!(pixels.iter().filter(|p| p.iter().all(|&c| c < 60)).count() > 500);
}

#[test]
fn bad_plot_flags_exit_2_naming_the_flag() {
    let log = example("tf_accuracy_at_step.log");
    let log = log.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["plot", "-o", "curves.jpg", log], "--output \"curves.jpg\": the file name must end in .svg or .png"),
        (&["plot", "-o", "c.svg", "--width", "10", log], "--width 10: must be between 200 and 8000"),
        (&["plot", "-o", "c.svg", "--filter", "(", log], "--filter \"(\": invalid regex"),
        (&["plot", "-o", "c.svg", "--x", "time", log], "--x time: no observation has a timestamp"),
        (&["plot", "-o", "c.svg", "/nonexistent.log"], "cannot open log /nonexistent.log"),
    ];
    for (args, message) in cases {
        let out = trialtail(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
        assert!(!Path::new("c.svg").exists() && !Path::new("curves.jpg").exists());
    }
}

#[test]
fn time_on_x_uses_the_lines_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("t.log");
    std::fs::write(&log, "2024-05-01T12:00:00Z loss=3\n2024-05-01T12:00:30Z loss=2\n2024-05-01T12:01:00Z loss=1\n")
        .unwrap();
    let svg = parse_svg(&plot(dir.path(), "t.svg", &["--x", "time", log.to_str().unwrap()]));
    assert_eq!(svg.points_of(BLUE), [3]);
    assert!(svg.has_text("seconds since the first timestamp"), "{:?}", svg.texts);
    assert!(svg.has_text("60"), "the last point is 60 s in: {:?}", svg.texts);
}

#[test]
fn plot_help_teaches_the_picture_flags_and_the_rules() {
    let help = stdout(&trialtail(&["plot", "--help"], None));
    for needle in ["--output <FILE>", "--panels", "--x <AXIS>", "TRIALTAIL_WIDTH", "--preset", "Examples:"] {
        assert!(help.contains(needle), "plot --help lacks {needle}");
    }
}
