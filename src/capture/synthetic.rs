//! A synthetic moving scene for demos and tests: a wall, a chequered floor receding to a
//! horizon, and a ball circling in front of them, drawn procedurally at any size and rate.
//!
//! `synthetic` or `synthetic:WIDTHxHEIGHT`; `--size` and `--fps` apply too. Frames are
//! deterministic in their sequence number, so tests can compare runs.

use std::time::Duration;

use super::pace::Pacer;
use super::{CaptureError, DEFAULT_IMAGE_FPS, Frame, FrameSource, SourceOptions, parse_size};

/// Default size of the synthetic scene.
pub const DEFAULT_SIZE: (u32, u32) = (320, 240);

/// The synthetic scene.
pub struct SyntheticSource {
    width: u32,
    height: u32,
    fps: f64,
    pacer: Pacer,
    limit: Option<u64>,
    seq: u64,
}

impl SyntheticSource {
    /// A scene of `width x height` at `fps`, endless.
    pub fn new(width: u32, height: u32, fps: f64) -> Self {
        Self { width, height, fps, pacer: Pacer::new(fps), limit: None, seq: 0 }
    }

    /// Parses `synthetic[:WxH]` with the companion flags.
    pub fn from_spec(options: &SourceOptions) -> Result<Self, CaptureError> {
        let size = match options.spec.strip_prefix("synthetic:") {
            Some(text) => parse_size(text).ok_or_else(|| CaptureError::BadSpec {
                spec: options.spec.clone(),
                expected: "synthetic or synthetic:WIDTHxHEIGHT, e.g. synthetic:320x240",
            })?,
            None => options.size.unwrap_or(DEFAULT_SIZE),
        };
        let fps = options.fps.unwrap_or(DEFAULT_IMAGE_FPS);
        if !(fps.is_finite() && fps > 0.0) {
            return Err(CaptureError::BadSpec { spec: format!("--fps {fps}"), expected: "> 0" });
        }
        Ok(Self::new(size.0, size.1, fps))
    }

    /// Ends the stream after `frames` frames.
    pub fn with_limit(mut self, frames: u64) -> Self {
        self.limit = Some(frames);
        self
    }
}

impl FrameSource for SyntheticSource {
    fn describe(&self) -> String {
        format!("synthetic scene {}x{} @ {} fps", self.width, self.height, self.fps)
    }

    fn nominal_fps(&self) -> Option<f64> {
        Some(self.fps)
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        if self.limit.is_some_and(|limit| self.seq >= limit) {
            return Ok(None);
        }
        let image = render(self.width, self.height, self.seq as f32 / self.fps as f32);
        let captured = self.pacer.wait();
        let timestamp = Duration::from_secs_f64(self.seq as f64 / self.fps);
        let frame = Frame { image, captured, timestamp, seq: self.seq };
        self.seq += 1;
        Ok(Some(frame))
    }
}

/// Draws the scene at time `t` seconds.
pub fn render(width: u32, height: u32, t: f32) -> image::RgbImage {
    let (w, h) = (width as f32, height as f32);
    let horizon = 0.45 * h;
    let (cx, cy) = (w * (0.5 + 0.3 * (0.7 * t).cos()), h * (0.62 + 0.12 * (0.7 * t).sin()));
    let radius = 0.12 * h * (1.0 + 0.3 * (0.7 * t).sin());
    image::RgbImage::from_fn(width, height, |x, y| {
        let (x, y) = (x as f32 + 0.5, y as f32 + 0.5);
        let (dx, dy) = ((x - cx) / radius, (y - cy) / radius);
        if dx * dx + dy * dy <= 1.0 {
            return ball(dx, dy);
        }
        if y < horizon { wall(x / w, y / horizon) } else { floor(x - w / 2.0, y - horizon, t) }
    })
}

fn ball(dx: f32, dy: f32) -> image::Rgb<u8> {
    let dz = (1.0 - dx * dx - dy * dy).max(0.0).sqrt();
    let light = (0.2 + 0.8 * (-0.4 * dx - 0.5 * dy + 0.77 * dz).max(0.0)).min(1.0);
    image::Rgb([(230.0 * light) as u8, (90.0 * light) as u8, (40.0 * light) as u8])
}

fn wall(u: f32, v: f32) -> image::Rgb<u8> {
    let stripe = if ((u * 12.0) as i32) % 2 == 0 { 1.0 } else { 0.93 };
    let shade = (0.55 + 0.35 * v) * stripe;
    image::Rgb([(200.0 * shade) as u8, (190.0 * shade) as u8, (170.0 * shade) as u8])
}

fn floor(x: f32, below: f32, t: f32) -> image::Rgb<u8> {
    // Perspective: distance along the floor goes as 1 / (rows below the horizon).
    let z = 40.0 / below.max(0.5);
    let (u, v) = (x * z / 40.0, z + 0.3 * t);
    let check = ((u.floor() as i64) + (v.floor() as i64)).rem_euclid(2) == 0;
    let fade = 1.0 / (1.0 + 0.05 * z);
    let base = if check { 150.0 } else { 70.0 };
    let g = (base * fade + 40.0) as u8;
    image::Rgb([g, (g as f32 * 0.9) as u8, (g as f32 * 0.8) as u8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_moving() {
        let a = render(64, 48, 0.0);
        assert_eq!(a, render(64, 48, 0.0));
        assert_ne!(a, render(64, 48, 1.0));
    }

    #[test]
    fn spec_size_and_limit() {
        let options = SourceOptions::new("synthetic:32x16");
        let mut source = SyntheticSource::from_spec(&options).unwrap().with_limit(1);
        let frame = source.next_frame().unwrap().unwrap();
        assert_eq!(frame.image.dimensions(), (32, 16));
        assert!(source.next_frame().unwrap().is_none());
        assert!(SyntheticSource::from_spec(&SourceOptions::new("synthetic:big")).is_err());
    }
}
