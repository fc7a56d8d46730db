//! Camera format negotiation as a pure function of what the camera offers and what was asked.
//!
//! A camera lists pixel formats, each with frame sizes, each with frame rates. imexdepth decodes
//! MJPEG, YUYV and NV12. The choice, in order of importance:
//!
//! 1. a format imexdepth decodes (cameras offering only others, e.g. Bayer, are refused with
//!    the list of what they offer);
//! 2. the requested size exactly;
//! 3. a rate at or above the requested one (live depth wants rate more than pixels: a YUYV
//!    camera asked for 800x600 at 30 fps gets 640x480 at 30, not 1280x960 at 7.5);
//! 4. the preferred format (`--pixel-format`);
//! 5. the closest size: the smallest larger one, else the largest smaller one;
//! 6. YUYV (no decode cost, lowest latency) where it reaches the rate, then MJPEG (what USB 2
//!    cameras need for large sizes at full rate), then NV12;
//! 7. the rate closest to the requested one.
//!
//! A preferred format the camera lacks is not an error: the choice falls back and says so.

use std::fmt;

/// A pixel format by its V4L2 four-character code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FourCc(pub [u8; 4]);

impl FourCc {
    pub const MJPEG: FourCc = FourCc(*b"MJPG");
    pub const YUYV: FourCc = FourCc(*b"YUYV");
    pub const NV12: FourCc = FourCc(*b"NV12");
}

impl fmt::Display for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", String::from_utf8_lossy(&self.0).trim_end())
    }
}

/// The formats imexdepth decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PixelFormat {
    Mjpeg,
    Yuyv,
    Nv12,
}

impl PixelFormat {
    pub fn fourcc(self) -> FourCc {
        match self {
            PixelFormat::Mjpeg => FourCc::MJPEG,
            PixelFormat::Yuyv => FourCc::YUYV,
            PixelFormat::Nv12 => FourCc::NV12,
        }
    }

    pub fn from_fourcc(code: FourCc) -> Option<Self> {
        [PixelFormat::Mjpeg, PixelFormat::Yuyv, PixelFormat::Nv12]
            .into_iter()
            .find(|f| f.fourcc() == code)
    }
}

/// `--pixel-format`: a format to prefer, or automatic choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatPreference {
    #[default]
    Auto,
    Mjpeg,
    Yuyv,
    Nv12,
}

impl FormatPreference {
    fn format(self) -> Option<PixelFormat> {
        match self {
            FormatPreference::Auto => None,
            FormatPreference::Mjpeg => Some(PixelFormat::Mjpeg),
            FormatPreference::Yuyv => Some(PixelFormat::Yuyv),
            FormatPreference::Nv12 => Some(PixelFormat::Nv12),
        }
    }
}

/// One frame size of a format and the rates offered at it.
#[derive(Clone, Debug, PartialEq)]
pub struct SizeCaps {
    pub width: u32,
    pub height: u32,
    /// Frames per second; empty if the camera does not say (taken as any rate).
    pub fps: Vec<f64>,
}

/// One pixel format and its sizes, as the camera lists them.
#[derive(Clone, Debug, PartialEq)]
pub struct FormatCaps {
    pub fourcc: FourCc,
    /// The driver's description, e.g. `"Motion-JPEG"`.
    pub description: String,
    pub sizes: Vec<SizeCaps>,
}

/// What the user asked for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Request {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub preference: FormatPreference,
}

/// The negotiated mode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    /// The rate to ask for; `None` if the camera lists none.
    pub fps: Option<f64>,
    /// The preferred format was not offered (or did not fit) and another was chosen.
    pub fell_back: bool,
}

/// Negotiation failures.
#[derive(Debug, thiserror::Error)]
pub enum NegotiationError {
    #[error(
        "the camera offers {}; imexdepth decodes MJPG, YUYV and NV12 (convert with v4l2loopback \
         or a GStreamer pipeline)",
        offered.join(", ")
    )]
    NoUsableFormat { offered: Vec<String> },
}

/// Chooses a mode; see the module documentation for the order of preferences.
pub fn negotiate(caps: &[FormatCaps], request: &Request) -> Result<Choice, NegotiationError> {
    let best = caps
        .iter()
        .filter_map(|c| PixelFormat::from_fourcc(c.fourcc).map(|f| (f, c)))
        .filter_map(|(format, c)| best_mode(format, c, request))
        .max_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    let Some((_, mut choice)) = best else {
        let offered = caps.iter().map(|c| format!("{} ({})", c.fourcc, c.description)).collect();
        return Err(NegotiationError::NoUsableFormat { offered });
    };
    choice.fell_back = request.preference.format().is_some_and(|f| f != choice.format);
    Ok(choice)
}

/// Ranking of one candidate: bigger is better, compared field by field.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
struct Score {
    exact_size: bool,
    reaches_rate: bool,
    preferred: bool,
    size_fit: f64,
    format_rank: u8,
    rate_fit: f64,
}

fn best_mode(format: PixelFormat, caps: &FormatCaps, req: &Request) -> Option<(Score, Choice)> {
    caps.sizes
        .iter()
        .map(|size| {
            let fps = pick_rate(&size.fps, req.fps);
            let reaches_rate = fps.is_none_or(|f| f >= req.fps - 0.5);
            let score = Score {
                exact_size: size.width == req.width && size.height == req.height,
                reaches_rate,
                preferred: req.preference.format() == Some(format),
                size_fit: size_fit(size, req),
                format_rank: format_rank(format, reaches_rate),
                rate_fit: -fps.map_or(0.0, |f| (f - req.fps).abs()),
            };
            let (width, height) = (size.width, size.height);
            (score, Choice { format, width, height, fps, fell_back: false })
        })
        .max_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal))
}

/// Larger sizes beat smaller ones; among larger ones the closest wins.
fn size_fit(size: &SizeCaps, req: &Request) -> f64 {
    let (area, want) = (f64::from(size.width * size.height), f64::from(req.width * req.height));
    if area >= want { 1.0 / (1.0 + area / want) + 1.0 } else { area / want }
}

fn format_rank(format: PixelFormat, reaches_rate: bool) -> u8 {
    match (format, reaches_rate) {
        (PixelFormat::Yuyv, true) => 3,
        (PixelFormat::Mjpeg, _) => 2,
        (PixelFormat::Nv12, _) => 1,
        (PixelFormat::Yuyv, false) => 0,
    }
}

/// The lowest rate at or above `want`, else the highest offered.
fn pick_rate(rates: &[f64], want: f64) -> Option<f64> {
    let at_least = rates.iter().copied().filter(|&r| r >= want - 0.5).reduce(f64::min);
    at_least.or_else(|| rates.iter().copied().reduce(f64::max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(width: u32, height: u32, fps: &[f64]) -> SizeCaps {
        SizeCaps { width, height, fps: fps.to_vec() }
    }

    fn request(width: u32, height: u32, fps: f64) -> Request {
        Request { width, height, fps, preference: FormatPreference::Auto }
    }

    #[test]
    fn rate_choice() {
        assert_eq!(pick_rate(&[5.0, 15.0, 30.0], 20.0), Some(30.0));
        assert_eq!(pick_rate(&[5.0, 15.0], 30.0), Some(15.0));
        assert_eq!(pick_rate(&[], 30.0), None);
    }

    #[test]
    fn exact_size_beats_larger() {
        let caps = [FormatCaps {
            fourcc: FourCc::YUYV,
            description: "YUYV".into(),
            sizes: vec![size(1280, 720, &[10.0]), size(640, 480, &[30.0]), size(320, 240, &[30.0])],
        }];
        let choice = negotiate(&caps, &request(640, 480, 30.0)).unwrap();
        assert_eq!((choice.width, choice.height, choice.fps), (640, 480, Some(30.0)));
        let choice = negotiate(&caps, &request(800, 600, 10.0)).unwrap();
        assert_eq!((choice.width, choice.height), (1280, 720));
        let choice = negotiate(&caps, &request(800, 600, 30.0)).unwrap();
        assert_eq!((choice.width, choice.height), (640, 480), "rate before size");
    }
}
