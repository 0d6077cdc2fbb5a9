//! `trialtail plot`: the curves of a log's metrics, drawn to SVG or PNG with `plotters`.
//!
//! Two halves. [`Recorder`] is an [`ObservationSink`] that keeps the points (index, step, time, value) of the
//! metrics the picture will draw, bounded: a metric is drawn or not from its first observation on (the panels
//! fill in order of first appearance, at most [`MAX_PANELS`] of at most one line per palette colour, the same
//! rule [`render`] applies), a metric that is not drawn keeps its name and count only, and a panel keeps at most
//! [`MAX_POINTS`] points shared by its lines: past its share a line keeps every other point and from then on
//! records every second observation (and so on, doubling), so the curve keeps its shape. A huge log of many
//! metrics costs at most `MAX_PANELS × MAX_POINTS` points. [`render`] draws the recorded series: one panel per metric or group of
//! metrics (see [`Panels`]), NaN and infinite values as gaps with a red cross on the panel's edge, min and max
//! ringed, the latest a dot, and the latest, min and max in a legend above the panel, never over the data.
//! A picture is bounded too: at most [`MAX_PANELS`] panels of one line per palette colour.
//!
//! Text is laid out with DejaVu Sans, built into the binary (`assets/fonts/`, its license beside it): nothing is
//! looked up on the system or fetched at run time, and the PNG is encoded by the `png` crate from plotters' RGB
//! buffer. What it deliberately does not do: follow a growing log (it reads to the end), or plot non-numeric
//! values (Katib semantics' raw strings count as gaps).

use std::io;
use std::path::PathBuf;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::cli::{Panels, PlotArgs, XAxis};
use crate::config::{ConfigError, RuleConfig};
use crate::lines::LineBuffer;
use crate::parser::{Observation, ObservationSink, Parser};
use crate::source::{self, LiveSink, SourceError};
use crate::value::rfc3339_seconds;

/// Points kept per panel, shared by its lines, before the recorder starts thinning (see the module docs).
pub const MAX_POINTS: usize = 10_000;

/// The font every picture's text is laid out with. Sizes are even: plotters' ab_glyph text puts each glyph at
/// `size / 2` plus its top, truncated, and an odd size moves small glyphs (the `.`) up by a pixel.
const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";

/// Why a plot could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("--output {path:?}: the file name must end in .svg or .png")]
    Format { path: PathBuf },
    #[error("--{flag} {value}: must be between {min} and {max} pixels")]
    Size { flag: &'static str, value: u32, min: u32, max: u32 },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("no metrics found in {log} (check the rule flags; `trialtail run` shows what is matched)")]
    Empty { log: String },
    #[error("--x {axis}: no observation has a {what}")]
    NoX { axis: &'static str, what: &'static str },
    #[error("the built-in font could not be loaded")]
    Font,
    #[error("drawing {path} failed: {message}")]
    Draw { path: PathBuf, message: String },
    #[error("writing {path} failed")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl PlotError {
    /// The process exit code: 2 for what the user can fix in the command line, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            PlotError::Config(_) | PlotError::Format { .. } | PlotError::Size { .. } | PlotError::NoX { .. } => 2,
            PlotError::Source(
                SourceError::Open { .. } | SourceError::Directory { .. } | SourceError::NoEventFiles { .. },
            ) => 2,
            _ => 1,
        }
    }
}

/// The picture's file format, from the output's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// Scalable vector graphics.
    Svg,
    /// A PNG bitmap.
    Png,
}

/// A validated `trialtail plot`.
#[derive(Debug)]
pub struct PlotConfig {
    /// The log path, `-` for stdin.
    pub log: PathBuf,
    /// The picture's path.
    pub output: PathBuf,
    /// The picture's format.
    pub format: ImageFormat,
    /// The picture's width in pixels.
    pub width: u32,
    /// The picture's height in pixels; `None` for 300 per row of panels.
    pub height: Option<u32>,
    /// What the x axis shows.
    pub x: XAxis,
    /// How metrics share panels.
    pub panels: Panels,
    /// Rules and limits.
    pub rules: RuleConfig,
}

fn check_size(flag: &'static str, value: u32, min: u32) -> Result<u32, PlotError> {
    const MAX: u32 = 8000;
    if (min..=MAX).contains(&value) { Ok(value) } else { Err(PlotError::Size { flag, value, min, max: MAX }) }
}

impl TryFrom<PlotArgs> for PlotConfig {
    type Error = PlotError;

    fn try_from(a: PlotArgs) -> Result<Self, PlotError> {
        let ext = a.output.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        let format = match ext.as_deref() {
            Some("svg") => ImageFormat::Svg,
            Some("png") => ImageFormat::Png,
            _ => return Err(PlotError::Format { path: a.output }),
        };
        let width = check_size("width", a.width, 200)?;
        let height = a.height.map(|h| check_size("height", h, 150)).transpose()?;
        let rules = RuleConfig::try_from(a.rules)?;
        Ok(PlotConfig { log: a.log, output: a.output, format, width, height, x: a.x, panels: a.panels, rules })
    }
}

/// One recorded observation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// The observation's index within its metric (0-based, counting every observation, thinned or not).
    pub index: u64,
    /// The step, when the rule captured one.
    pub step: Option<u64>,
    /// Unix seconds of the line's timestamp, when it had one.
    pub time: Option<f64>,
    /// The value; NaN when it was not a number.
    pub value: f64,
}

/// One metric's recorded points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The metric's name as printed.
    pub name: String,
    /// The points kept, in order.
    pub points: Vec<Point>,
    /// Observations seen.
    pub seen: u64,
    /// Every `stride`-th observation is kept.
    stride: u64,
    /// The panel it is drawn in; `None`: not drawn, no point kept.
    panel: Option<usize>,
}

/// Records the points of the metrics a picture draws, bounded by `max_points` per panel.
#[derive(Debug)]
pub struct Recorder {
    series: Vec<Series>,
    max_points: usize,
    panels: Panels,
    /// The drawn panels so far: each one's stem (with `--panels auto`) and its lines' series.
    drawn: Vec<(String, Vec<usize>)>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new(MAX_POINTS, Panels::Auto)
    }
}

impl Recorder {
    /// A recorder keeping at most `max_points` (at least 2 per line) points per panel of `panels`.
    pub fn new(max_points: usize, panels: Panels) -> Self {
        Recorder { series: Vec::new(), max_points: max_points.max(2), panels, drawn: Vec::new() }
    }

    /// The panel a new metric goes to, as [`group`] and [`limit`] will decide: `None` past the picture's bounds.
    fn place(&mut self, i: usize) -> Option<usize> {
        let key = match self.panels {
            Panels::Each => i.to_string(),
            Panels::One => String::new(),
            Panels::Auto => stem(&self.series[i].name).to_string(),
        };
        let panel = match self.drawn.iter().position(|(k, _)| *k == key) {
            Some(p) => p,
            None if self.drawn.len() < MAX_PANELS => {
                self.drawn.push((key, Vec::new()));
                self.drawn.len() - 1
            }
            None => return None,
        };
        let lines = &mut self.drawn[panel].1;
        if lines.len() >= PALETTE.len() {
            return None;
        }
        lines.push(i);
        // The panel's points are shared by its lines: each one's share shrinks, and its points are thinned.
        let share = (self.max_points / lines.len()).max(2);
        for &j in lines.iter() {
            thin(&mut self.series[j], share);
        }
        Some(panel)
    }

    /// The points a line of `panel` may keep.
    fn share(&self, panel: usize) -> usize {
        (self.max_points / self.drawn[panel].1.len().max(1)).max(2)
    }

    /// Every metric's series, in order of first appearance.
    pub fn series(&self) -> &[Series] {
        &self.series
    }
}

/// The recorder reads no snapshots: nothing to flush or publish.
impl LiveSink for Recorder {}

impl ObservationSink for Recorder {
    fn observe(&mut self, o: &Observation<'_>) {
        let i = o.metric.0 as usize;
        while self.series.len() <= i {
            self.series.push(Series { name: String::new(), points: Vec::new(), seen: 0, stride: 1, panel: None });
        }
        if self.series[i].seen == 0 {
            self.series[i].name = String::from_utf8_lossy(o.name).into_owned();
            self.series[i].panel = self.place(i);
        }
        let Some(panel) = self.series[i].panel else {
            self.series[i].seen += 1;
            return;
        };
        let share = self.share(panel);
        let s = &mut self.series[i];
        let index = s.seen;
        s.seen += 1;
        if !index.is_multiple_of(s.stride) {
            return;
        }
        let time = o.time.and_then(rfc3339_seconds);
        s.points.push(Point { index, step: o.step, time, value: o.value.unwrap_or(f64::NAN) });
        thin(s, share);
    }
}

/// Doubles `s`'s stride until it holds fewer than `share` points: it keeps the points whose index is a multiple
/// of the stride.
fn thin(s: &mut Series, share: usize) {
    while s.points.len() >= share {
        s.stride *= 2;
        let stride = s.stride;
        s.points.retain(|p| p.index % stride == 0);
    }
}

/// Runs `trialtail plot` to completion: reads the log, records, draws, writes.
pub fn run(cfg: PlotConfig) -> Result<(), PlotError> {
    let r = cfg.rules;
    let mut parser = Parser::new(r.rules, r.max_metrics);
    let mut recorder = Recorder::new(MAX_POINTS, cfg.panels);
    if crate::config::is_event_path(&cfg.log) {
        use crate::source::tfevents::{Scalars, dir, record};
        let naming = dir::Naming::Several;
        let mut events =
            dir::EventDir::new(&cfg.log, dir::Order::Sorted, naming, Scalars::default(), record::DEFAULT_MAX_RECORD);
        events.read_all(&mut parser, &mut recorder)?;
        if events.files().next().is_none() {
            return Err(SourceError::NoEventFiles { path: cfg.log }.into());
        }
    } else {
        let mut reader = source::file::open(&cfg.log)?;
        let mut lines = LineBuffer::new(r.max_line_bytes);
        let read = source::file::read_to_end(&mut reader, &mut lines, &mut parser, &mut recorder);
        if let Err(source) = read {
            let bytes = lines.stats().bytes;
            return Err(SourceError::Read { path: cfg.log, bytes, source }.into());
        }
    }
    let title = if cfg.log.as_os_str() == source::file::STDIN {
        "standard input".to_string()
    } else {
        cfg.log.file_name().map_or_else(|| cfg.log.display().to_string(), |n| n.to_string_lossy().into_owned())
    };
    if recorder.series().is_empty() {
        return Err(PlotError::Empty { log: title });
    }
    let style = Style { title, width: cfg.width, height: cfg.height, x: cfg.x, panels: cfg.panels };
    let picture = render(recorder.series(), &style, cfg.format).map_err(|e| match e {
        RenderError::Draw(message) => PlotError::Draw { path: cfg.output.clone(), message },
        RenderError::Font => PlotError::Font,
        RenderError::NoX { axis, what } => PlotError::NoX { axis, what },
    })?;
    std::fs::write(&cfg.output, picture).map_err(|source| PlotError::Write { path: cfg.output, source })
}

/// What a picture looks like.
#[derive(Debug, Clone)]
pub struct Style {
    /// The title (the log's file name).
    pub title: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels, `None` for 300 per row of panels plus the title.
    pub height: Option<u32>,
    /// What the x axis shows.
    pub x: XAxis,
    /// How metrics share panels.
    pub panels: Panels,
}

/// Why rendering failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("{0}")]
    Draw(String),
    #[error("the built-in font could not be loaded")]
    Font,
    #[error("--x {axis}: no observation has a {what}")]
    NoX { axis: &'static str, what: &'static str },
}

fn draw_err(e: impl std::fmt::Display) -> RenderError {
    RenderError::Draw(e.to_string())
}

fn register_font() -> Result<(), RenderError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok { Ok(()) } else { Err(RenderError::Font) }
}

/// Line colours, one per metric in a panel (Tableau 10, readable on white and for most colour blindness).
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// The marker colour of non-finite values.
pub const NON_FINITE: RGBColor = RGBColor(0xd6, 0x27, 0x28);

/// Draws `series` and returns the encoded picture.
pub fn render(series: &[Series], style: &Style, format: ImageFormat) -> Result<Vec<u8>, RenderError> {
    register_font()?;
    let mut groups = group(series, style.panels);
    limit(&mut groups, series);
    let cols = if groups.len() > 3 { 2 } else { 1 };
    let rows = groups.len().div_ceil(cols).max(1);
    let width = style.width;
    let height = style.height.unwrap_or((60 + 300 * rows as u32).min(8000));
    let plan = Plan { series, groups: &groups, rows, cols, style };
    match format {
        ImageFormat::Svg => {
            let mut text = String::new();
            {
                let root = SVGBackend::with_string(&mut text, (width, height)).into_drawing_area();
                plan.draw(&root)?;
                root.present().map_err(draw_err)?;
            }
            Ok(text.into_bytes())
        }
        ImageFormat::Png => {
            let mut rgb = vec![0u8; width as usize * height as usize * 3];
            {
                let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
                plan.draw(&root)?;
                root.present().map_err(draw_err)?;
            }
            let mut png = Vec::new();
            let mut enc = png::Encoder::new(&mut png, width, height);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            enc.set_compression(png::Compression::Best);
            let mut w = enc.write_header().map_err(draw_err)?;
            w.write_image_data(&rgb).map_err(draw_err)?;
            w.finish().map_err(draw_err)?;
            Ok(png)
        }
    }
}

/// Panels in one picture, at most.
pub const MAX_PANELS: usize = 24;

/// Keeps at most [`MAX_PANELS`] panels and one line per palette colour in a panel, warning about the rest: a
/// picture of a thousand tiny panels helps nobody, and `--metrics` picks what to draw.
fn limit(groups: &mut Vec<Vec<usize>>, series: &[Series]) {
    let mut left_out: Vec<&str> = Vec::new();
    for g in groups.iter_mut() {
        left_out.extend(g.iter().skip(PALETTE.len()).map(|&i| series[i].name.as_str()));
        g.truncate(PALETTE.len());
    }
    left_out.extend(groups.iter().skip(MAX_PANELS).flatten().map(|&i| series[i].name.as_str()));
    groups.truncate(MAX_PANELS);
    if !left_out.is_empty() {
        tracing::warn!(
            count = left_out.len(),
            first = left_out[0],
            "too many metrics for one picture ({MAX_PANELS} panels of at most {} lines): the rest are not drawn; \
             pick metrics with --metrics",
            PALETTE.len()
        );
    }
}

/// The name without a train/validation prefix: metrics with the same stem share a panel with `--panels auto`.
///
/// `val_loss` → `loss`, `eval-rmse` → `rmse`, `validation_0-logloss` → `logloss`, `valid_0's auc` → `auc`.
pub fn stem(name: &str) -> &str {
    const PREFIXES: [&str; 8] = ["validation", "training", "valid", "train", "eval", "test", "val", "dev"];
    let lower = name.to_ascii_lowercase();
    for p in PREFIXES {
        let Some(rest) = lower.strip_prefix(p) else { continue };
        let mut i = name.len() - rest.len();
        let b = name.as_bytes();
        // An optional `_0` / `-1` dataset index, then an optional `'s` (LightGBM), then one separator.
        if matches!(b.get(i), Some(b'_' | b'-')) && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            i += 1;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
        if b[i..].starts_with(b"'s") {
            i += 2;
        }
        if matches!(b.get(i), Some(b'_' | b'-' | b' ' | b':' | b'/' | b'.')) && i + 1 < b.len() {
            return name[i + 1..].trim_start();
        }
    }
    name
}

/// Which series go into which panel, in order of first appearance.
pub fn group(series: &[Series], panels: Panels) -> Vec<Vec<usize>> {
    let shown: Vec<usize> = (0..series.len()).filter(|&i| series[i].seen > 0).collect();
    match panels {
        Panels::Each => shown.into_iter().map(|i| vec![i]).collect(),
        Panels::One => vec![shown],
        Panels::Auto => {
            let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
            for i in shown {
                let key = stem(&series[i].name).to_string();
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, g)) => g.push(i),
                    None => groups.push((key, vec![i])),
                }
            }
            groups.into_iter().map(|(_, g)| g).collect()
        }
    }
}

/// The x value of a point under an axis choice; `None` leaves the point out.
fn x_of(p: &Point, axis: XAxis, all_steps: bool, t0: f64) -> Option<f64> {
    match axis {
        XAxis::Index => Some(p.index as f64),
        XAxis::Step => p.step.map(|s| s as f64),
        XAxis::Auto if all_steps => p.step.map(|s| s as f64),
        XAxis::Auto => Some(p.index as f64),
        XAxis::Time => p.time.map(|t| t - t0),
    }
}

/// A tick label on an axis from `lo` to `hi`: as few digits as the tick spacing needs, millions and more in one
/// SI unit for the whole axis (M, G, T), and scientific notation for the whole axis when its numbers are tiny
/// or beyond T (so all its labels look alike).
pub fn tick(v: f64, lo: f64, hi: f64) -> String {
    let span = (hi - lo).abs().max(f64::MIN_POSITIVE);
    // A tick computed as a sum of float steps lands near zero, not on it.
    if v.abs() < span * 1e-9 {
        return "0".to_string();
    }
    let mag = lo.abs().max(hi.abs());
    if !(1e-3..1e15).contains(&mag) {
        return trim_sci(&format!("{v:.2e}"));
    }
    // Millions and more in one SI unit for the whole axis: 0.2M, 0.4M, …, 1.4M.
    let (unit, suffix) = match mag {
        m if m >= 1e12 => (1e12, "T"),
        m if m >= 1e9 => (1e9, "G"),
        m if m >= 1e6 => (1e6, "M"),
        _ => (1.0, ""),
    };
    let decimals = (-(span / unit / 5.0).log10().floor() + 1.0).clamp(0.0, 8.0) as usize;
    let text = trim_zeros(format!("{:.decimals$}", v / unit));
    if text == "0" { text } else { text + suffix }
}

fn trim_zeros(s: String) -> String {
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

/// `1.50e-4` → `1.5e-4`, `2.00e-4` → `2e-4`.
fn trim_sci(s: &str) -> String {
    match s.split_once('e') {
        Some((mantissa, exp)) => format!("{}e{exp}", trim_zeros(mantissa.to_string())),
        None => s.to_string(),
    }
}

/// A value as the legend prints it: up to 4 significant digits.
fn short(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if !(1e-3..1e6).contains(&a) {
        return trim_sci(&format!("{v:.3e}"));
    }
    let decimals = (3.0 - a.log10().floor()).clamp(0.0, 6.0) as usize;
    trim_zeros(format!("{v:.decimals$}"))
}

struct Plan<'a> {
    series: &'a [Series],
    groups: &'a [Vec<usize>],
    rows: usize,
    cols: usize,
    style: &'a Style,
}

/// One series prepared for a panel: its points as (x, value), and its min, max and latest finite points.
struct Prepared<'a> {
    name: &'a str,
    points: Vec<(f64, f64)>,
    min: Option<(f64, f64)>,
    max: Option<(f64, f64)>,
    latest: Option<(f64, f64)>,
}

impl Plan<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), RenderError> {
        root.fill(&WHITE).map_err(draw_err)?;
        let root = root.titled(&self.style.title, (FAMILY, 22)).map_err(draw_err)?;
        let t0 = self.series.iter().flat_map(|s| s.points.iter().filter_map(|p| p.time)).fold(f64::INFINITY, f64::min);
        if self.style.x == XAxis::Time && !t0.is_finite() {
            return Err(RenderError::NoX { axis: "time", what: "timestamp" });
        }
        if self.style.x == XAxis::Step && !self.series.iter().any(|s| s.points.iter().any(|p| p.step.is_some())) {
            return Err(RenderError::NoX { axis: "step", what: "step" });
        }
        let areas = root.split_evenly((self.rows, self.cols));
        for (group, area) in self.groups.iter().zip(&areas) {
            // One x axis per panel: steps only when every point of every line in it has one.
            let all_steps = group.iter().all(|&i| self.series[i].points.iter().all(|p| p.step.is_some()));
            let prepared: Vec<Prepared<'_>> = group
                .iter()
                .map(|&i| {
                    let s = &self.series[i];
                    let points: Vec<(f64, f64)> = s
                        .points
                        .iter()
                        .filter_map(|p| x_of(p, self.style.x, all_steps, t0).map(|x| (x, p.value)))
                        .collect();
                    let finite = || points.iter().copied().filter(|p| p.1.is_finite());
                    Prepared {
                        name: &s.name,
                        min: finite().reduce(|a, b| if b.1 < a.1 { b } else { a }),
                        max: finite().reduce(|a, b| if b.1 > a.1 { b } else { a }),
                        latest: finite().next_back(),
                        points,
                    }
                })
                .collect();
            let x_desc = match self.style.x {
                XAxis::Time => "seconds since the first timestamp",
                XAxis::Index => "observation",
                XAxis::Step => "step",
                XAxis::Auto if all_steps => "step",
                XAxis::Auto => "observation",
            };
            self.panel(area, &prepared, x_desc)?;
        }
        Ok(())
    }

    fn panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        series: &[Prepared<'_>],
        x_desc: &str,
    ) -> Result<(), RenderError> {
        let xs = || series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
        let ys = || series.iter().flat_map(|s| s.points.iter().map(|p| p.1).filter(|v| v.is_finite()));
        let (x0, x1) = padded(xs().fold(f64::INFINITY, f64::min), xs().fold(f64::NEG_INFINITY, f64::max), 0.015);
        let (y0, y1) = padded(ys().fold(f64::INFINITY, f64::min), ys().fold(f64::NEG_INFINITY, f64::max), 0.08);
        let non_finite = series.iter().any(|s| s.points.iter().any(|p| !p.1.is_finite()));
        // The caption and the legend go above the plot, never over the data.
        let layout = layout_legend(area, &legend_items(series, non_finite))?;
        let head_h = CAPTION_H + layout.last().map_or(0, |l| l.y + LEGEND_LINE_H) + 4;
        let (head, body) = area.split_vertically(head_h);
        draw_legend(&head, &caption(series), &layout)?;
        let x_span = x1 - x0;
        let x_fmt = |v: &f64| tick(*v, x0, x1);
        let y_fmt = |v: &f64| tick(*v, y0, y1);
        let mut chart = ChartBuilder::on(&body)
            .margin(8)
            .margin_top(4)
            .margin_right(20)
            .x_label_area_size(42)
            .y_label_area_size(Y_LABEL_W)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(draw_err)?;
        let integer_x = x_desc != "seconds since the first timestamp";
        let x_labels = if integer_x { (x_span as usize + 1).clamp(2, 8) } else { 8 };
        chart
            .configure_mesh()
            .x_labels(x_labels)
            .y_labels(6)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .x_desc(x_desc)
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 14))
            .light_line_style(RGBColor(0xee, 0xee, 0xee))
            .bold_line_style(RGBColor(0xd8, 0xd8, 0xd8))
            .max_light_lines(1)
            .draw()
            .map_err(draw_err)?;
        for (k, s) in series.iter().enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            let line = color.stroke_width(2);
            // Split the line at non-finite values: every run of finite points is one polyline.
            let runs = s.points.split(|p| !p.1.is_finite()).filter(|r| !r.is_empty());
            let dots = s.points.len() <= 60;
            for run in runs {
                chart.draw_series(LineSeries::new(run.iter().copied(), line)).map_err(draw_err)?;
                if dots || run.len() == 1 {
                    chart.draw_series(run.iter().map(|&p| Circle::new(p, 2, color.filled()))).map_err(draw_err)?;
                }
            }
            // Min and max: a ring around the point; the latest: a filled dot.
            for p in [s.min, s.max].into_iter().flatten() {
                chart.draw_series(std::iter::once(Circle::new(p, 5, color.stroke_width(2)))).map_err(draw_err)?;
            }
            if let Some(p) = s.latest {
                chart.draw_series(std::iter::once(Circle::new(p, 4, color.filled()))).map_err(draw_err)?;
            }
            // NaN and -inf on the bottom edge, +inf on the top edge.
            let bad = s.points.iter().filter(|p| !p.1.is_finite());
            let bad = bad.map(|p| (p.0, if p.1 == f64::INFINITY { y1 } else { y0 }));
            chart.draw_series(bad.map(|p| Cross::new(p, 6, NON_FINITE.stroke_width(2)))).map_err(draw_err)?;
        }
        Ok(())
    }
}

/// Height of a panel's caption line, and of a legend line, in pixels.
const CAPTION_H: i32 = 30;
const LEGEND_LINE_H: i32 = 18;
/// Width of the y axis' label area: the legend starts there.
const Y_LABEL_W: i32 = 68;

/// What marks a legend item.
#[derive(Debug, Clone, Copy)]
enum Key {
    /// A bar in a series' colour.
    Bar(RGBColor),
    /// The non-finite cross.
    Cross,
    /// Nothing (the second line of a long item).
    None,
}

/// The panel's title: the metric's name, the shared stem of a train/validation group, else the names.
fn caption(series: &[Prepared<'_>]) -> String {
    match series {
        [one] => one.name.to_string(),
        [first, rest @ ..] if rest.iter().all(|s| stem(s.name) == stem(first.name)) => stem(first.name).to_string(),
        _ => series.iter().map(|s| s.name).collect::<Vec<_>>().join(", "),
    }
}

/// The legend's items: per series its name with latest, min and max, and the cross when values are missing.
fn legend_items(series: &[Prepared<'_>], non_finite: bool) -> Vec<(Key, String, String)> {
    let mut items: Vec<(Key, String, String)> = series
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let mut values = format!("latest {}", s.latest.map_or_else(|| "-".into(), |p| short(p.1)));
            if let (Some(min), Some(max)) = (s.min, s.max) {
                values.push_str(&format!("   min {}   max {}", short(min.1), short(max.1)));
            }
            // A lone series is named by the panel's caption already.
            let name = if series.len() == 1 { String::new() } else { s.name.to_string() };
            (Key::Bar(PALETTE[k % PALETTE.len()]), name, values)
        })
        .collect();
    if non_finite {
        items.push((Key::Cross, "NaN / inf (gap)".to_string(), String::new()));
    }
    items
}

/// One placed legend item.
struct Placed {
    key: Key,
    text: String,
    x: i32,
    y: i32,
}

const LEGEND_FONT: u32 = 14;
const KEY_W: i32 = 22;
const ITEM_GAP: i32 = 24;

/// Lays items out left to right from the y axis, wrapping lines; an item wider than a line is split into its
/// name and its values.
fn layout_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    items: &[(Key, String, String)],
) -> Result<Vec<Placed>, RenderError> {
    let font: TextStyle<'_> = (FAMILY, LEGEND_FONT).into();
    let left = Y_LABEL_W + 8;
    let right = area.dim_in_pixel().0 as i32 - 20;
    let width = |t: &str| area.estimate_text_size(t, &font).map(|(w, _)| w as i32).map_err(draw_err);
    let mut units: Vec<(Key, String)> = Vec::new();
    for (key, name, values) in items {
        let whole = match (name.is_empty(), values.is_empty()) {
            (_, true) => name.clone(),
            (true, false) => values.clone(),
            (false, false) => format!("{name}   {values}"),
        };
        if KEY_W + width(&whole)? <= right - left || name.is_empty() || values.is_empty() {
            units.push((*key, whole));
        } else {
            units.push((*key, name.clone()));
            units.push((Key::None, values.clone()));
        }
    }
    let (mut x, mut y) = (left, 0);
    let mut placed = Vec::new();
    for (key, text) in units {
        let w = KEY_W + width(&text)?;
        if x > left && (x + w > right || matches!(key, Key::None)) {
            (x, y) = (left, y + LEGEND_LINE_H);
        }
        placed.push(Placed { key, text, x, y });
        x += w + ITEM_GAP;
    }
    Ok(placed)
}

fn draw_legend<DB: DrawingBackend>(
    head: &DrawingArea<DB, Shift>,
    caption: &str,
    placed: &[Placed],
) -> Result<(), RenderError> {
    let (w, _) = head.dim_in_pixel();
    let title: TextStyle<'_> = TextStyle::from((FAMILY, 16)).pos(Pos::new(HPos::Center, VPos::Top));
    head.draw(&Text::new(caption.to_string(), (w as i32 / 2, 10), title)).map_err(draw_err)?;
    let font: TextStyle<'_> = (FAMILY, LEGEND_FONT).into();
    for p in placed {
        let y = CAPTION_H + p.y;
        match p.key {
            Key::Bar(color) => {
                head.draw(&Rectangle::new([(p.x, y + 7), (p.x + 16, y + 10)], color.filled())).map_err(draw_err)?
            }
            Key::Cross => head.draw(&Cross::new((p.x + 8, y + 8), 5, NON_FINITE.stroke_width(2))).map_err(draw_err)?,
            Key::None => {}
        }
        head.draw(&Text::new(p.text.clone(), (p.x + KEY_W, y + 1), font.clone())).map_err(draw_err)?;
    }
    Ok(())
}

/// A range around `lo..hi` with `pad` of its span on each side; a point range is widened so it can be drawn.
fn padded(lo: f64, hi: f64, pad: f64) -> (f64, f64) {
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo <= f64::EPSILON * lo.abs().max(1.0) {
        let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return (lo - d, hi + d);
    }
    let d = (hi - lo) * pad;
    (lo - d, hi + d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::MetricId;

    #[test]
    fn pictures_are_bounded_in_panels_and_lines() {
        let series: Vec<Series> = (0..100)
            .map(|i| Series { name: format!("m{i}"), points: Vec::new(), seen: 1, stride: 1, panel: None })
            .collect();
        let mut each = group(&series, Panels::Each);
        limit(&mut each, &series);
        assert_eq!(each.len(), MAX_PANELS);
        let mut one = group(&series, Panels::One);
        limit(&mut one, &series);
        assert_eq!((one.len(), one[0].len()), (1, PALETTE.len()));
    }

    fn obs(metric: u32, value: f64, step: Option<u64>) -> Observation<'static> {
        Observation { metric: MetricId(metric), name: b"loss", raw: b"", value: Some(value), step, time: None, line: 1 }
    }

    #[test]
    fn stems_strip_train_and_validation_prefixes() {
        for (name, want) in [
            ("val_loss", "loss"),
            ("loss", "loss"),
            ("eval-rmse", "rmse"),
            ("train-rmse", "rmse"),
            ("validation_0-logloss", "logloss"),
            ("valid_0's binary_logloss", "binary_logloss"),
            ("training's auc", "auc"),
            ("val_sparse_top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy"),
            ("value", "value"),
            ("val_", "val_"),
            ("Validation score", "score"),
        ] {
            assert_eq!(stem(name), want, "{name}");
        }
    }

    #[test]
    fn the_recorder_thins_to_every_other_point_past_its_bound() {
        let mut r = Recorder::new(4, Panels::Auto);
        for i in 0..9 {
            r.observe(&obs(0, i as f64, Some(i)));
        }
        let s = &r.series()[0];
        assert_eq!(s.seen, 9);
        let kept: Vec<u64> = s.points.iter().map(|p| p.index).collect();
        assert_eq!(kept, [0, 4, 8], "stride doubled twice, every point a multiple of it");
        assert!(s.points.len() < 4);
    }

    #[test]
    fn the_recorder_keeps_points_of_drawn_metrics_only_and_a_panel_shares_its_points() {
        let mut each = Recorder::new(100, Panels::Each);
        let mut one = Recorder::new(100, Panels::One);
        for m in 0..30 {
            for v in 0..40 {
                each.observe(&obs(m, f64::from(v), None));
                one.observe(&obs(m, f64::from(v), None));
            }
        }
        let points = |r: &Recorder| r.series().iter().map(|s| s.points.len()).collect::<Vec<_>>();
        assert_eq!(points(&each)[..MAX_PANELS], [40; MAX_PANELS]);
        assert!(points(&each)[MAX_PANELS..].iter().all(|&n| n == 0));
        assert!(each.series().iter().all(|s| s.seen == 40), "every observation counted");
        let shared = points(&one);
        assert!(shared[..PALETTE.len()].iter().all(|&n| n > 0 && n < 100 / PALETTE.len()), "{shared:?}");
        assert!(shared[PALETTE.len()..].iter().all(|&n| n == 0));
    }

    #[test]
    fn timestamps_become_unix_seconds() {
        assert_eq!(rfc3339_seconds(b"1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(rfc3339_seconds(b"2024-05-01T12:00:00.5Z"), Some(1_714_564_800.5));
        assert_eq!(rfc3339_seconds(b"2024-05-01T14:00:00+02:00"), Some(1_714_564_800.0));
        assert_eq!(rfc3339_seconds(b"yesterday"), None);
    }

    #[test]
    fn ticks_have_few_digits() {
        assert_eq!(tick(0.9733, 0.05, 0.95), "0.97");
        assert_eq!(tick(120.0, 0.0, 300.0), "120");
        assert_eq!(tick(6.78e-21, 0.0, 2e-4), "0", "float noise near zero");
        assert_eq!(tick(1.5e-4, 0.0, 2e-4), "1.5e-4", "a tiny axis is all scientific");
        assert_eq!(tick(1e-4, 0.0, 2e-4), "1e-4");
        assert_eq!(tick(1_200_000.0, 0.0, 1_500_000.0), "1.2M", "a long axis counts in millions");
        assert_eq!(tick(200_000.0, 0.0, 1_500_000.0), "0.2M");
        assert_eq!(tick(40_000.0, 0.0, 150_000.0), "40000");
        assert_eq!(short(2e-4), "2e-4");
        assert_eq!(short(0.97333336), "0.9733");
        assert_eq!(short(74.05998), "74.06");
    }
}
