//! Model output to pictures: depth maps, colour maps, a colour range that does not flicker,
//! overlays, a colour bar with units and a HUD.
//!
//! # Colour scaling
//!
//! Depth `d` (metres, or relative units for models that say so) maps to a colour-map position
//! `t = 1 - (d - near) / (far - near)` clamped to [0, 1], so near is the map's hot/bright end
//! (`--invert` flips it). `near` and `far` are either fixed (`--range 0.5:6`) or follow the 2nd
//! and 98th percentiles of each frame, smoothed over frames (exponential moving average, weight
//! [`RANGE_SMOOTHING`] per frame) so that the colours do not flicker; never each frame's own
//! min and max. The span is kept at least [`MIN_SPAN`] so that flat frames do not divide by
//! zero. Non-finite depths are drawn black.
//!
//! # Canvas
//!
//! `[left panel | right panel | colour bar]`, each panel at the model's input size: the left
//! panel shows the picture, the overlay, or (view `picture-overlay`) the picture with the
//! overlay on the right; the right panel shows depth alone. The HUD is drawn at the top left
//! over a dark box, in an 8x8 bitmap font (`font8x8`).

use image::{Rgb, RgbImage};

use crate::model::{OutputKind, OutputSpec};
use crate::tensor::Tensor;

/// Weight of the newest frame in the smoothed colour range.
pub const RANGE_SMOOTHING: f32 = 0.1;
/// Smallest colour span, in depth units.
pub const MIN_SPAN: f32 = 1e-3;
/// Percentiles the automatic range follows.
pub const AUTO_PERCENTILES: (f32, f32) = (0.02, 0.98);
/// Width of the colour-bar strip at the right of the canvas (even, for video encoders).
pub const BAR_WIDTH: u32 = 64;
/// Most samples the percentile estimate looks at per frame.
const PERCENTILE_SAMPLES: usize = 8192;

/// Errors of postprocessing.
#[derive(Debug, thiserror::Error)]
pub enum PostprocessError {
    #[error("model output {kind:?} is not a depth map (expected kind depth or inverse_depth)")]
    NotDepth { kind: OutputKind },
    #[error("model output shape {shape:?} is not [1, 1, H, W]")]
    Shape { shape: [usize; 4] },
}

/// The unit of a depth map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DepthUnit {
    Metres,
    /// Depth up to an unknown scale.
    Relative,
}

impl DepthUnit {
    /// Short label: `"m"` or `"rel"`.
    pub fn label(self) -> &'static str {
        match self {
            DepthUnit::Metres => "m",
            DepthUnit::Relative => "rel",
        }
    }
}

/// A dense depth map, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct DepthMap {
    pub width: u32,
    pub height: u32,
    pub data: Vec<f32>,
    pub unit: DepthUnit,
}

impl DepthMap {
    /// Interprets an engine output: depth as is, inverse depth inverted (relative units).
    pub fn from_output(output: &Tensor, spec: &OutputSpec) -> Result<Self, PostprocessError> {
        let [n, c, h, w] = output.shape;
        if n != 1 || c != 1 {
            return Err(PostprocessError::Shape { shape: output.shape });
        }
        let (data, unit) = match spec.kind {
            OutputKind::Depth if spec.unit == "m" => (output.data.clone(), DepthUnit::Metres),
            OutputKind::Depth => (output.data.clone(), DepthUnit::Relative),
            OutputKind::InverseDepth => {
                (output.data.iter().map(|&v| 1.0 / v.max(1e-6)).collect(), DepthUnit::Relative)
            }
            kind => return Err(PostprocessError::NotDepth { kind }),
        };
        Ok(Self { width: w as u32, height: h as u32, data, unit })
    }

    /// Depth at pixel `(x, y)`, if inside.
    pub fn at(&self, x: u32, y: u32) -> Option<f32> {
        (x < self.width && y < self.height)
            .then(|| self.data[y as usize * self.width as usize + x as usize])
    }

    /// Bilinear resampling to `width x height` (pixel centres aligned).
    pub fn resized(&self, width: u32, height: u32) -> DepthMap {
        if (width, height) == (self.width, self.height) {
            return self.clone();
        }
        let (sx, sy) = (self.width as f32 / width as f32, self.height as f32 / height as f32);
        let mut data = Vec::with_capacity(width as usize * height as usize);
        for y in 0..height {
            let fy = ((y as f32 + 0.5) * sy - 0.5).clamp(0.0, (self.height - 1) as f32);
            for x in 0..width {
                let fx = ((x as f32 + 0.5) * sx - 0.5).clamp(0.0, (self.width - 1) as f32);
                data.push(self.bilinear(fx, fy));
            }
        }
        DepthMap { width, height, data, unit: self.unit }
    }

    fn bilinear(&self, fx: f32, fy: f32) -> f32 {
        let (x0, y0) = (fx as u32, fy as u32);
        let (x1, y1) = ((x0 + 1).min(self.width - 1), (y0 + 1).min(self.height - 1));
        let (ax, ay) = (fx - x0 as f32, fy - y0 as f32);
        let v = |x, y| self.data[y as usize * self.width as usize + x as usize];
        let top = v(x0, y0) * (1.0 - ax) + v(x1, y0) * ax;
        let bottom = v(x0, y1) * (1.0 - ax) + v(x1, y1) * ax;
        top * (1.0 - ay) + bottom * ay
    }
}

/// The colour maps offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Colormap {
    Turbo,
    Inferno,
    Magma,
    Viridis,
    Gray,
}

impl Colormap {
    pub const ALL: [Colormap; 5] =
        [Colormap::Turbo, Colormap::Inferno, Colormap::Magma, Colormap::Viridis, Colormap::Gray];

    /// The next map in [`Colormap::ALL`], wrapping.
    pub fn next(self) -> Colormap {
        let i = Self::ALL.iter().position(|&m| m == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }

    pub fn name(self) -> &'static str {
        match self {
            Colormap::Turbo => "turbo",
            Colormap::Inferno => "inferno",
            Colormap::Magma => "magma",
            Colormap::Viridis => "viridis",
            Colormap::Gray => "gray",
        }
    }
}

/// A colour map sampled at 256 positions, possibly inverted.
#[derive(Clone, Debug)]
pub struct Palette {
    pub map: Colormap,
    pub inverted: bool,
    lut: Vec<[u8; 3]>,
}

impl Palette {
    /// Samples `map` from `colorgrad`.
    pub fn new(map: Colormap, inverted: bool) -> Self {
        use colorgrad::Gradient;
        let gradient: Box<dyn Gradient> = match map {
            Colormap::Turbo => Box::new(colorgrad::preset::turbo()),
            Colormap::Inferno => Box::new(colorgrad::preset::inferno()),
            Colormap::Magma => Box::new(colorgrad::preset::magma()),
            Colormap::Viridis => Box::new(colorgrad::preset::viridis()),
            Colormap::Gray => Box::new(colorgrad::preset::greys()),
        };
        let lut = (0..256)
            .map(|i| {
                let mut t = i as f32 / 255.0;
                // greys runs white to black; every other map runs dark/cold to bright/hot.
                if (map == Colormap::Gray) != inverted {
                    t = 1.0 - t;
                }
                let [r, g, b, _] = gradient.at(t).to_rgba8();
                [r, g, b]
            })
            .collect();
        Self { map, inverted, lut }
    }

    /// Colour at position `t` in [0, 1] (clamped).
    pub fn at(&self, t: f32) -> [u8; 3] {
        self.lut[(t.clamp(0.0, 1.0) * 255.0).round() as usize]
    }
}

/// A colour range in depth units, `near < far`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DepthRange {
    pub near: f32,
    pub far: f32,
}

impl DepthRange {
    /// A range with at least [`MIN_SPAN`] between its ends.
    pub fn new(near: f32, far: f32) -> Self {
        let (near, far) = if near <= far { (near, far) } else { (far, near) };
        Self { near, far: far.max(near + MIN_SPAN) }
    }

    /// Colour-map position of depth `d`: 1 at `near`, 0 at `far`; `None` if not finite.
    pub fn position(&self, d: f32) -> Option<f32> {
        d.is_finite().then(|| (1.0 - (d - self.near) / (self.far - self.near)).clamp(0.0, 1.0))
    }

    /// Parses `NEAR:FAR`, e.g. `0.5:6`.
    pub fn parse(text: &str) -> Option<Self> {
        let (near, far) = text.split_once(':')?;
        let (near, far): (f32, f32) = (near.trim().parse().ok()?, far.trim().parse().ok()?);
        (near.is_finite() && far.is_finite() && near >= 0.0 && far > near)
            .then(|| Self::new(near, far))
    }
}

/// How the colour range is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RangeMode {
    Fixed(DepthRange),
    /// Smoothed percentiles.
    Auto,
}

/// Keeps the colour range across frames.
#[derive(Clone, Debug)]
pub struct RangeTracker {
    pub mode: RangeMode,
    smoothed: Option<DepthRange>,
}

impl RangeTracker {
    pub fn new(mode: RangeMode) -> Self {
        Self { mode, smoothed: None }
    }

    /// Switches between the fixed range (the current smoothed one if none was given) and auto.
    pub fn toggle(&mut self) {
        self.mode = match self.mode {
            RangeMode::Fixed(_) => RangeMode::Auto,
            RangeMode::Auto => RangeMode::Fixed(self.smoothed.unwrap_or(DepthRange::new(0.5, 5.0))),
        };
    }

    /// Folds in a frame and returns the range to colour it with.
    pub fn update(&mut self, depth: &DepthMap) -> DepthRange {
        if let Some((lo, hi)) = percentiles(&depth.data, AUTO_PERCENTILES) {
            let w = RANGE_SMOOTHING;
            self.smoothed = Some(match self.smoothed {
                None => DepthRange::new(lo, hi),
                Some(r) => DepthRange::new(r.near + w * (lo - r.near), r.far + w * (hi - r.far)),
            });
        }
        match self.mode {
            RangeMode::Fixed(range) => range,
            RangeMode::Auto => self.smoothed.unwrap_or(DepthRange::new(0.5, 5.0)),
        }
    }
}

/// The `(lo, hi)` quantiles of the finite values of `data`, from an evenly strided sample.
pub fn percentiles(data: &[f32], (lo, hi): (f32, f32)) -> Option<(f32, f32)> {
    let stride = data.len().div_ceil(PERCENTILE_SAMPLES).max(1);
    let mut sample: Vec<f32> =
        data.iter().step_by(stride).copied().filter(|v| v.is_finite()).collect();
    if sample.is_empty() {
        return None;
    }
    let last = sample.len() - 1;
    let lo_i = ((last as f32) * lo).round() as usize;
    let hi_i = ((last as f32) * hi).round() as usize;
    let lo_v = *sample.select_nth_unstable_by(lo_i, f32::total_cmp).1;
    let hi_v = *sample.select_nth_unstable_by(hi_i, f32::total_cmp).1;
    Some((lo_v, hi_v))
}

/// Colours a depth map; non-finite depths are black.
pub fn colorize(depth: &DepthMap, range: DepthRange, palette: &Palette) -> RgbImage {
    let mut out = RgbImage::new(depth.width, depth.height);
    for (px, &d) in out.pixels_mut().zip(&depth.data) {
        *px = Rgb(range.position(d).map_or([0, 0, 0], |t| palette.at(t)));
    }
    out
}

/// `alpha * overlay + (1 - alpha) * picture`, per channel; images of one size.
pub fn blend(picture: &RgbImage, overlay: &RgbImage, alpha: f32) -> RgbImage {
    assert_eq!(picture.dimensions(), overlay.dimensions(), "blend: image sizes differ");
    let a = alpha.clamp(0.0, 1.0);
    let mut out = picture.clone();
    for (o, &c) in out.iter_mut().zip(overlay.iter()) {
        *o = (a * f32::from(c) + (1.0 - a) * f32::from(*o)).round() as u8;
    }
    out
}

/// What the left panel shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum View {
    /// Picture | depth.
    PictureDepth,
    /// Overlay | depth.
    OverlayDepth,
    /// Picture | overlay.
    PictureOverlay,
}

impl View {
    /// The next view, wrapping.
    pub fn next(self) -> View {
        match self {
            View::PictureDepth => View::OverlayDepth,
            View::OverlayDepth => View::PictureOverlay,
            View::PictureOverlay => View::PictureDepth,
        }
    }
}

/// Everything the user can change while running.
#[derive(Clone, Debug)]
pub struct Style {
    pub view: View,
    pub palette: Palette,
    /// Overlay opacity in [0, 1].
    pub alpha: f32,
    pub show_hud: bool,
    pub show_help: bool,
}

impl Style {
    pub fn new(view: View, colormap: Colormap, inverted: bool, alpha: f32) -> Self {
        let palette = Palette::new(colormap, inverted);
        Self { view, palette, alpha: alpha.clamp(0.0, 1.0), show_hud: true, show_help: false }
    }
}

/// Size of the canvas for panels of `width x height`.
pub fn canvas_size(width: u32, height: u32) -> (u32, u32) {
    (2 * width + BAR_WIDTH, height)
}

/// One composed picture: panels, colour bar, HUD and, if the pointer is over a panel, a cross.
pub fn compose(
    view: &RgbImage,
    depth: &DepthMap,
    range: DepthRange,
    style: &Style,
    hud: &[String],
    pointer: Option<(u32, u32)>,
) -> RgbImage {
    let (w, h) = view.dimensions();
    let depth = depth.resized(w, h);
    let coloured = colorize(&depth, range, &style.palette);
    let (left, right) = match style.view {
        View::PictureDepth => (view.clone(), coloured),
        View::OverlayDepth => (blend(view, &coloured, style.alpha), coloured),
        View::PictureOverlay => (view.clone(), blend(view, &coloured, style.alpha)),
    };
    let (cw, ch) = canvas_size(w, h);
    let mut canvas = RgbImage::new(cw, ch);
    image::imageops::replace(&mut canvas, &left, 0, 0);
    image::imageops::replace(&mut canvas, &right, i64::from(w), 0);
    draw_colour_bar(&mut canvas, 2 * w, range, depth.unit, &style.palette);
    if let Some((x, y)) = pointer.filter(|&(x, y)| x < 2 * w && y < h) {
        draw_cross(&mut canvas, x, y);
    }
    if style.show_hud {
        draw_text_box(&mut canvas, 4, 4, hud);
    }
    if style.show_help {
        draw_text_box(&mut canvas, 4, h.saturating_sub(8 + 10 * HELP.len() as u32), &help_lines());
    }
    canvas
}

/// Key help, shown with `h` and in `--help`.
pub const HELP: [(&str, &str); 9] = [
    ("q, Esc", "quit (files are finished)"),
    ("v", "next view"),
    ("c", "next colour map"),
    ("i", "invert colour map"),
    ("f", "fixed / auto colour range"),
    ("+, -", "overlay opacity"),
    ("r", "start / stop recording"),
    ("d", "HUD on / off"),
    ("h", "this help"),
];

fn help_lines() -> Vec<String> {
    HELP.iter().map(|(key, what)| format!("{key:<7}{what}")).collect()
}

/// Depth under the pointer at canvas pixel `(x, y)`, if over a panel.
pub fn depth_under(depth: &DepthMap, panel: (u32, u32), x: u32, y: u32) -> Option<f32> {
    if y >= panel.1 || x >= 2 * panel.0 {
        return None;
    }
    let (px, py) = (x % panel.0, y);
    let dx = ((px as f32 + 0.5) * depth.width as f32 / panel.0 as f32) as u32;
    let dy = ((py as f32 + 0.5) * depth.height as f32 / panel.1 as f32) as u32;
    depth.at(dx.min(depth.width - 1), dy.min(depth.height - 1))
}

/// The colour bar: far at the top, near at the bottom, five labelled ticks and the unit.
fn draw_colour_bar(
    canvas: &mut RgbImage,
    x0: u32,
    range: DepthRange,
    unit: DepthUnit,
    palette: &Palette,
) {
    let h = canvas.height();
    let (top, bottom) = (14u32, h.saturating_sub(6));
    if bottom <= top + 4 {
        return;
    }
    fill(canvas, x0, 0, BAR_WIDTH, h, [24, 24, 24]);
    for y in top..bottom {
        let t = (y - top) as f32 / (bottom - 1 - top) as f32;
        fill(canvas, x0 + 4, y, 12, 1, palette.at(t));
    }
    draw_text(canvas, x0 + 4, 3, &format!("[{}]", unit.label()), [255, 255, 255]);
    for i in 0..5 {
        let t = i as f32 / 4.0;
        let y = top + ((bottom - 1 - top) as f32 * t) as u32;
        let value = range.far - t * (range.far - range.near);
        // Ticks notch the strip itself, so that they cannot be read as minus signs.
        if i > 0 && i < 4 {
            fill(canvas, x0 + 4, y, 4, 1, [0, 0, 0]);
            fill(canvas, x0 + 12, y, 4, 1, [0, 0, 0]);
        }
        let ty = y.saturating_sub(3).min(h.saturating_sub(8));
        draw_text(canvas, x0 + 20, ty, &format_depth(value), [255, 255, 255]);
    }
}

/// A depth label of at most five characters.
pub fn format_depth(value: f32) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn draw_cross(canvas: &mut RgbImage, x: u32, y: u32) {
    for d in -5i64..=5 {
        for (px, py) in [(i64::from(x) + d, i64::from(y)), (i64::from(x), i64::from(y) + d)] {
            if px >= 0 && py >= 0 && (px as u32) < canvas.width() && (py as u32) < canvas.height() {
                canvas.put_pixel(px as u32, py as u32, Rgb([255, 255, 255]));
            }
        }
    }
}

/// Lines of text on a dark box whose top left is `(x, y)`.
pub fn draw_text_box(canvas: &mut RgbImage, x: u32, y: u32, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let width = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u32 * 8 + 6;
    let height = lines.len() as u32 * 10 + 4;
    fill(canvas, x, y, width, height, HUD_BACKGROUND);
    for (i, line) in lines.iter().enumerate() {
        draw_text(canvas, x + 3, y + 3 + 10 * i as u32, line, HUD_TEXT);
    }
}

/// Colour of the HUD box.
pub const HUD_BACKGROUND: [u8; 3] = [16, 16, 16];
/// Colour of HUD text.
pub const HUD_TEXT: [u8; 3] = [255, 255, 96];

/// Draws `text` in the 8x8 font with its top left at `(x, y)`, clipped to the canvas.
pub fn draw_text(canvas: &mut RgbImage, x: u32, y: u32, text: &str, colour: [u8; 3]) {
    for (i, ch) in text.chars().enumerate() {
        let glyph =
            font8x8::legacy::BASIC_LEGACY[if ch.is_ascii() { ch as usize } else { '?' as usize }];
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                let (px, py) = (x + 8 * i as u32 + col, y + row as u32);
                if bits & (1 << col) != 0 && px < canvas.width() && py < canvas.height() {
                    canvas.put_pixel(px, py, Rgb(colour));
                }
            }
        }
    }
}

/// Fills a rectangle, clipped to the canvas.
fn fill(canvas: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, colour: [u8; 3]) {
    let (x1, y1) = ((x + w).min(canvas.width()), (y + h).min(canvas.height()));
    for py in y.min(y1)..y1 {
        for px in x.min(x1)..x1 {
            canvas.put_pixel(px, py, Rgb(colour));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(data: Vec<f32>, width: u32) -> DepthMap {
        let height = data.len() as u32 / width;
        DepthMap { width, height, data, unit: DepthUnit::Metres }
    }

    #[test]
    fn range_guards_flat_frames() {
        let flat = map(vec![2.0; 16], 4);
        let mut tracker = RangeTracker::new(RangeMode::Auto);
        let range = tracker.update(&flat);
        assert!(range.far - range.near >= 0.99 * MIN_SPAN, "{range:?}");
        assert_eq!(range.position(2.0), Some(1.0));
        assert_eq!(range.position(f32::NAN), None);
    }

    #[test]
    fn auto_range_is_smoothed_not_per_frame() {
        let mut tracker = RangeTracker::new(RangeMode::Auto);
        let near: Vec<f32> = (0..100).map(|i| 1.0 + i as f32 / 100.0).collect();
        let first = tracker.update(&map(near, 10));
        let far: Vec<f32> = (0..100).map(|i| 5.0 + i as f32 / 100.0).collect();
        let second = tracker.update(&map(far, 10));
        assert!(second.near > first.near && second.near < 2.0, "{first:?} -> {second:?}");
    }

    #[test]
    fn fixed_range_ignores_frames() {
        let fixed = DepthRange::parse("0.5:6").unwrap();
        let mut tracker = RangeTracker::new(RangeMode::Fixed(fixed));
        assert_eq!(tracker.update(&map(vec![100.0; 4], 2)), fixed);
        assert!(DepthRange::parse("6:0.5").is_none());
        assert!(DepthRange::parse("x").is_none());
    }

    #[test]
    fn palettes_invert_and_differ() {
        for m in Colormap::ALL {
            let (p, q) = (Palette::new(m, false), Palette::new(m, true));
            assert_eq!(p.at(0.0), q.at(1.0), "{m:?}");
            assert_eq!(p.at(1.0), q.at(0.0), "{m:?}");
        }
        assert_eq!(Palette::new(Colormap::Gray, false).at(1.0), [255, 255, 255]);
        assert_eq!(Colormap::Gray.next(), Colormap::Turbo);
    }

    #[test]
    fn percentile_ignores_nan() {
        let mut data: Vec<f32> = (0..101).map(|i| i as f32).collect();
        data.push(f32::NAN);
        assert_eq!(percentiles(&data, (0.0, 1.0)), Some((0.0, 100.0)));
        assert_eq!(percentiles(&[f32::NAN], (0.0, 1.0)), None);
    }

    #[test]
    fn blend_weights() {
        let a = RgbImage::from_pixel(1, 1, Rgb([0, 100, 200]));
        let b = RgbImage::from_pixel(1, 1, Rgb([200, 100, 0]));
        assert_eq!(blend(&a, &b, 0.25).get_pixel(0, 0).0, [50, 100, 150]);
    }

    #[test]
    fn resize_and_pointer() {
        let d = map(vec![1.0, 2.0, 3.0, 4.0], 2);
        assert_eq!(d.resized(2, 2), d);
        let big = d.resized(4, 4);
        assert_eq!(big.at(0, 0), Some(1.0));
        assert_eq!(big.at(3, 3), Some(4.0));
        assert_eq!(depth_under(&d, (4, 4), 7, 3), Some(4.0));
        assert_eq!(depth_under(&d, (4, 4), 8, 0), None);
    }

    #[test]
    fn canvas_has_bar_and_hud() {
        let view = RgbImage::from_pixel(64, 48, Rgb([128, 128, 128]));
        let depth = map((0..64 * 48).map(|i| 1.0 + (i / 64) as f32 / 10.0).collect(), 64);
        let style = Style::new(View::OverlayDepth, Colormap::Turbo, false, 0.5);
        let range = DepthRange::new(1.0, 5.8);
        let canvas = compose(&view, &depth, range, &style, &["fps 1".into()], None);
        assert_eq!(canvas.dimensions(), canvas_size(64, 48));
        assert_eq!(canvas.get_pixel(5, 5).0, HUD_BACKGROUND);
        assert_eq!(canvas.get_pixel(128 + 8, 14).0, style.palette.at(0.0));
        assert_ne!(canvas.get_pixel(32, 40).0, [128, 128, 128]);
    }
}
