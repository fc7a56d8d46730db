//! H.264 video in MP4 files (feature `mp4`): demuxed with the `mp4` crate, decoded by OpenH264,
//! played at the file's frame rate (or `--fps`), once unless looping is asked for.
//!
//! Samples are stored length-prefixed (AVCC); they are rewritten to Annex B start codes, with
//! the track's SPS and PPS in front of every sync sample, for the decoder.
//!
//! # Limitations
//!
//! OpenH264 decodes Constrained Baseline streams fully (what imexdepth's own recordings and
//! most webcams produce); Main/High profile streams with B-frames or interlacing may fail. The
//! whole file is indexed at open; the first H.264 track is played, others are ignored.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Duration;

use openh264::decoder::Decoder;
use openh264::formats::YUVSource;

use super::pace::Pacer;
use super::{CaptureError, Frame, FrameSource, SourceOptions};

/// Annex B start code.
const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// An MP4 file played in real time.
pub struct Mp4Source {
    path: PathBuf,
    reader: mp4::Mp4Reader<BufReader<File>>,
    track: u32,
    samples: u32,
    next_sample: u32,
    parameter_sets: Vec<u8>,
    decoder: Decoder,
    size: (u32, u32),
    fps: f64,
    pacer: Pacer,
    looping: bool,
    seq: u64,
}

impl Mp4Source {
    /// Opens `path` and finds its first H.264 track.
    pub fn open(path: &Path, options: &SourceOptions) -> Result<Self, CaptureError> {
        let io_error = |source| CaptureError::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io_error)?;
        let size = file.metadata().map_err(io_error)?.len();
        let reader = mp4::Mp4Reader::read_header(BufReader::new(file), size)
            .map_err(|e| bad_file(path, e.to_string()))?;
        let track = reader
            .tracks()
            .values()
            .find(|t| matches!(t.media_type(), Ok(mp4::MediaType::H264)))
            .ok_or_else(|| bad_file(path, "no H.264 video track".into()))?;
        let parameter_sets = parameter_sets(track).map_err(|e| bad_file(path, e.to_string()))?;
        let (id, samples) = (track.track_id(), track.sample_count());
        let dims = (u32::from(track.width()), u32::from(track.height()));
        let file_fps = Some(track.frame_rate()).filter(|f| f.is_finite() && *f > 0.0);
        let fps = options.fps.or(file_fps).unwrap_or(30.0);
        let decoder = Decoder::new().map_err(|e| decode_error(path, 0, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            track: id,
            samples,
            next_sample: 1,
            parameter_sets,
            decoder,
            size: dims,
            fps,
            pacer: Pacer::new(fps),
            looping: options.looping.unwrap_or(false),
            seq: 0,
        })
    }

    /// Reads samples until the decoder yields a picture; `None` at the end of the track.
    fn decode_next(&mut self) -> Result<Option<image::RgbImage>, CaptureError> {
        while self.next_sample <= self.samples {
            let id = self.next_sample;
            self.next_sample += 1;
            let sample = self
                .reader
                .read_sample(self.track, id)
                .map_err(|e| bad_file(&self.path, e.to_string()))?;
            let Some(sample) = sample else { continue };
            let annex_b =
                to_annex_b(&sample.bytes, sample.is_sync.then_some(&self.parameter_sets[..]));
            let decoded = self
                .decoder
                .decode(&annex_b)
                .map_err(|e| decode_error(&self.path, id.into(), e))?;
            if let Some(yuv) = decoded {
                return Ok(Some(to_rgb(&yuv)));
            }
        }
        Ok(None)
    }
}

impl FrameSource for Mp4Source {
    fn describe(&self) -> String {
        let (w, h) = self.size;
        format!(
            "{} (H.264 MP4 {w}x{h}, {} frames @ {:.2} fps)",
            self.path.display(),
            self.samples,
            self.fps
        )
    }

    fn nominal_fps(&self) -> Option<f64> {
        Some(self.fps)
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        let mut image = self.decode_next()?;
        if image.is_none() && self.looping && self.seq > 0 {
            self.next_sample = 1;
            image = self.decode_next()?;
        }
        let Some(image) = image else { return Ok(None) };
        let captured = self.pacer.wait();
        let timestamp = Duration::from_secs_f64(self.seq as f64 / self.fps);
        let frame = Frame { image, captured, timestamp, seq: self.seq };
        self.seq += 1;
        Ok(Some(frame))
    }
}

/// SPS and PPS as Annex B.
fn parameter_sets(track: &mp4::Mp4Track) -> mp4::Result<Vec<u8>> {
    let mut out = Vec::new();
    for set in [track.sequence_parameter_set()?, track.picture_parameter_set()?] {
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(set);
    }
    Ok(out)
}

/// Length-prefixed NAL units to start-code-prefixed ones, optionally after `prefix`.
pub fn to_annex_b(avcc: &[u8], prefix: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(avcc.len() + 64);
    out.extend_from_slice(prefix.unwrap_or(&[]));
    let mut rest = avcc;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let nal = &rest[4..(4 + len).min(rest.len())];
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal);
        rest = &rest[4 + nal.len()..];
    }
    out
}

fn to_rgb(yuv: &openh264::decoder::DecodedYUV<'_>) -> image::RgbImage {
    let (w, h) = yuv.dimensions();
    let mut rgb = vec![0u8; w * h * 3];
    yuv.write_rgb8(&mut rgb);
    image::RgbImage::from_raw(w as u32, h as u32, rgb).expect("buffer sized from the dimensions")
}

fn bad_file(path: &Path, detail: String) -> CaptureError {
    CaptureError::Format { path: path.to_path_buf(), format: "MP4", detail }
}

fn decode_error(path: &Path, frame: u64, error: openh264::Error) -> CaptureError {
    CaptureError::Decode { path: path.to_path_buf(), frame, message: error.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avcc_to_annex_b() {
        let avcc = [0, 0, 0, 2, 0x65, 0xaa, 0, 0, 0, 1, 0x41];
        let out = to_annex_b(&avcc, Some(&[9]));
        assert_eq!(out, [9, 0, 0, 0, 1, 0x65, 0xaa, 0, 0, 0, 1, 0x41]);
    }
}
