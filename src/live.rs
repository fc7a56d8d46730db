//! The live pipeline: capture, inference and output on separate threads, joined by hand-offs
//! that hold only the freshest item.
//!
//! ```text
//! capture thread --[Latest<Frame>]--> inference thread --[Latest<Inferred>]--> output (caller)
//!   source.next_frame()                preprocess, engine, depth map          compose, window,
//!                                                                              recorders, HUD
//! ```
//!
//! A hand-off ([`Latest`]) holds one item; putting a new one replaces an unread one and counts
//! a drop, so a slow stage makes the pipeline skip frames rather than queue them, and latency
//! cannot grow without bound. Every frame carries its capture instant; the glass-to-glass
//! latency is measured from it to the moment the canvas is shown (headless: composed).
//!
//! The run ends at `--frames` shown frames, after `--duration`, at the end of a finite source,
//! on `q`/Esc/window close, when the stop flag is raised (Ctrl-C, SIGTERM), or on a source or
//! engine error; in every case the recorders are finished and a [`Summary`] is returned. A
//! source that stalls is reported (warn) and does not keep the run from ending: its thread is
//! left behind if it does not return within [`CAPTURE_JOIN_WAIT`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use image::RgbImage;
use serde::Serialize;

use crate::capture::{CaptureError, Frame, FrameSource};
use crate::display::{Action, Display, DisplayError};
use crate::engine::{DepthEngine, EngineError};
use crate::model::{InputSpec, OutputSpec};
use crate::postprocess::{self, DepthMap, PostprocessError, RangeMode, RangeTracker, Style};
use crate::preprocess::{PreprocessError, Preprocessor};
use crate::record::{self, FrameSink, RawInfo, RecordError, Shown, SinkReport};

/// How long the end of a run waits for a capture thread blocked in its source.
pub const CAPTURE_JOIN_WAIT: Duration = Duration::from_secs(1);
/// Frames between debug logs of stage timings.
const LOG_EVERY: u64 = 100;

/// Errors that end a live run.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("frame source failed: {0}")]
    Capture(#[source] CaptureError),
    #[error("preprocessing failed: {0}")]
    Preprocess(#[from] PreprocessError),
    #[error("engine {engine} failed on frame {seq}: {source}")]
    Engine {
        engine: String,
        seq: u64,
        #[source]
        source: EngineError,
    },
    #[error("postprocessing failed: {0}")]
    Postprocess(#[from] PostprocessError),
    #[error(transparent)]
    Display(#[from] DisplayError),
    #[error("cannot start recording: {0}")]
    Record(#[source] RecordError),
    #[error("the {stage} thread panicked")]
    Panicked { stage: &'static str },
}

/// A hand-off that keeps only the freshest item.
pub struct Latest<T> {
    state: Mutex<SlotState<T>>,
    ready: Condvar,
}

struct SlotState<T> {
    item: Option<T>,
    closed: bool,
    dropped: u64,
}

/// Result of [`Latest::take`].
#[derive(Debug, PartialEq)]
pub enum Take<T> {
    Item(T),
    /// Nothing arrived within the timeout.
    Empty,
    /// Closed and drained.
    Closed,
}

impl<T> Default for Latest<T> {
    fn default() -> Self {
        let state = SlotState { item: None, closed: false, dropped: 0 };
        Self { state: Mutex::new(state), ready: Condvar::new() }
    }
}

impl<T> Latest<T> {
    /// Puts an item, replacing (and counting as dropped) an unread one.
    pub fn put(&self, item: T) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.item.replace(item).is_some() {
            state.dropped += 1;
        }
        self.ready.notify_one();
    }

    /// Waits up to `timeout` for an item; an item put before `close` is still delivered.
    pub fn take(&self, timeout: Duration) -> Take<T> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (mut state, _) = self
            .ready
            .wait_timeout_while(state, timeout, |s| s.item.is_none() && !s.closed)
            .unwrap_or_else(|e| e.into_inner());
        match state.item.take() {
            Some(item) => Take::Item(item),
            None if state.closed => Take::Closed,
            None => Take::Empty,
        }
    }

    /// No more items will come.
    pub fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.ready.notify_all();
    }

    /// Items replaced before they were read.
    pub fn dropped(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).dropped
    }
}

/// Everything a live run needs besides its source and engine.
pub struct LiveConfig {
    pub input: InputSpec,
    pub output: OutputSpec,
    /// Stop after this many shown frames.
    pub frames: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Open a window (scale factor) or run headless.
    pub window: Option<u32>,
    pub style: Style,
    pub range: RangeMode,
    pub record_mp4: Option<PathBuf>,
    pub record_raw: Option<PathBuf>,
    /// Model and engine named in the raw sidecar and the HUD.
    pub info: RawInfo,
    /// Raised from outside (Ctrl-C) to end the run.
    pub stop: Arc<AtomicBool>,
    /// Warn when no frame has come for this long.
    pub stall_warning: Duration,
}

impl LiveConfig {
    /// Headless, unbounded, no recording, turbo in auto range.
    pub fn new(input: InputSpec, output: OutputSpec, info: RawInfo) -> Self {
        use crate::postprocess::{Colormap, View};
        Self {
            input,
            output,
            frames: None,
            duration: None,
            window: None,
            style: Style::new(View::PictureDepth, Colormap::Turbo, false, 0.5),
            range: RangeMode::Auto,
            record_mp4: None,
            record_raw: None,
            info,
            stop: Arc::new(AtomicBool::new(false)),
            stall_warning: Duration::from_secs(2),
        }
    }
}

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Frames,
    Duration,
    EndOfStream,
    Stopped,
    QuitKey,
    WindowClosed,
    Error,
}

/// Percentiles of a timing, milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Timing {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Timing {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

/// What a run did.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub source: String,
    pub engine: String,
    pub provider: String,
    pub end: EndReason,
    pub wall_s: f64,
    pub frames_captured: u64,
    pub frames_inferred: u64,
    pub frames_shown: u64,
    /// Frames replaced before inference took them.
    pub dropped_before_inference: u64,
    /// Results replaced before the output took them.
    pub dropped_before_output: u64,
    /// Gaps in the source's own frame numbers (frames the source dropped).
    pub source_gaps: u64,
    /// Shown frames per second of wall time.
    pub fps: f64,
    /// Engine `run` alone.
    pub engine_ms: Timing,
    pub preprocess_ms: Timing,
    /// Interval between consecutive inference results (the pipeline's frame time).
    pub pipeline_frame_ms: Timing,
    /// Composition, display and recording of one frame.
    pub output_ms: Timing,
    /// Capture to shown.
    pub latency_ms: Timing,
    /// Latency p99 of the first and of the last whole minute (runs of two minutes or more).
    pub latency_p99_first_minute_ms: Option<f64>,
    pub latency_p99_last_minute_ms: Option<f64>,
    pub files: Vec<SinkReport>,
    /// Recording errors (recording stopped; the live view went on).
    pub record_errors: Vec<String>,
    /// The error that ended the run, if any.
    #[serde(skip)]
    pub error: Option<LiveError>,
    #[serde(rename = "error")]
    pub error_message: Option<String>,
}

/// One inference result on its way to the output.
struct Inferred {
    frame: FrameMeta,
    view: RgbImage,
    depth: DepthMap,
}

#[derive(Clone, Copy)]
struct FrameMeta {
    captured: Instant,
    seq: u64,
}

/// Counters and timings shared by the worker threads.
struct Shared {
    stop: Arc<AtomicBool>,
    frames: Latest<Frame>,
    results: Latest<Inferred>,
    counters: Mutex<WorkerStats>,
    failure: Mutex<Option<LiveError>>,
}

struct WorkerStats {
    captured: u64,
    gaps: u64,
    inferred: u64,
    engine_us: Histogram<u64>,
    preprocess_us: Histogram<u64>,
    interval_us: Histogram<u64>,
    last_result: Option<Instant>,
}

impl Shared {
    fn fail(&self, error: LiveError) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure.get_or_insert(error);
        self.stop.store(true, Ordering::SeqCst);
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, WorkerStats> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A histogram of microseconds from 1 us to 10 minutes, 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

pub(crate) fn micros(d: Duration) -> u64 {
    d.as_micros().clamp(1, 600_000_000) as u64
}

/// Runs the pipeline until one of the end conditions; see the module documentation.
pub fn run(
    source: Box<dyn FrameSource>,
    engine: Box<dyn DepthEngine>,
    config: LiveConfig,
) -> Result<Summary, LiveError> {
    let preprocessor = Preprocessor::new(&config.input)?;
    let (engine_name, provider) = (engine.name().to_string(), engine.provider());
    let describe = source.describe();
    let nominal_fps = source.nominal_fps();
    tracing::info!(
        source = %describe, engine = %engine_name, provider = %provider,
        input = ?config.input.shape, "live pipeline starting"
    );
    let mut output = Output::new(&config, nominal_fps)?;
    let shared = Arc::new(Shared {
        stop: config.stop.clone(),
        frames: Latest::default(),
        results: Latest::default(),
        counters: Mutex::new(WorkerStats {
            captured: 0,
            gaps: 0,
            inferred: 0,
            engine_us: histogram(),
            preprocess_us: histogram(),
            interval_us: histogram(),
            last_result: None,
        }),
        failure: Mutex::new(None),
    });
    let capture_done = spawn_capture(source, shared.clone());
    let worker =
        Worker { shared: shared.clone(), preprocessor, engine, output: config.output.clone() };
    let inference = std::thread::Builder::new()
        .name("inference".into())
        .spawn(move || worker.run())
        .expect("spawning the inference thread");
    let end = output.run(&shared, &config);
    output.ended = Some(Instant::now());
    shared.stop.store(true, Ordering::SeqCst);
    let inference_panicked = inference.join().is_err();
    wait_for_capture(capture_done);
    let mut summary = output.finish(&shared, end, describe, engine_name, provider);
    if inference_panicked && summary.error.is_none() {
        summary.error = Some(LiveError::Panicked { stage: "inference" });
    }
    summary.error_message = summary.error.as_ref().map(|e| e.to_string());
    if summary.error.is_some() {
        summary.end = EndReason::Error;
    }
    Ok(summary)
}

/// Starts the capture thread; the receiver hears when it has ended.
fn spawn_capture(mut source: Box<dyn FrameSource>, shared: Arc<Shared>) -> mpsc::Receiver<()> {
    let (done, done_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || {
            capture_loop(source.as_mut(), &shared);
            shared.frames.close();
            let _ = done.send(());
        })
        .expect("spawning the capture thread");
    done_rx
}

fn capture_loop(source: &mut dyn FrameSource, shared: &Shared) {
    let mut last_seq: Option<u64> = None;
    while !shared.stop.load(Ordering::SeqCst) {
        match source.next_frame() {
            Ok(Some(frame)) => {
                let mut stats = shared.stats();
                stats.captured += 1;
                if let Some(last) = last_seq {
                    stats.gaps += frame.seq.saturating_sub(last + 1);
                }
                drop(stats);
                last_seq = Some(frame.seq);
                tracing::trace!(seq = frame.seq, "captured");
                shared.frames.put(frame);
            }
            Ok(None) => {
                tracing::info!("source ended");
                return;
            }
            Err(error) => {
                tracing::error!(%error, "frame source failed");
                shared.fail(LiveError::Capture(error));
                return;
            }
        }
    }
}

fn wait_for_capture(done: mpsc::Receiver<()>) {
    if let Err(mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(CAPTURE_JOIN_WAIT) {
        tracing::warn!(
            "the frame source has not returned within {CAPTURE_JOIN_WAIT:?} (stalled?); \
             leaving its thread behind"
        );
    }
}

/// The inference thread's state.
struct Worker {
    shared: Arc<Shared>,
    preprocessor: Preprocessor,
    engine: Box<dyn DepthEngine>,
    output: OutputSpec,
}

impl Worker {
    fn run(mut self) {
        loop {
            match self.shared.frames.take(Duration::from_millis(50)) {
                Take::Item(frame) => {
                    if let Err(error) = self.infer(frame) {
                        self.shared.fail(error);
                        break;
                    }
                }
                Take::Empty if self.shared.stop.load(Ordering::SeqCst) => break,
                Take::Empty => {}
                Take::Closed => break,
            }
        }
        self.shared.results.close();
    }

    fn infer(&mut self, frame: Frame) -> Result<(), LiveError> {
        let t0 = Instant::now();
        let prepared = self.preprocessor.run(&frame.image)?;
        let t1 = Instant::now();
        let seq = frame.seq;
        let output = self.engine.run(&prepared.tensor).map_err(|source| LiveError::Engine {
            engine: self.engine.name().to_string(),
            seq,
            source,
        })?;
        let t2 = Instant::now();
        let depth = DepthMap::from_output(&output, &self.output)?;
        self.record_timings(t0, t1, t2);
        let frame = FrameMeta { captured: frame.captured, seq };
        self.shared.results.put(Inferred { frame, view: prepared.view, depth });
        Ok(())
    }

    fn record_timings(&self, t0: Instant, t1: Instant, t2: Instant) {
        let mut stats = self.shared.stats();
        stats.inferred += 1;
        stats.preprocess_us.saturating_record(micros(t1 - t0));
        stats.engine_us.saturating_record(micros(t2 - t1));
        let now = Instant::now();
        if let Some(last) = stats.last_result.replace(now) {
            stats.interval_us.saturating_record(micros(now - last));
        }
        if stats.inferred.is_multiple_of(LOG_EVERY) {
            tracing::debug!(
                frames = stats.inferred,
                engine_ms = stats.engine_us.mean() / 1000.0,
                preprocess_ms = stats.preprocess_us.mean() / 1000.0,
                frame_ms = stats.interval_us.mean() / 1000.0,
                "inference timings"
            );
        }
    }
}

/// The output stage: runs on the caller's thread (windows want the main thread).
struct Output {
    display: Option<Display>,
    sinks: Vec<Box<dyn FrameSink>>,
    reports: Vec<SinkReport>,
    record_errors: Vec<String>,
    recording: bool,
    style: Style,
    range: RangeTracker,
    pending_sinks: PendingSinks,
    sinks_opened: bool,
    started: Instant,
    shown: u64,
    latency_us: Histogram<u64>,
    minutes: Vec<Histogram<u64>>,
    output_us: Histogram<u64>,
    hud: HudState,
    /// When the output loop ended (the summary's wall time excludes joining the workers).
    ended: Option<Instant>,
    pointer: Option<(u32, u32)>,
}

/// Recorders are created at the first frame, when the canvas size is known.
struct PendingSinks {
    mp4: Option<PathBuf>,
    raw: Option<PathBuf>,
    info: RawInfo,
    fps: f64,
}

/// Rolling figures for the HUD.
#[derive(Default)]
struct HudState {
    fps: f64,
    latency_ms: f64,
    engine_ms: f64,
    last_shown: Option<Instant>,
    stall_warned: bool,
    drops_warned: bool,
    last_result: Option<Instant>,
}

impl Output {
    fn new(config: &LiveConfig, nominal_fps: Option<f64>) -> Result<Self, LiveError> {
        let [_, _, h, w] = config.input.shape;
        let size = postprocess::canvas_size(w as u32, h as u32);
        let display =
            config.window.and_then(|scale| match Display::open("imexdepth live", size, scale) {
                Ok(display) => Some(display),
                Err(error) => {
                    tracing::warn!(%error, "running headless");
                    None
                }
            });
        let pending_sinks = PendingSinks {
            mp4: config.record_mp4.clone(),
            raw: config.record_raw.clone(),
            info: config.info.clone(),
            fps: nominal_fps.unwrap_or(30.0),
        };
        Ok(Self {
            display,
            sinks: Vec::new(),
            reports: Vec::new(),
            record_errors: Vec::new(),
            recording: config.record_mp4.is_some() || config.record_raw.is_some(),
            style: config.style.clone(),
            range: RangeTracker::new(config.range),
            pending_sinks,
            sinks_opened: false,
            started: Instant::now(),
            shown: 0,
            latency_us: histogram(),
            minutes: Vec::new(),
            output_us: histogram(),
            hud: HudState::default(),
            ended: None,
            pointer: None,
        })
    }

    /// The output loop; returns why it ended.
    fn run(&mut self, shared: &Shared, config: &LiveConfig) -> EndReason {
        let poll = if self.display.is_some() { 10 } else { 50 };
        loop {
            if let Some(end) = self.check_end(shared, config) {
                return end;
            }
            match shared.results.take(Duration::from_millis(poll)) {
                Take::Item(result) if self.past_duration(&result, config) => {
                    return EndReason::Duration;
                }
                Take::Item(result) => {
                    if let Err(error) = self.present(result, shared) {
                        shared.fail(error);
                        return EndReason::Error;
                    }
                }
                Take::Empty => self.idle(config),
                Take::Closed => return self.closed_reason(shared),
            }
            if let Some(end) = self.handle_keys() {
                return end;
            }
        }
    }

    fn closed_reason(&self, shared: &Shared) -> EndReason {
        let failed = shared.failure.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        match (failed, shared.stop.load(Ordering::SeqCst)) {
            (true, _) => EndReason::Error,
            (false, true) => EndReason::Stopped,
            (false, false) => EndReason::EndOfStream,
        }
    }

    fn check_end(&self, shared: &Shared, config: &LiveConfig) -> Option<EndReason> {
        if shared.stop.load(Ordering::SeqCst) {
            return Some(self.closed_reason(shared));
        }
        if config.frames.is_some_and(|n| self.shown >= n) {
            return Some(EndReason::Frames);
        }
        if config.duration.is_some_and(|d| self.started.elapsed() >= d) {
            return Some(EndReason::Duration);
        }
        if self.display.as_ref().is_some_and(|d| !d.is_open()) {
            return Some(EndReason::WindowClosed);
        }
        None
    }

    /// A frame captured at or after the end of `--duration` is not shown (nor recorded), so a
    /// recording lasts exactly the duration asked for.
    fn past_duration(&self, result: &Inferred, config: &LiveConfig) -> bool {
        let since = result.frame.captured.saturating_duration_since(self.started);
        config.duration.is_some_and(|d| since >= d)
    }

    /// No new result: keep the window responsive and watch for a stalled source.
    fn idle(&mut self, config: &LiveConfig) {
        if let Some(display) = self.display.as_mut() {
            display.poll();
        }
        let since = self.hud.last_result.unwrap_or(self.started).elapsed();
        if since >= config.stall_warning && !self.hud.stall_warned {
            tracing::warn!("no new frame for {:.1} s: is the source stalled?", since.as_secs_f64());
            self.hud.stall_warned = true;
        }
    }

    fn present(&mut self, result: Inferred, shared: &Shared) -> Result<(), LiveError> {
        let t0 = Instant::now();
        self.hud.last_result = Some(t0);
        self.hud.stall_warned = false;
        let range = self.range.update(&result.depth);
        let hud = self.hud_lines(shared, &result.depth, range);
        let canvas = postprocess::compose(
            &result.view,
            &result.depth,
            range,
            &self.style,
            &hud,
            self.pointer,
        );
        if let Some(display) = self.display.as_mut() {
            display.show(&canvas)?;
            self.pointer = display.pointer();
        }
        self.record_latency(result.frame.captured);
        self.write_sinks(&canvas, &result)?;
        self.output_us.saturating_record(micros(t0.elapsed()));
        Ok(())
    }

    fn record_latency(&mut self, captured: Instant) {
        let now = Instant::now();
        let latency = micros(now.saturating_duration_since(captured));
        self.latency_us.saturating_record(latency);
        let minute = (now - self.started).as_secs() as usize / 60;
        while self.minutes.len() <= minute {
            self.minutes.push(histogram());
        }
        self.minutes[minute].saturating_record(latency);
        if let Some(last) = self.hud.last_shown.replace(now) {
            let fps = 1.0 / (now - last).as_secs_f64().max(1e-6);
            self.hud.fps = if self.shown <= 1 { fps } else { 0.9 * self.hud.fps + 0.1 * fps };
        }
        let ms = latency as f64 / 1000.0;
        self.hud.latency_ms =
            if self.shown == 0 { ms } else { 0.9 * self.hud.latency_ms + 0.1 * ms };
        self.shown += 1;
    }

    fn hud_lines(
        &mut self,
        shared: &Shared,
        depth: &DepthMap,
        range: postprocess::DepthRange,
    ) -> Vec<String> {
        let engine_ms = shared.stats().engine_us.mean() / 1000.0;
        self.hud.engine_ms = engine_ms;
        let drops = shared.frames.dropped() + shared.results.dropped();
        if drops > 0 && !self.hud.drops_warned {
            self.hud.drops_warned = true;
            tracing::warn!(
                "the source is faster than the pipeline: stale frames are dropped (counted in the \
                 summary) to keep latency low"
            );
        }
        let unit = depth.unit.label();
        let mode = if matches!(self.range.mode, RangeMode::Auto) { "auto" } else { "fixed" };
        let rec = if self.recording && !self.sinks.is_empty() { "  REC" } else { "" };
        let mut lines = vec![
            format!("{:5.1} fps  latency {:.0} ms", self.hud.fps, self.hud.latency_ms),
            format!(
                "{} ({}) {:.0} ms",
                self.pending_sinks.info.engine, self.pending_sinks.info.provider, engine_ms
            ),
            format!("dropped {drops}{rec}"),
            format!(
                "{} {}-{} {unit} {mode}",
                self.style.palette.map.name(),
                postprocess::format_depth(range.near),
                postprocess::format_depth(range.far)
            ),
        ];
        let panel = (depth.width, depth.height);
        if let Some((x, y)) = self.pointer
            && let Some(d) = postprocess::depth_under(depth, panel, x, y)
        {
            lines.push(format!("pointer {} {unit}", postprocess::format_depth(d)));
        }
        lines
    }

    fn write_sinks(&mut self, canvas: &RgbImage, result: &Inferred) -> Result<(), LiveError> {
        if !self.recording {
            return Ok(());
        }
        if !self.sinks_opened {
            self.sinks_opened = true;
            self.open_sinks(canvas.dimensions())?;
        }
        let captured = result.frame.captured.saturating_duration_since(self.started);
        let shown = Shown {
            canvas,
            view: &result.view,
            depth: &result.depth,
            captured,
            seq: result.frame.seq,
        };
        let mut failed = Vec::new();
        for (i, sink) in self.sinks.iter_mut().enumerate() {
            if let Err(error) = sink.write(&shown) {
                tracing::error!(%error, "recording stopped; the live view goes on");
                self.record_errors.push(error.to_string());
                failed.push(i);
            }
        }
        for i in failed.into_iter().rev() {
            let sink = self.sinks.remove(i);
            self.finish_sink(sink);
        }
        Ok(())
    }

    fn open_sinks(&mut self, size: (u32, u32)) -> Result<(), LiveError> {
        let pending = &self.pending_sinks;
        if let Some(path) = &pending.mp4 {
            let sink = record::create_mp4(path, size, pending.fps).map_err(LiveError::Record)?;
            tracing::info!(path = %path.display(), "recording MP4");
            self.sinks.push(sink);
        }
        if let Some(dir) = &pending.raw {
            let sink = record::RawRecorder::create(dir, pending.info.clone())
                .map_err(LiveError::Record)?;
            tracing::info!(dir = %dir.display(), "recording raw frames");
            self.sinks.push(Box::new(sink));
        }
        Ok(())
    }

    fn finish_sink(&mut self, sink: Box<dyn FrameSink>) {
        let path = sink.path().display().to_string();
        match sink.finish() {
            Ok(report) => self.reports.push(report),
            Err(error) => {
                tracing::error!(%error, path, "finishing a recording failed");
                self.record_errors.push(error.to_string());
            }
        }
    }

    fn handle_keys(&mut self) -> Option<EndReason> {
        let actions = self.display.as_ref().map(|d| d.actions()).unwrap_or_default();
        for action in actions {
            if action == Action::Quit {
                return Some(EndReason::QuitKey);
            }
            self.apply(action);
        }
        None
    }

    fn apply(&mut self, action: Action) {
        let style = &mut self.style;
        match action {
            Action::Quit => {}
            Action::NextView => style.view = style.view.next(),
            Action::NextColormap => {
                style.palette =
                    postprocess::Palette::new(style.palette.map.next(), style.palette.inverted)
            }
            Action::Invert => {
                style.palette =
                    postprocess::Palette::new(style.palette.map, !style.palette.inverted)
            }
            Action::ToggleRange => self.range.toggle(),
            Action::AlphaUp => style.alpha = (style.alpha + 0.1).min(1.0),
            Action::AlphaDown => style.alpha = (style.alpha - 0.1).max(0.0),
            Action::ToggleHud => style.show_hud = !style.show_hud,
            Action::ToggleHelp => style.show_help = !style.show_help,
            Action::ToggleRecording => self.toggle_recording(),
        }
    }

    fn toggle_recording(&mut self) {
        if self.pending_sinks.mp4.is_none() && self.pending_sinks.raw.is_none() {
            tracing::warn!(
                "nothing to record to: start with --record FILE.mp4 or --record-raw DIR"
            );
            return;
        }
        self.recording = !self.recording;
        if !self.recording {
            self.sinks.iter_mut().for_each(|s| s.pause());
        }
        tracing::info!(recording = self.recording, "recording toggled");
    }

    fn finish(
        mut self,
        shared: &Shared,
        end: EndReason,
        source: String,
        engine: String,
        provider: String,
    ) -> Summary {
        for sink in std::mem::take(&mut self.sinks) {
            self.finish_sink(sink);
        }
        let ended = self.ended.unwrap_or_else(Instant::now);
        let wall_s = (ended - self.started).as_secs_f64();
        let stats = shared.stats();
        let minute_p99 = |h: &Histogram<u64>| h.value_at_quantile(0.99) as f64 / 1000.0;
        let whole = self.minutes.len().saturating_sub(1);
        let error = shared.failure.lock().unwrap_or_else(|e| e.into_inner()).take();
        Summary {
            source,
            engine,
            provider,
            end,
            wall_s,
            frames_captured: stats.captured,
            frames_inferred: stats.inferred,
            frames_shown: self.shown,
            dropped_before_inference: shared.frames.dropped(),
            dropped_before_output: shared.results.dropped(),
            source_gaps: stats.gaps,
            fps: self.shown as f64 / wall_s.max(1e-9),
            engine_ms: Timing::of(&stats.engine_us),
            preprocess_ms: Timing::of(&stats.preprocess_us),
            pipeline_frame_ms: Timing::of(&stats.interval_us),
            output_ms: Timing::of(&self.output_us),
            latency_ms: Timing::of(&self.latency_us),
            latency_p99_first_minute_ms: (whole >= 2).then(|| minute_p99(&self.minutes[0])),
            latency_p99_last_minute_ms: (whole >= 2).then(|| minute_p99(&self.minutes[whole - 1])),
            files: self.reports,
            record_errors: self.record_errors,
            error,
            error_message: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_keeps_the_freshest_and_counts_drops() {
        let slot = Latest::default();
        slot.put(1);
        slot.put(2);
        assert_eq!(slot.take(Duration::ZERO), Take::Item(2));
        assert_eq!(slot.dropped(), 1);
        assert_eq!(slot.take(Duration::from_millis(1)), Take::Empty);
        slot.put(3);
        slot.close();
        assert_eq!(slot.take(Duration::ZERO), Take::Item(3));
        assert_eq!(slot.take(Duration::ZERO), Take::Closed);
    }

    #[test]
    fn take_wakes_on_put() {
        let slot = Arc::new(Latest::default());
        let writer = slot.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            writer.put(7);
        });
        assert_eq!(slot.take(Duration::from_secs(5)), Take::Item(7));
        t.join().unwrap();
    }
}
