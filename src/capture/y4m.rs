//! YUV4MPEG2 (`.y4m`) video files: a text header (`YUV4MPEG2 W320 H240 F30:1 C420jpeg ...`),
//! then per frame a `FRAME` line and the raw planes.
//!
//! Colour spaces: `C420*` (and no `C`, the format's default), `C422`, `C444`, `Cmono`; 8 bits
//! only. Played at the header's rate (or `--fps`), once unless looping is asked for.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::pace::Pacer;
use super::{CaptureError, Frame, FrameSource, SourceOptions, yuv};

/// Longest header or frame line accepted.
const MAX_LINE: usize = 4096;

/// Chroma layout of a Y4M stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chroma {
    /// Planar Y, U, V with chroma subsampled by `(x, y)`.
    Planar(usize, usize),
    Mono,
}

/// What the stream header says.
#[derive(Clone, Debug, PartialEq)]
pub struct Y4mHeader {
    pub width: u32,
    pub height: u32,
    /// Frames per second, from `F<num>:<den>`.
    pub fps: f64,
    pub chroma: Chroma,
}

impl Y4mHeader {
    /// Bytes of one frame's planes.
    pub fn frame_bytes(&self) -> usize {
        let (w, h) = (self.width as usize, self.height as usize);
        match self.chroma {
            Chroma::Mono => w * h,
            Chroma::Planar(sx, sy) => w * h + 2 * w.div_ceil(sx) * h.div_ceil(sy),
        }
    }
}

/// Parses the header line (without its newline).
pub fn parse_header(line: &str) -> Result<Y4mHeader, String> {
    let mut fields = line.split_ascii_whitespace();
    if fields.next() != Some("YUV4MPEG2") {
        return Err("missing YUV4MPEG2 signature".into());
    }
    let (mut width, mut height, mut fps, mut chroma) = (0, 0, 25.0, Chroma::Planar(2, 2));
    for field in fields {
        let (tag, value) = field.split_at(1);
        match tag {
            "W" => width = value.parse().map_err(|_| format!("bad width {value:?}"))?,
            "H" => height = value.parse().map_err(|_| format!("bad height {value:?}"))?,
            "F" => fps = parse_rate(value).ok_or_else(|| format!("bad frame rate {value:?}"))?,
            "C" => chroma = parse_chroma(value)?,
            _ => {}
        }
    }
    if width == 0 || height == 0 {
        return Err("missing W or H".into());
    }
    Ok(Y4mHeader { width, height, fps, chroma })
}

fn parse_rate(value: &str) -> Option<f64> {
    let (num, den) = value.split_once(':')?;
    let (num, den): (f64, f64) = (num.parse().ok()?, den.parse().ok()?);
    let fps = num / den;
    (fps.is_finite() && fps > 0.0).then_some(fps)
}

fn parse_chroma(value: &str) -> Result<Chroma, String> {
    match value {
        "420" | "420jpeg" | "420paldv" | "420mpeg2" => Ok(Chroma::Planar(2, 2)),
        "422" => Ok(Chroma::Planar(2, 1)),
        "444" => Ok(Chroma::Planar(1, 1)),
        "mono" => Ok(Chroma::Mono),
        other => Err(format!("colour space C{other} is not supported (420, 422, 444, mono)")),
    }
}

/// A Y4M file played in real time.
pub struct Y4mSource {
    path: PathBuf,
    reader: BufReader<File>,
    header: Y4mHeader,
    data_start: u64,
    fps: f64,
    pacer: Pacer,
    looping: bool,
    buffer: Vec<u8>,
    seq: u64,
}

impl Y4mSource {
    /// Opens `path` and reads its header.
    pub fn open(path: &Path, options: &SourceOptions) -> Result<Self, CaptureError> {
        let io_error = |source| CaptureError::Io { path: path.to_path_buf(), source };
        let mut reader = BufReader::new(File::open(path).map_err(io_error)?);
        let line = read_line(&mut reader).map_err(io_error)?;
        let header = parse_header(&line).map_err(|detail| bad_file(path, detail))?;
        let data_start = reader.stream_position().map_err(io_error)?;
        let fps = options.fps.unwrap_or(header.fps);
        let buffer = vec![0; header.frame_bytes()];
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            header,
            data_start,
            fps,
            pacer: Pacer::new(fps),
            looping: options.looping.unwrap_or(false),
            buffer,
            seq: 0,
        })
    }

    /// The stream header.
    pub fn header(&self) -> &Y4mHeader {
        &self.header
    }

    /// Reads the next frame's planes into the buffer; `false` at the end of the file.
    fn read_planes(&mut self) -> Result<bool, CaptureError> {
        let io_error = |source| CaptureError::Io { path: self.path.clone(), source };
        let line = read_line(&mut self.reader).map_err(io_error)?;
        if line.is_empty() {
            return Ok(false);
        }
        if !line.starts_with("FRAME") {
            return Err(bad_file(&self.path, format!("expected FRAME, found {line:?}")));
        }
        match self.reader.read_exact(&mut self.buffer) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(source) => Err(CaptureError::Io { path: self.path.clone(), source }),
        }
    }

    fn rewind(&mut self) -> Result<(), CaptureError> {
        let seek = self.reader.seek(SeekFrom::Start(self.data_start));
        seek.map(|_| ()).map_err(|source| CaptureError::Io { path: self.path.clone(), source })
    }

    fn convert(&self) -> image::RgbImage {
        let (w, h) = (self.header.width, self.header.height);
        match self.header.chroma {
            Chroma::Mono => yuv::gray_to_rgb(&self.buffer, w, h),
            Chroma::Planar(sx, sy) => yuv::planar_to_rgb(&self.buffer, w, h, (sx, sy)),
        }
    }
}

impl FrameSource for Y4mSource {
    fn describe(&self) -> String {
        let h = &self.header;
        format!("{} (Y4M {}x{} @ {} fps)", self.path.display(), h.width, h.height, self.fps)
    }

    fn nominal_fps(&self) -> Option<f64> {
        Some(self.fps)
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        if !self.read_planes()? {
            if !self.looping || self.seq == 0 {
                return Ok(None);
            }
            self.rewind()?;
            if !self.read_planes()? {
                return Ok(None);
            }
        }
        let image = self.convert();
        let captured = self.pacer.wait();
        let timestamp = Duration::from_secs_f64(self.seq as f64 / self.fps);
        let frame = Frame { image, captured, timestamp, seq: self.seq };
        self.seq += 1;
        Ok(Some(frame))
    }
}

fn bad_file(path: &Path, detail: String) -> CaptureError {
    CaptureError::Format { path: path.to_path_buf(), format: "YUV4MPEG2", detail }
}

/// One `\n`-terminated line without the newline; empty at the end of the file.
fn read_line(reader: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = Vec::new();
    reader.take(MAX_LINE as u64).read_until(b'\n', &mut line)?;
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Writes frames as a 4:2:0 Y4M file (tests and tools); `frames` are RGB of one size.
pub fn write_y4m(path: &Path, frames: &[image::RgbImage], fps: u32) -> std::io::Result<()> {
    use std::io::Write;
    let (w, h) = frames.first().map_or((0, 0), |f| f.dimensions());
    let mut out = std::io::BufWriter::new(File::create(path)?);
    writeln!(out, "YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg")?;
    for frame in frames {
        out.write_all(b"FRAME\n")?;
        out.write_all(&rgb_to_i420(frame))?;
    }
    out.flush()
}

/// RGB to planar I420, BT.601 limited range (the inverse of [`yuv::yuv_to_rgb`]).
pub fn rgb_to_i420(image: &image::RgbImage) -> Vec<u8> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let mut out = vec![0u8; w * h + 2 * cw * ch];
    for (x, y, p) in image.enumerate_pixels() {
        let [r, g, b] = p.0.map(f32::from);
        out[y as usize * w + x as usize] = (16.0 + 0.257 * r + 0.504 * g + 0.098 * b).round() as u8;
        if x % 2 == 0 && y % 2 == 0 {
            let c = (y as usize / 2) * cw + x as usize / 2;
            out[w * h + c] = (128.0 - 0.148 * r - 0.291 * g + 0.439 * b).round() as u8;
            out[w * h + cw * ch + c] = (128.0 + 0.439 * r - 0.368 * g - 0.071 * b).round() as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields() {
        let h = parse_header("YUV4MPEG2 W320 H240 F30000:1001 Ip A1:1 C420jpeg XYSCSS=420JPEG")
            .unwrap();
        assert_eq!((h.width, h.height, h.chroma), (320, 240, Chroma::Planar(2, 2)));
        assert!((h.fps - 29.97).abs() < 0.01);
        assert_eq!(h.frame_bytes(), 320 * 240 * 3 / 2);
        assert!(parse_header("YUV4MPEG2 W2 H2 C420p10").is_err());
        assert!(parse_header("RIFF").is_err());
    }

    #[test]
    fn round_trip_and_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.y4m");
        let frames: Vec<_> =
            (0..3).map(|i| super::super::synthetic::render(16, 8, i as f32)).collect();
        write_y4m(&path, &frames, 100).unwrap();
        let mut source = Y4mSource::open(&path, &SourceOptions::new("a.y4m")).unwrap();
        for expected in &frames {
            let got = source.next_frame().unwrap().unwrap().image;
            // 4:2:0 blurs colour edges; on average the round trip is close.
            let total: u64 =
                got.iter().zip(expected.iter()).map(|(a, b)| u64::from(a.abs_diff(*b))).sum();
            let mean = total as f64 / got.len() as f64;
            assert!(mean < 8.0, "colour round trip off by {mean} on average");
        }
        assert!(source.next_frame().unwrap().is_none());
    }
}
