//! Frame sources: V4L2 cameras, video files, still images and folders, a synthetic scene.
//!
//! Every source yields RGB frames stamped with their capture time. `open` parses the one
//! `--source` argument of the CLI.

use std::time::{Duration, Instant};

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
    #[error("{path}: {message}")]
    Open { path: String, message: String },
}
