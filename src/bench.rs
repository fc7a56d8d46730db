//! Latency benchmark: every stage of the pipeline timed frame by frame, warm-up apart, several
//! configurations interleaved in one process so that their ratios are fair on a noisy machine.
//!
//! Stages per frame: capture/decode (`source.next_frame`), preprocess (crop, resize, NCHW),
//! inference (`engine.run`), postprocess (depth map, colour range, colour map, composition),
//! and optionally encode (H.264 of the composed canvas). End to end is their sum: the bench
//! runs them in sequence on one thread, so it measures cost, not the overlap the live
//! pipeline's threads give.
//!
//! The compute floor: the model's multiply-adds divided by the machine's measured peak rate
//! for large float32 matrix products (the same `gemm` kernel the native engine uses).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::capture::FrameSource;
use crate::engine::DepthEngine;
use crate::live::{Timing, histogram, micros};
use crate::model::OutputSpec;
use crate::postprocess::{self, DepthMap, RangeMode, RangeTracker, Style};
use crate::preprocess::Preprocessor;
use crate::record::FrameSink;

/// Stage names, in pipeline order.
pub const STAGES: [&str; 5] = ["capture", "preprocess", "inference", "postprocess", "encode"];

/// One configuration under test.
pub struct Config {
    /// Label printed in tables, e.g. `native imexnet-depth-240x320`.
    pub label: String,
    pub engine: Box<dyn DepthEngine>,
    pub preprocessor: Preprocessor,
    pub output: OutputSpec,
    pub source: Box<dyn FrameSource>,
    /// Encoder of the composed canvas, if encoding is benchmarked.
    pub encoder: Option<Box<dyn FrameSink>>,
    /// Multiply-adds of one forward pass, if known.
    pub macs: Option<u64>,
    range: RangeTracker,
    /// The live window's default look (picture beside turbo depth), built once.
    style: Style,
    clock: Option<Instant>,
}

impl Config {
    pub fn new(
        label: String,
        engine: Box<dyn DepthEngine>,
        preprocessor: Preprocessor,
        output: OutputSpec,
        source: Box<dyn FrameSource>,
    ) -> Self {
        let range = RangeTracker::new(RangeMode::Auto);
        Self {
            label,
            engine,
            preprocessor,
            output,
            source,
            encoder: None,
            macs: None,
            range,
            style: Style::new(
                postprocess::View::PictureDepth,
                postprocess::Colormap::Turbo,
                false,
                0.5,
            ),
            clock: None,
        }
    }
}

/// Errors that stop a benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{label}: the source ended after {frames} frames; use a looping source")]
    SourceEnded { label: String, frames: u64 },
    #[error("{label}: {stage} failed: {message}")]
    Stage { label: String, stage: &'static str, message: String },
}

/// Figures of one configuration.
#[derive(Debug, Serialize)]
pub struct Report {
    pub label: String,
    pub engine: String,
    pub provider: String,
    /// First frame (includes lazy initialisation such as engine builds), ms.
    pub first_frame_ms: f64,
    pub warmup_frames: u64,
    pub frames: u64,
    pub capture_ms: Timing,
    pub preprocess_ms: Timing,
    pub inference_ms: Timing,
    pub postprocess_ms: Timing,
    pub encode_ms: Option<Timing>,
    pub end_to_end_ms: Timing,
    /// Frames per second from the mean end-to-end time.
    pub fps: f64,
    /// The bench runs stages in sequence and so drops nothing; kept for the live summary's
    /// schema.
    pub dropped_frames: u64,
    pub macs: Option<u64>,
    /// Mean inference time over the compute floor (`None` without a MAC count or a peak).
    pub floor_ratio: Option<f64>,
    /// Peak resident memory of the whole process so far, MiB.
    pub peak_rss_mib: Option<f64>,
    /// Process CPU time over wall time during the measured frames (1.0 = one core busy).
    pub cpu_cores_busy: Option<f64>,
}

struct Recorder {
    stages: Vec<Histogram<u64>>,
    total: Histogram<u64>,
}

impl Recorder {
    fn new() -> Self {
        Self { stages: (0..STAGES.len()).map(|_| histogram()).collect(), total: histogram() }
    }
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    let _ = h.record(micros(d));
}

/// Runs `warmup` then `frames` frames of every configuration, interleaved frame by frame.
pub fn run(
    configs: &mut [Config],
    warmup: u64,
    frames: u64,
    peak_macs_per_s: Option<f64>,
) -> Result<Vec<Report>, BenchError> {
    let mut first = vec![0.0; configs.len()];
    for round in 0..warmup.max(1) {
        for (i, config) in configs.iter_mut().enumerate() {
            let times = one_frame(config)?;
            if round == 0 {
                first[i] = times.iter().sum::<Duration>().as_secs_f64() * 1e3;
            }
        }
    }
    let mut recorders: Vec<Recorder> = configs.iter().map(|_| Recorder::new()).collect();
    let mut cpu = vec![Duration::ZERO; configs.len()];
    let mut wall = vec![Duration::ZERO; configs.len()];
    for _ in 0..frames {
        for (i, config) in configs.iter_mut().enumerate() {
            let (cpu0, wall0) = (cpu_time(), Instant::now());
            let times = one_frame(config)?;
            wall[i] += wall0.elapsed();
            if let (Some(a), Some(b)) = (cpu0, cpu_time()) {
                cpu[i] += b.saturating_sub(a);
            }
            for (h, t) in recorders[i].stages.iter_mut().zip(&times) {
                record(h, *t);
            }
            record(&mut recorders[i].total, times.iter().sum());
        }
    }
    let peak_rss_mib = peak_rss_mib();
    Ok(configs
        .iter()
        .zip(recorders)
        .enumerate()
        .map(|(i, (c, r))| {
            let busy = cpu_time().map(|_| cpu[i].as_secs_f64() / wall[i].as_secs_f64().max(1e-9));
            report(c, r, first[i], warmup, peak_macs_per_s, peak_rss_mib, busy)
        })
        .collect())
}

fn report(
    config: &Config,
    r: Recorder,
    first_frame_ms: f64,
    warmup: u64,
    peak: Option<f64>,
    peak_rss_mib: Option<f64>,
    cpu_cores_busy: Option<f64>,
) -> Report {
    let inference_ms = Timing::of(&r.stages[2]);
    let end_to_end_ms = Timing::of(&r.total);
    let floor_ms = match (config.macs, peak) {
        (Some(macs), Some(peak)) if peak > 0.0 => Some(macs as f64 / peak * 1e3),
        _ => None,
    };
    Report {
        label: config.label.clone(),
        engine: config.engine.name().to_string(),
        provider: config.engine.provider(),
        first_frame_ms,
        warmup_frames: warmup,
        frames: r.total.len(),
        capture_ms: Timing::of(&r.stages[0]),
        preprocess_ms: Timing::of(&r.stages[1]),
        inference_ms,
        postprocess_ms: Timing::of(&r.stages[3]),
        encode_ms: config.encoder.is_some().then(|| Timing::of(&r.stages[4])),
        end_to_end_ms,
        fps: 1e3 / end_to_end_ms.mean.max(1e-9),
        dropped_frames: 0,
        macs: config.macs,
        floor_ratio: floor_ms.map(|f| inference_ms.mean / f),
        peak_rss_mib,
        cpu_cores_busy,
    }
}

/// One frame through every stage; the duration of each.
fn one_frame(c: &mut Config) -> Result<[Duration; 5], BenchError> {
    let fail =
        |stage, message: String| BenchError::Stage { label: c.label.clone(), stage, message };
    let t0 = Instant::now();
    let frame = match c.source.next_frame() {
        Ok(Some(frame)) => frame,
        Ok(None) => return Err(BenchError::SourceEnded { label: c.label.clone(), frames: 0 }),
        Err(e) => return Err(fail("capture", e.to_string())),
    };
    let t1 = Instant::now();
    let prepared =
        c.preprocessor.run(&frame.image).map_err(|e| fail("preprocess", e.to_string()))?;
    let t2 = Instant::now();
    let output = c.engine.run(&prepared.tensor).map_err(|e| fail("inference", e.to_string()))?;
    let t3 = Instant::now();
    let depth = DepthMap::from_output(&output, &c.output)
        .map_err(|e| fail("postprocess", e.to_string()))?;
    let range = c.range.update(&depth);
    let hud = [format!("{} {}", c.engine.name(), c.engine.provider())];
    let canvas = postprocess::compose(&prepared.view, &depth, range, &c.style, &hud, None);
    let t4 = Instant::now();
    if let Some(encoder) = c.encoder.as_mut() {
        let start = *c.clock.get_or_insert(t0);
        let shown = crate::record::Shown {
            canvas: &canvas,
            view: &prepared.view,
            depth: &depth,
            captured: frame.captured.saturating_duration_since(start),
            seq: frame.seq,
        };
        encoder.write(&shown).map_err(|e| fail("encode", e.to_string()))?;
    }
    let t5 = Instant::now();
    Ok([t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4])
}

/// This process's user + system CPU time (Linux `/proc/self/stat`, clock ticks of 10 ms).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Peak resident set size of this process (`VmHWM`), MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_figures_are_read_on_linux() {
        assert!(peak_rss_mib().unwrap() > 0.0);
        assert!(cpu_time().is_some());
    }
}
