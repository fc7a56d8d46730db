//! Recording what the live view shows: H.264 MP4 of the canvas (feature `mp4`) and raw frames
//! (RGB picture + 16-bit depth PNG + a JSON sidecar).
//!
//! # MP4
//!
//! Each canvas is encoded by OpenH264 (built from its bundled source) and muxed by `muxide`
//! with presentation time = capture time of the frame minus capture time of the first recorded
//! frame, so the file's duration equals the wall-clock time it covers whatever the frame rate
//! achieved; the last frame lasts as long as the one before it. While recording is paused
//! (`r`), time stops: the paused span is cut out of the file.
//!
//! # Raw
//!
//! `DIR/rgb_000000.png`: the picture the depth is aligned with (model input size, 8-bit RGB).
//! `DIR/depth_000000.png`: depth, 16-bit grey, in millimetres (relative models: relative depth
//! x 1000), 0 where the depth is invalid or negative, 65535 where it is 65.535 m or more.
//! `DIR/meta.json`: model, engine, units, size, intrinsics (null when unknown) and, per frame,
//! its index, source sequence number and capture time. It is rewritten every
//! [`SIDECAR_EVERY`] frames and at the end, so a killed run loses at most that many entries.
//!
//! # Limitations
//!
//! `muxide` keeps the encoded samples in memory until the file is finished (about 3 MB a
//! minute of a 704x240 canvas at constant quality), and writes the file only then: a process
//! killed with SIGKILL leaves no MP4. Ctrl-C and SIGTERM finish it properly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use image::RgbImage;
use serde::Serialize;

use crate::postprocess::{DepthMap, DepthUnit};

/// Sidecar rewrite interval, frames.
pub const SIDECAR_EVERY: usize = 25;

/// Errors of recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{path}: cannot write: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot write PNG: {source}")]
    Png {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[cfg(feature = "mp4")]
    #[error("{path}: H.264 encoding failed: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: openh264::Error,
    },
    #[cfg(feature = "mp4")]
    #[error("{path}: MP4 muxing failed: {source}")]
    Mux {
        path: PathBuf,
        #[source]
        source: muxide::api::MuxerError,
    },
    #[error("{path}: MP4 recording needs imexdepth built with the cargo feature `mp4`")]
    NotBuilt { path: PathBuf },
    #[error("{path}: frame size changed from {expected:?} to {found:?} while recording")]
    FrameSize { path: PathBuf, expected: (u32, u32), found: (u32, u32) },
}

/// One shown frame, as the sinks see it.
pub struct Shown<'a> {
    /// The composed canvas (what the window shows).
    pub canvas: &'a RgbImage,
    /// The picture the depth is aligned with.
    pub view: &'a RgbImage,
    pub depth: &'a DepthMap,
    /// Capture time, from the start of the run.
    pub captured: Duration,
    /// The source's frame number.
    pub seq: u64,
}

/// What a sink wrote.
#[derive(Clone, Debug, Serialize)]
pub struct SinkReport {
    pub path: PathBuf,
    pub frames: u64,
    /// Media duration (MP4) or capture span (raw), seconds.
    pub duration_s: f64,
    pub bytes: u64,
}

/// Something that records shown frames.
pub trait FrameSink: Send {
    /// Where it writes.
    fn path(&self) -> &Path;
    /// Records one frame.
    fn write(&mut self, shown: &Shown<'_>) -> Result<(), RecordError>;
    /// Stops the clock until the next write (recording paused).
    fn pause(&mut self);
    /// Finishes the files.
    fn finish(self: Box<Self>) -> Result<SinkReport, RecordError>;
}

/// Keeps presentation times strictly increasing and cuts out paused spans.
#[derive(Debug, Default)]
#[cfg_attr(not(feature = "mp4"), allow(dead_code))]
struct MediaClock {
    offset: Option<Duration>,
    last: Option<Duration>,
    paused: bool,
    period: Duration,
}

#[cfg_attr(not(feature = "mp4"), allow(dead_code))]
impl MediaClock {
    /// Presentation time of a frame captured at `captured`.
    fn pts(&mut self, captured: Duration) -> Duration {
        let offset = *self.offset.get_or_insert(captured);
        if self.paused {
            // Resume one frame period after the last frame.
            let resume = self.last.map_or(Duration::ZERO, |l| l + self.period);
            self.offset = Some(captured.saturating_sub(resume));
            self.paused = false;
        }
        let offset = self.offset.unwrap_or(offset);
        let mut pts = captured.saturating_sub(offset);
        if let Some(last) = self.last.filter(|&l| pts <= l) {
            pts = last + Duration::from_millis(1);
        }
        if let Some(last) = self.last {
            self.period = pts - last;
        }
        self.last = Some(pts);
        pts
    }
}

/// H.264 MP4 of the canvas.
#[cfg(feature = "mp4")]
pub struct Mp4Recorder {
    path: PathBuf,
    encoder: openh264::encoder::Encoder,
    muxer: muxide::api::Muxer<std::io::BufWriter<std::fs::File>>,
    size: (u32, u32),
    clock: MediaClock,
    frames: u64,
}

#[cfg(feature = "mp4")]
impl Mp4Recorder {
    /// Creates `path` for canvases of `size` (odd sizes lose their last row/column) at a
    /// nominal `fps` (the real timing comes from the capture times).
    pub fn create(path: &Path, size: (u32, u32), fps: f64) -> Result<Self, RecordError> {
        use openh264::encoder::{
            BitRate, EncoderConfig, FrameRate, IntraFramePeriod, RateControlMode,
        };
        let size = (size.0 & !1, size.1 & !1);
        let pixels = f64::from(size.0 * size.1);
        let config = EncoderConfig::new()
            .skip_frames(false)
            // Constant quality: rate control would want to skip frames, and every frame counts.
            .rate_control_mode(RateControlMode::Off)
            .max_frame_rate(FrameRate::from_hz(fps.clamp(1.0, 120.0) as f32))
            .bitrate(BitRate::from_bps((pixels * 8.0).clamp(500_000.0, 8_000_000.0) as u32))
            .intra_frame_period(IntraFramePeriod::from_num_frames((fps * 2.0).max(1.0) as u32));
        let api = openh264::OpenH264API::from_source();
        let encoder = openh264::encoder::Encoder::with_api_config(api, config)
            .map_err(|source| RecordError::Encode { path: path.to_path_buf(), source })?;
        let io_error = |source| RecordError::Io { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_error)?;
        }
        let file = std::io::BufWriter::new(std::fs::File::create(path).map_err(io_error)?);
        let muxer = muxide::api::MuxerBuilder::new(file)
            .video(muxide::api::VideoCodec::H264, size.0, size.1, fps)
            .build()
            .map_err(|source| RecordError::Mux { path: path.to_path_buf(), source })?;
        let (path, clock) = (path.to_path_buf(), MediaClock::default());
        Ok(Self { path, encoder, muxer, size, clock, frames: 0 })
    }

    fn encode(&mut self, canvas: &RgbImage) -> Result<(Vec<u8>, bool), RecordError> {
        use openh264::encoder::FrameType;
        use openh264::formats::{RgbSliceU8, YUVBuffer};
        let even = crop_even(canvas, self.size);
        let (w, h) = (self.size.0 as usize, self.size.1 as usize);
        let yuv = YUVBuffer::from_rgb8_source(RgbSliceU8::new(even.as_raw(), (w, h)));
        let path = &self.path;
        let stream = self
            .encoder
            .encode(&yuv)
            .map_err(|source| RecordError::Encode { path: path.clone(), source })?;
        let key = matches!(stream.frame_type(), FrameType::IDR | FrameType::I);
        Ok((stream.to_vec(), key))
    }
}

#[cfg(feature = "mp4")]
impl FrameSink for Mp4Recorder {
    fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, shown: &Shown<'_>) -> Result<(), RecordError> {
        let found = shown.canvas.dimensions();
        if (found.0 & !1, found.1 & !1) != self.size {
            let path = self.path.clone();
            return Err(RecordError::FrameSize { path, expected: self.size, found });
        }
        let (data, key) = self.encode(shown.canvas)?;
        if data.is_empty() {
            return Ok(());
        }
        let pts = self.clock.pts(shown.captured).as_secs_f64();
        let path = &self.path;
        self.muxer
            .write_video(pts, &data, key)
            .map_err(|source| RecordError::Mux { path: path.clone(), source })?;
        self.frames += 1;
        Ok(())
    }

    fn pause(&mut self) {
        self.clock.paused = true;
    }

    fn finish(self: Box<Self>) -> Result<SinkReport, RecordError> {
        let path = self.path.clone();
        let stats = self
            .muxer
            .finish_with_stats()
            .map_err(|source| RecordError::Mux { path: path.clone(), source })?;
        let frames = stats.video_frames;
        Ok(SinkReport { path, frames, duration_s: stats.duration_secs, bytes: stats.bytes_written })
    }
}

/// The top-left `size` of `image` (a copy only when it differs).
#[cfg(feature = "mp4")]
fn crop_even(image: &RgbImage, size: (u32, u32)) -> std::borrow::Cow<'_, RgbImage> {
    if image.dimensions() == size {
        return std::borrow::Cow::Borrowed(image);
    }
    std::borrow::Cow::Owned(image::imageops::crop_imm(image, 0, 0, size.0, size.1).to_image())
}

/// Opens the MP4 recorder, or says that this build has none.
pub fn create_mp4(
    path: &Path,
    size: (u32, u32),
    fps: f64,
) -> Result<Box<dyn FrameSink>, RecordError> {
    #[cfg(feature = "mp4")]
    return Ok(Box::new(Mp4Recorder::create(path, size, fps)?));
    #[cfg(not(feature = "mp4"))]
    {
        let _ = (size, fps);
        Err(RecordError::NotBuilt { path: path.to_path_buf() })
    }
}

/// The raw sidecar, `meta.json`.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct RawSidecar {
    /// `"imexdepth-raw/1"`.
    pub format: String,
    pub model: String,
    pub engine: String,
    pub provider: String,
    pub width: u32,
    pub height: u32,
    pub rgb_pattern: String,
    pub depth_pattern: String,
    /// `"mm"` (metric models) or `"relative/1000"`.
    pub depth_unit: String,
    /// Depth value times this = depth in the model's unit (metres for metric models).
    pub depth_scale: f64,
    /// Depth value meaning "no depth".
    pub depth_invalid: u16,
    /// Pinhole intrinsics `[fx, fy, cx, cy]` in pixels of the saved pictures, if known.
    pub intrinsics: Option<[f64; 4]>,
    pub frames: Vec<RawFrame>,
}

/// One frame of the sidecar.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct RawFrame {
    pub index: u64,
    /// The source's frame number.
    pub seq: u64,
    /// Capture time since the start of the run, seconds.
    pub t_capture_s: f64,
}

/// What the raw recorder needs to describe the run.
#[derive(Clone, Debug)]
pub struct RawInfo {
    pub model: String,
    pub engine: String,
    pub provider: String,
    pub intrinsics: Option<[f64; 4]>,
}

/// Per-frame RGB + 16-bit depth PNGs and a JSON sidecar.
pub struct RawRecorder {
    dir: PathBuf,
    info: RawInfo,
    frames: Vec<RawFrame>,
    size: Option<(u32, u32)>,
    unit: DepthUnit,
    bytes: u64,
}

impl RawRecorder {
    /// Creates `dir` (and parents).
    pub fn create(dir: &Path, info: RawInfo) -> Result<Self, RecordError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| RecordError::Io { path: dir.to_path_buf(), source })?;
        let dir = dir.to_path_buf();
        Ok(Self { dir, info, frames: Vec::new(), size: None, unit: DepthUnit::Metres, bytes: 0 })
    }

    fn sidecar(&self) -> RawSidecar {
        let (width, height) = self.size.unwrap_or((0, 0));
        let metric = self.unit == DepthUnit::Metres;
        RawSidecar {
            format: "imexdepth-raw/1".into(),
            model: self.info.model.clone(),
            engine: self.info.engine.clone(),
            provider: self.info.provider.clone(),
            width,
            height,
            rgb_pattern: "rgb_%06d.png".into(),
            depth_pattern: "depth_%06d.png".into(),
            depth_unit: if metric { "mm" } else { "relative/1000" }.into(),
            depth_scale: 0.001,
            depth_invalid: 0,
            intrinsics: self.info.intrinsics,
            frames: self.frames.clone(),
        }
    }

    /// Writes `meta.json` through a temporary file, so a reader never sees half of it.
    fn write_sidecar(&self) -> Result<(), RecordError> {
        let path = self.dir.join("meta.json");
        let tmp = self.dir.join("meta.json.tmp");
        let text = serde_json::to_string_pretty(&self.sidecar()).expect("sidecar serialises");
        let io_error = |source| RecordError::Io { path: path.clone(), source };
        std::fs::write(&tmp, text).map_err(io_error)?;
        std::fs::rename(&tmp, &path).map_err(io_error)
    }

    fn save_png(
        &mut self,
        path: PathBuf,
        save: impl FnOnce(&Path) -> image::ImageResult<()>,
    ) -> Result<(), RecordError> {
        save(&path).map_err(|source| RecordError::Png { path: path.clone(), source })?;
        self.bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Ok(())
    }
}

impl FrameSink for RawRecorder {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn write(&mut self, shown: &Shown<'_>) -> Result<(), RecordError> {
        let index = self.frames.len() as u64;
        self.size.get_or_insert(shown.view.dimensions());
        self.unit = shown.depth.unit;
        let rgb = self.dir.join(format!("rgb_{index:06}.png"));
        self.save_png(rgb, |p| shown.view.save(p))?;
        let depth = depth_to_mm(shown.depth);
        self.save_png(self.dir.join(format!("depth_{index:06}.png")), |p| depth.save(p))?;
        let t_capture_s = shown.captured.as_secs_f64();
        self.frames.push(RawFrame { index, seq: shown.seq, t_capture_s });
        if self.frames.len() % SIDECAR_EVERY == 1 {
            self.write_sidecar()?;
        }
        Ok(())
    }

    fn pause(&mut self) {}

    fn finish(self: Box<Self>) -> Result<SinkReport, RecordError> {
        self.write_sidecar()?;
        let duration_s = match (self.frames.first(), self.frames.last()) {
            (Some(a), Some(b)) => b.t_capture_s - a.t_capture_s,
            _ => 0.0,
        };
        let frames = self.frames.len() as u64;
        Ok(SinkReport { path: self.dir.clone(), frames, duration_s, bytes: self.bytes })
    }
}

/// Depth to 16-bit millimetres (relative depth: x 1000): 0 for invalid, saturating at 65535.
pub fn depth_to_mm(depth: &DepthMap) -> image::ImageBuffer<image::Luma<u16>, Vec<u16>> {
    let data =
        depth
            .data
            .iter()
            .map(|&d| {
                if d.is_finite() && d > 0.0 { (d * 1000.0).round().min(65535.0) as u16 } else { 0 }
            })
            .collect();
    image::ImageBuffer::from_raw(depth.width, depth.height, data).expect("one value per pixel")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_clock_is_increasing_and_skips_pauses() {
        let mut clock = MediaClock::default();
        let ms = Duration::from_millis;
        assert_eq!(clock.pts(ms(1000)), ms(0));
        assert_eq!(clock.pts(ms(1100)), ms(100));
        assert_eq!(clock.pts(ms(1100)), ms(101));
        clock.paused = true;
        assert_eq!(clock.pts(ms(5000)), ms(102));
        assert_eq!(clock.pts(ms(5100)), ms(202));
    }

    #[test]
    fn millimetres() {
        let depth = DepthMap {
            width: 4,
            height: 1,
            data: vec![1.2345, f32::NAN, -1.0, 100.0],
            unit: DepthUnit::Metres,
        };
        assert_eq!(depth_to_mm(&depth).into_raw(), vec![1235, 0, 0, 65535]);
    }
}
