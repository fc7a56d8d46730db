//! V4L2 cameras through the `v4l` crate (feature `v4l`): format negotiation, a small ring of
//! memory-mapped buffers, a read timeout, and reconnection when the device vanishes.
//!
//! The camera is asked for the mode [`negotiate`] picks from what it lists. Two buffers are
//! queued: V4L2 hands buffers back in FIFO order, so few buffers keep frames fresh (the live
//! pipeline then drops any frame it cannot use). A dequeue that waits longer than the read
//! timeout, or fails (`ENODEV` when a USB camera is unplugged), closes the device and reopens
//! it, once a second, for up to [`RECONNECT_FOR`]; each attempt is logged.
//!
//! # Quirks
//!
//! * MJPEG frames are decoded with the `image` crate; cameras that omit the Huffman tables
//!   (some older UVC models) are not supported.
//! * `v4l` 0.14's `query_controls()` panics on control types it does not know, so controls
//!   are not read.
//! * Capture timestamps are taken on this machine when a buffer is dequeued, not from the
//!   driver's clock.

use std::time::{Duration, Instant};

use v4l::buffer::Type;
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::io::traits::CaptureStream;
use v4l::prelude::{Device, MmapStream};
use v4l::video::Capture;

use super::negotiate::{self, Choice, FormatCaps, FourCc, PixelFormat, Request, SizeCaps};
use super::{CaptureError, Frame, FrameSource, SourceOptions, yuv};

/// Buffers queued in the driver.
pub const BUFFERS: u32 = 2;
/// How long a vanished camera is waited for.
pub const RECONNECT_FOR: Duration = Duration::from_secs(30);
/// Default request when `--size` / `--fps` are not given.
pub const DEFAULT_REQUEST: (u32, u32, f64) = (640, 480, 30.0);

/// An open V4L2 camera.
pub struct CameraSource {
    device: String,
    request: Request,
    choice: Choice,
    stream: Option<MmapStream<'static>>,
    stride: u32,
    timeout: Duration,
    started: Instant,
    seq: u64,
}

impl CameraSource {
    /// Opens the camera `options.spec` names (`/dev/videoN` or `N`) and negotiates a mode.
    pub fn open(options: &SourceOptions) -> Result<Self, CaptureError> {
        let device = device_path(&options.spec);
        let (w, h) = options.size.unwrap_or((DEFAULT_REQUEST.0, DEFAULT_REQUEST.1));
        let fps = options.fps.unwrap_or(DEFAULT_REQUEST.2);
        let request = Request { width: w, height: h, fps, preference: options.pixel_format };
        let timeout = Duration::from_secs_f64((5.0 / fps).max(2.0));
        let (stream, choice, stride) = open_stream(&device, &request, timeout)?;
        let started = Instant::now();
        Ok(Self { device, request, choice, stream: Some(stream), stride, timeout, started, seq: 0 })
    }

    fn reconnect(&mut self, cause: std::io::Error) -> Result<(), CaptureError> {
        self.stream = None;
        tracing::warn!(device = %self.device, error = %cause, "camera lost; reconnecting");
        let give_up = Instant::now() + RECONNECT_FOR;
        loop {
            std::thread::sleep(Duration::from_secs(1));
            match open_stream(&self.device, &self.request, self.timeout) {
                Ok((stream, choice, stride)) => {
                    tracing::info!(device = %self.device, "camera back");
                    (self.stream, self.choice, self.stride) = (Some(stream), choice, stride);
                    return Ok(());
                }
                Err(error) if Instant::now() >= give_up => return Err(error),
                Err(error) => tracing::warn!(%error, "camera still unavailable"),
            }
        }
    }

    /// Dequeues one buffer and converts it.
    fn grab(&mut self) -> std::io::Result<image::RgbImage> {
        let stream = self.stream.as_mut().ok_or_else(|| std::io::Error::other("not open"))?;
        let (data, meta) = CaptureStream::next(stream)?;
        let used = (meta.bytesused as usize).min(data.len());
        convert(&data[..used], &self.choice, self.stride)
    }
}

impl FrameSource for CameraSource {
    fn describe(&self) -> String {
        let c = &self.choice;
        let fps = c.fps.map_or(String::from("driver rate"), |f| format!("{f} fps"));
        format!("{} {:?} {}x{} @ {fps}", self.device, c.format, c.width, c.height)
    }

    fn nominal_fps(&self) -> Option<f64> {
        self.choice.fps
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        loop {
            match self.grab() {
                Ok(image) => {
                    let captured = Instant::now();
                    let frame = Frame {
                        image,
                        captured,
                        timestamp: captured - self.started,
                        seq: self.seq,
                    };
                    self.seq += 1;
                    return Ok(Some(frame));
                }
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    tracing::warn!(device = %self.device, error = %e, "skipping a corrupt frame");
                }
                Err(e) => self.reconnect(e)?,
            }
        }
    }
}

/// `/dev/videoN` from `N` or a path.
pub fn device_path(spec: &str) -> String {
    if spec.bytes().all(|b| b.is_ascii_digit()) {
        format!("/dev/video{spec}")
    } else {
        spec.to_string()
    }
}

fn camera_error(device: &str) -> impl Fn(std::io::Error) -> CaptureError + '_ {
    move |source| CaptureError::Camera { device: device.to_string(), source }
}

/// Opens the device, negotiates, sets the format and rate, and maps the buffers.
fn open_stream(
    device: &str,
    request: &Request,
    timeout: Duration,
) -> Result<(MmapStream<'static>, Choice, u32), CaptureError> {
    let dev = Device::with_path(device).map_err(camera_error(device))?;
    let caps = capabilities(&dev).map_err(camera_error(device))?;
    let choice = negotiate::negotiate(&caps, request)?;
    if choice.fell_back {
        let (chosen, wanted) = (choice.format, request.preference);
        tracing::warn!(device, ?chosen, ?wanted, "preferred pixel format not offered");
    }
    let set = set_mode(&dev, &choice).map_err(camera_error(device))?;
    let choice = Choice { width: set.width, height: set.height, ..choice };
    let (format, fps) = (choice.format, choice.fps);
    tracing::info!(device, ?format, width = set.width, height = set.height, ?fps, "camera mode");
    let mut stream = MmapStream::with_buffers(&dev, Type::VideoCapture, BUFFERS)
        .map_err(camera_error(device))?;
    stream.set_timeout(timeout);
    Ok((stream, choice, set.stride))
}

/// Asks for the negotiated format, size and rate; returns the format the driver set.
fn set_mode(dev: &Device, choice: &Choice) -> std::io::Result<v4l::Format> {
    let mut format = dev.format()?;
    format.width = choice.width;
    format.height = choice.height;
    format.fourcc = v4l::FourCC::new(&choice.format.fourcc().0);
    let set = dev.set_format(&format)?;
    if let Some(fps) = choice.fps {
        let params = v4l::video::capture::Parameters::with_fps(fps.round().max(1.0) as u32);
        if let Err(error) = dev.set_params(&params) {
            tracing::warn!(%error, "could not set the frame rate");
        }
    }
    Ok(set)
}

/// What the camera lists, as negotiation input.
pub fn capabilities(dev: &Device) -> std::io::Result<Vec<FormatCaps>> {
    let mut out = Vec::new();
    for desc in dev.enum_formats()? {
        let fourcc = FourCc(desc.fourcc.repr);
        let mut sizes = Vec::new();
        for size in dev.enum_framesizes(desc.fourcc).unwrap_or_default() {
            for (width, height) in frame_sizes(size.size) {
                let fps = frame_rates(dev, desc.fourcc, width, height);
                sizes.push(SizeCaps { width, height, fps });
            }
        }
        out.push(FormatCaps { fourcc, description: desc.description, sizes });
    }
    Ok(out)
}

/// Discrete sizes; a stepwise range contributes its smallest, 640x480 if inside, and largest.
fn frame_sizes(size: FrameSizeEnum) -> Vec<(u32, u32)> {
    match size {
        FrameSizeEnum::Discrete(d) => vec![(d.width, d.height)],
        FrameSizeEnum::Stepwise(s) => {
            let mut v = vec![(s.min_width, s.min_height), (s.max_width, s.max_height)];
            let inside = (s.min_width..=s.max_width).contains(&640)
                && (s.min_height..=s.max_height).contains(&480);
            if inside {
                v.push((640, 480));
            }
            v
        }
    }
}

fn frame_rates(dev: &Device, fourcc: v4l::FourCC, width: u32, height: u32) -> Vec<f64> {
    let fps = |f: v4l::Fraction| f64::from(f.denominator) / f64::from(f.numerator.max(1));
    let intervals = dev.enum_frameintervals(fourcc, width, height).unwrap_or_default();
    intervals
        .into_iter()
        .flat_map(|i| match i.interval {
            FrameIntervalEnum::Discrete(f) => vec![fps(f)],
            FrameIntervalEnum::Stepwise(s) => vec![fps(s.max), fps(s.min)],
        })
        .collect()
}

/// One buffer to RGB; rows padded to `stride` bytes are repacked.
fn convert(data: &[u8], choice: &Choice, stride: u32) -> std::io::Result<image::RgbImage> {
    let (w, h) = (choice.width, choice.height);
    let short = |need: usize| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("buffer of {} bytes, expected {need}", data.len()),
        )
    };
    match choice.format {
        PixelFormat::Mjpeg => image::load_from_memory_with_format(data, image::ImageFormat::Jpeg)
            .map(|i| i.into_rgb8())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        PixelFormat::Yuyv => {
            let packed = unpad(data, w as usize * 2, stride as usize, h as usize)
                .ok_or_else(|| short(w as usize * 2 * h as usize))?;
            Ok(yuv::yuyv_to_rgb(&packed, w, h))
        }
        PixelFormat::Nv12 => {
            let rows = h as usize + (h as usize).div_ceil(2);
            let packed = unpad(data, w as usize, stride as usize, rows)
                .ok_or_else(|| short(w as usize * rows))?;
            if packed.len()
                < w as usize * h as usize + 2 * (w as usize).div_ceil(2) * (h as usize).div_ceil(2)
            {
                return Err(short(w as usize * rows));
            }
            Ok(yuv::nv12_to_rgb(&packed, w, h))
        }
    }
}

/// `rows` rows of `row` bytes out of rows `stride` apart.
fn unpad(data: &[u8], row: usize, stride: usize, rows: usize) -> Option<Vec<u8>> {
    let stride = stride.max(row);
    if data.len() < stride * (rows - 1) + row {
        return None;
    }
    Some((0..rows).flat_map(|r| &data[r * stride..r * stride + row]).copied().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_rows_are_repacked() {
        let data = [1, 2, 0, 0, 3, 4, 0, 0, 5, 6];
        assert_eq!(unpad(&data, 2, 4, 3), Some(vec![1, 2, 3, 4, 5, 6]));
        assert_eq!(unpad(&data, 2, 4, 4), None);
        assert_eq!(unpad(&data[..6], 3, 0, 2), Some(vec![1, 2, 0, 0, 3, 4]));
    }

    #[test]
    fn yuyv_with_stride_converts() {
        let choice = Choice {
            format: PixelFormat::Yuyv,
            width: 2,
            height: 2,
            fps: Some(30.0),
            fell_back: false,
        };
        // Two rows of one YUYV pair (4 bytes) in 8-byte strides.
        let data = [235, 128, 235, 128, 9, 9, 9, 9, 16, 128, 16, 128];
        let rgb = convert(&data, &choice, 8).unwrap();
        assert_eq!(rgb.get_pixel(1, 0).0, [255, 255, 255]);
        assert_eq!(rgb.get_pixel(0, 1).0, [0, 0, 0]);
        assert!(convert(&data[..10], &choice, 8).is_err());
    }

    #[test]
    fn stepwise_sizes_offer_vga() {
        use v4l::framesize::Stepwise;
        let step = Stepwise {
            min_width: 16,
            max_width: 1920,
            step_width: 2,
            min_height: 16,
            max_height: 1080,
            step_height: 2,
        };
        let sizes = frame_sizes(FrameSizeEnum::Stepwise(step));
        assert!(sizes.contains(&(640, 480)) && sizes.contains(&(1920, 1080)), "{sizes:?}");
    }

    #[test]
    fn index_names_a_device() {
        assert_eq!(device_path("2"), "/dev/video2");
        assert_eq!(device_path("/dev/video1"), "/dev/video1");
    }
}
