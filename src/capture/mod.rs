//! Frame sources: V4L2 cameras, video files, still images and folders, a synthetic scene.
//!
//! Every source yields RGB frames stamped with their capture time. [`open`] parses the one
//! `--source` argument of the CLI:
//!
//! | `--source`                         | source                                         |
//! |------------------------------------|------------------------------------------------|
//! | `/dev/video0`, `0`                 | V4L2 camera (feature `v4l`)                    |
//! | `clip.y4m`                         | YUV4MPEG2 video, at its own rate               |
//! | `clip.mp4`                         | H.264 in MP4 (feature `mp4`), at its own rate  |
//! | `photo.png`, `dir/`, `'dir/*.png'` | still images played at `--fps`                 |
//! | `synthetic`, `synthetic:640x480`   | a moving synthetic scene                       |
//!
//! File sources are paced in real time (a deadline per frame, so pacing error does not
//! accumulate); images loop until the run is stopped and videos play once, unless `looping`
//! says otherwise.

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub mod images;
#[cfg(feature = "mp4")]
pub mod mp4file;
pub mod negotiate;
pub mod pace;
pub mod synthetic;
#[cfg(feature = "v4l")]
pub mod v4l2;
pub mod y4m;
pub mod yuv;

/// One captured picture.
#[derive(Clone, Debug)]
pub struct Frame {
    /// The picture, 8-bit RGB.
    pub image: image::RgbImage,
    /// When the frame was captured (or, for files, when it was read), on this machine's clock.
    pub captured: Instant,
    /// Media time since the start of the stream (from the file or the driver where known).
    pub timestamp: Duration,
    /// Frame number from the source, counting from 0; gaps mean frames the source dropped.
    pub seq: u64,
}

/// Something that yields frames.
pub trait FrameSource: Send {
    /// Human-readable description, e.g. `"/dev/video0 YUYV 640x480 @ 30 fps"`.
    fn describe(&self) -> String;
    /// Nominal frame rate, if the source has one.
    fn nominal_fps(&self) -> Option<f64>;
    /// The next frame; `Ok(None)` at the end of a finite stream.
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError>;
}

/// Errors of frame sources.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot decode image: {source}")]
    Image {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("{pattern}: no image files match (expected .png, .jpg or .jpeg files)")]
    NoImages { pattern: String },
    #[error("{spec}: {expected}")]
    BadSpec { spec: String, expected: &'static str },
    #[error("{path}: not a valid {format} file: {detail}")]
    Format { path: PathBuf, format: &'static str, detail: String },
    #[error("{path}: H.264 decoding failed at frame {frame}: {message}")]
    Decode { path: PathBuf, frame: u64, message: String },
    #[error("{what} needs imexdepth built with the cargo feature `{feature}`")]
    NotBuilt { what: String, feature: &'static str },
    #[error("{device}: camera error: {source}")]
    Camera {
        device: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Negotiation(#[from] negotiate::NegotiationError),
    #[error("{device}: no frame within {timeout:?}")]
    Timeout { device: String, timeout: Duration },
}

/// What `--source` and its companion flags ask for.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// The `--source` argument.
    pub spec: String,
    /// Rate for images and the synthetic scene; requested rate for cameras; an override for
    /// video files.
    pub fps: Option<f64>,
    /// Requested camera size / synthetic size.
    pub size: Option<(u32, u32)>,
    /// Camera pixel format preference.
    pub pixel_format: negotiate::FormatPreference,
    /// Loop at the end of the stream: `None` is each kind's default (images and the synthetic
    /// scene loop, video files play once).
    pub looping: Option<bool>,
}

impl SourceOptions {
    /// Options for `spec` with every companion flag at its default.
    pub fn new(spec: impl Into<String>) -> Self {
        Self {
            spec: spec.into(),
            fps: None,
            size: None,
            pixel_format: negotiate::FormatPreference::Auto,
            looping: None,
        }
    }
}

/// Default rate of still images and the synthetic scene.
pub const DEFAULT_IMAGE_FPS: f64 = 10.0;

/// Opens the source `options.spec` names.
pub fn open(options: &SourceOptions) -> Result<Box<dyn FrameSource>, CaptureError> {
    let spec = options.spec.as_str();
    if spec == "synthetic" || spec.starts_with("synthetic:") {
        return Ok(Box::new(synthetic::SyntheticSource::from_spec(options)?));
    }
    if is_camera(spec) {
        return open_camera(options);
    }
    let lower = spec.to_ascii_lowercase();
    if lower.ends_with(".y4m") {
        return Ok(Box::new(y4m::Y4mSource::open(spec.as_ref(), options)?));
    }
    if lower.ends_with(".mp4") || lower.ends_with(".m4v") || lower.ends_with(".mov") {
        return open_mp4(options);
    }
    Ok(Box::new(images::ImageSource::open(spec, options)?))
}

/// `/dev/videoN` or a bare camera index.
pub fn is_camera(spec: &str) -> bool {
    spec.starts_with("/dev/video") || (!spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(feature = "v4l")]
fn open_camera(options: &SourceOptions) -> Result<Box<dyn FrameSource>, CaptureError> {
    Ok(Box::new(v4l2::CameraSource::open(options)?))
}

#[cfg(not(feature = "v4l"))]
fn open_camera(options: &SourceOptions) -> Result<Box<dyn FrameSource>, CaptureError> {
    Err(CaptureError::NotBuilt { what: format!("camera {}", options.spec), feature: "v4l" })
}

#[cfg(feature = "mp4")]
fn open_mp4(options: &SourceOptions) -> Result<Box<dyn FrameSource>, CaptureError> {
    Ok(Box::new(mp4file::Mp4Source::open(options.spec.as_ref(), options)?))
}

#[cfg(not(feature = "mp4"))]
fn open_mp4(options: &SourceOptions) -> Result<Box<dyn FrameSource>, CaptureError> {
    Err(CaptureError::NotBuilt { what: format!("MP4 file {}", options.spec), feature: "mp4" })
}

/// Parses `WIDTHxHEIGHT`, e.g. `640x480`.
pub fn parse_size(text: &str) -> Option<(u32, u32)> {
    let (w, h) = text.split_once(['x', 'X'])?;
    let (w, h) = (w.trim().parse().ok()?, h.trim().parse().ok()?);
    (w > 0 && h > 0).then_some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_specs() {
        assert!(is_camera("/dev/video0"));
        assert!(is_camera("2"));
        assert!(!is_camera("assets/real/*.png"));
        assert!(!is_camera(""));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("640x480"), Some((640, 480)));
        assert_eq!(parse_size("0x480"), None);
        assert_eq!(parse_size("640"), None);
    }

    #[test]
    fn unknown_file_is_an_image_error() {
        let err = open(&SourceOptions::new("/nonexistent/x.png")).err().expect("must fail");
        assert!(err.to_string().contains("/nonexistent/x.png"), "{err}");
    }
}
