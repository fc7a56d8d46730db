//! Parity between engines: the tolerance tier for each precision, frame checks (NaN/Inf, blank,
//! divergence), and the live validator that checks every Nth frame of a fast engine against the
//! native engine on a background thread. Comparisons go through [`crate::tolerance`].

use std::sync::mpsc;
use std::thread::JoinHandle;

use super::DepthEngine;
use crate::tensor::Tensor;
use crate::tolerance::{Comparison, Tier, compare};

/// Numeric precision of an engine (TensorRT builds fp16 and int8 engines; everything else is
/// fp32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Fp16,
    Int8,
}

impl Precision {
    /// The precision the `--fp16` / `--int8` flags ask for (int8 wins over fp16).
    pub fn from_flags(fp16: bool, int8: bool) -> Self {
        match (fp16, int8) {
            (_, true) => Precision::Int8,
            (true, false) => Precision::Fp16,
            (false, false) => Precision::Fp32,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The error and its causes on one line, for warnings.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The tolerance tier for an engine of this precision checked against the fp32 native engine:
/// fp32 [`Tier::CrossRuntime`] (1e-4), fp16 [`Tier::Half`] (1e-2). int8 has no tier of its own
/// yet and uses [`Tier::Decoded`] (2e-2), a figure not yet checked on a GPU.
pub fn tier_for(precision: Precision) -> Tier {
    match precision {
        Precision::Fp32 => Tier::CrossRuntime,
        Precision::Fp16 => Tier::Half,
        Precision::Int8 => Tier::Decoded,
    }
}

/// True if every value equals the first (a black or flat frame), with a relative epsilon.
pub fn is_blank(values: &[f32]) -> bool {
    let Some(&first) = values.first() else { return true };
    let scale = values.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    values.iter().all(|v| (v - first).abs() <= 1e-6 * scale)
}

/// What the live validator found on one checked frame.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum Finding {
    /// Within tolerance.
    Agrees { comparison: Comparison },
    /// NaN or infinity in the fast engine's output.
    NonFinite { count: usize },
    /// The fast engine's output is flat while the reference's is not (fp16 engines have been seen
    /// producing black frames).
    Blank,
    /// Past the tolerance.
    Diverges { comparison: Comparison },
    /// Output shapes differ.
    Shape { found: [usize; 4], reference: [usize; 4] },
    /// The reference engine failed on this input.
    ReferenceFailed { message: String },
}

/// One checked frame.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Verdict {
    pub frame: u64,
    pub finding: Finding,
    pub precision: Precision,
}

impl Verdict {
    /// True unless the frame agreed (or the reference itself failed, which says nothing about
    /// the fast engine).
    pub fn is_problem(&self) -> bool {
        !matches!(self.finding, Finding::Agrees { .. } | Finding::ReferenceFailed { .. })
    }

    /// True when the fast engine should be rebuilt in fp32: a problem on a reduced-precision
    /// engine.
    pub fn suggests_fp32_rebuild(&self) -> bool {
        self.precision != Precision::Fp32 && self.is_problem()
    }
}

/// Checks `output` (from the fast engine) against `reference` (native) on the same input.
pub fn check_frame(output: &Tensor, reference: &Tensor, tier: Tier) -> Finding {
    if output.shape != reference.shape {
        return Finding::Shape { found: output.shape, reference: reference.shape };
    }
    let non_finite = output.data.iter().filter(|v| !v.is_finite()).count();
    if non_finite > 0 {
        return Finding::NonFinite { count: non_finite };
    }
    if is_blank(&output.data) && !is_blank(&reference.data) {
        return Finding::Blank;
    }
    let comparison = compare(&output.data, &reference.data, tier);
    if comparison.passed() {
        Finding::Agrees { comparison }
    } else {
        Finding::Diverges { comparison }
    }
}

struct Job {
    frame: u64,
    input: Tensor,
    output: Tensor,
}

/// Counts over a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ValidationSummary {
    pub checked: u64,
    pub problems: u64,
    /// Frames due for a check that were skipped because the previous check was still running.
    pub skipped_busy: u64,
}

/// Checks every `every`th frame against a reference engine on a background thread, never
/// blocking the caller: a frame due while the previous check still runs is skipped (counted).
///
/// ```no_run
/// # use imexdepth::engine::{DepthEngine, parity::{LiveValidator, Precision}};
/// # fn demo(fast: &mut dyn DepthEngine, native: Box<dyn DepthEngine>,
/// #         frames: Vec<imexdepth::tensor::Tensor>) {
/// let mut validator = LiveValidator::spawn(native, 30, Precision::Fp32);
/// for (i, input) in frames.iter().enumerate() {
///     let output = fast.run(input).unwrap();
///     validator.offer(i as u64, input, &output);
///     for verdict in validator.poll() {
///         if verdict.suggests_fp32_rebuild() { /* reopen the fast engine in fp32 */ }
///     }
/// }
/// let summary = validator.finish();
/// # }
/// ```
pub struct LiveValidator {
    every: u64,
    precision: Precision,
    jobs: Option<mpsc::SyncSender<Job>>,
    verdicts: mpsc::Receiver<Verdict>,
    worker: Option<JoinHandle<()>>,
    summary: ValidationSummary,
}

impl LiveValidator {
    /// Starts the checking thread with `reference` (normally the native engine). `every` of 0 is
    /// taken as 1. `precision` is that of the engine being checked; it picks the tolerance.
    pub fn spawn(reference: Box<dyn DepthEngine>, every: u64, precision: Precision) -> Self {
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(1);
        let (verdict_tx, verdicts) = mpsc::channel();
        let tier = tier_for(precision);
        let worker = std::thread::Builder::new()
            .name("imexdepth-validate".into())
            .spawn(move || check_loop(reference, job_rx, verdict_tx, tier, precision))
            .map_err(|err| tracing::warn!("live validation is off: cannot start its thread: {err}"))
            .ok();
        let jobs = worker.as_ref().map(|_| jobs);
        Self {
            every: every.max(1),
            precision,
            jobs,
            verdicts,
            worker,
            summary: ValidationSummary::default(),
        }
    }

    /// Hands frame `frame` to the checker if it is due and the checker is idle; returns whether
    /// it was taken. Copies `input` and `output` only when taken.
    pub fn offer(&mut self, frame: u64, input: &Tensor, output: &Tensor) -> bool {
        if !frame.is_multiple_of(self.every) {
            return false;
        }
        let Some(jobs) = &self.jobs else { return false };
        let job = Job { frame, input: input.clone(), output: output.clone() };
        match jobs.try_send(job) {
            Ok(()) => true,
            Err(mpsc::TrySendError::Full(_)) => {
                self.summary.skipped_busy += 1;
                false
            }
            Err(mpsc::TrySendError::Disconnected(_)) => {
                tracing::warn!("live validation stopped: its thread has ended");
                self.jobs = None;
                false
            }
        }
    }

    /// The verdicts that arrived since the last call (non-blocking); problems are logged as
    /// warnings here.
    pub fn poll(&mut self) -> Vec<Verdict> {
        let verdicts: Vec<Verdict> = self.verdicts.try_iter().collect();
        for v in &verdicts {
            self.record(v);
        }
        verdicts
    }

    fn record(&mut self, v: &Verdict) {
        self.summary.checked += 1;
        if v.is_problem() {
            self.summary.problems += 1;
            let advice = if v.suggests_fp32_rebuild() { "; rebuild in fp32 advised" } else { "" };
            tracing::warn!(
                "frame {} ({}) disagrees with the native engine: {}{advice}",
                v.frame,
                self.precision,
                describe(&v.finding)
            );
        } else if let Finding::ReferenceFailed { message } = &v.finding {
            tracing::warn!("frame {}: the native engine failed: {message}", v.frame);
        }
    }

    /// Waits for the checks in flight, stops the thread and returns the counts.
    pub fn finish(mut self) -> ValidationSummary {
        self.jobs = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
        let rest: Vec<Verdict> = self.verdicts.try_iter().collect();
        for v in &rest {
            self.record(v);
        }
        self.summary.clone()
    }

    /// The counts so far.
    pub fn summary(&self) -> &ValidationSummary {
        &self.summary
    }
}

impl Drop for LiveValidator {
    fn drop(&mut self) {
        // Closing the channel ends the thread after its current check; do not wait for it here.
        self.jobs = None;
    }
}

fn describe(finding: &Finding) -> String {
    match finding {
        Finding::Agrees { comparison } => format!("agrees ({comparison})"),
        Finding::NonFinite { count } => format!("{count} NaN/Inf values"),
        Finding::Blank => "blank (constant) output".into(),
        Finding::Diverges { comparison } => format!("diverges ({comparison})"),
        Finding::Shape { found, reference } => {
            format!("output shape {found:?}, native {reference:?}")
        }
        Finding::ReferenceFailed { message } => format!("native engine failed: {message}"),
    }
}

fn check_loop(
    mut reference: Box<dyn DepthEngine>,
    jobs: mpsc::Receiver<Job>,
    verdicts: mpsc::Sender<Verdict>,
    tier: Tier,
    precision: Precision,
) {
    for job in jobs {
        let finding = match reference.run(&job.input) {
            Ok(expected) => check_frame(&job.output, &expected, tier),
            Err(err) => Finding::ReferenceFailed { message: error_chain(&err) },
        };
        if verdicts.send(Verdict { frame: job.frame, finding, precision }).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineError;

    #[test]
    fn frame_checks_flag_blank_non_finite_and_divergence() {
        let t = |v: Vec<f32>| Tensor::from_vec([1, 1, 1, v.len()], v);
        let reference = t(vec![1.0, 2.0, 3.0]);
        let tol = Tier::Half;
        assert!(matches!(check_frame(&reference, &reference, tol), Finding::Agrees { .. }));
        assert_eq!(check_frame(&t(vec![0.0; 3]), &reference, tol), Finding::Blank);
        let nan = t(vec![1.0, f32::NAN, 3.0]);
        assert_eq!(check_frame(&nan, &reference, tol), Finding::NonFinite { count: 1 });
        let off = t(vec![1.0, 2.5, 3.0]);
        assert!(matches!(check_frame(&off, &reference, tol), Finding::Diverges { .. }));
        let other = Tensor::from_vec([1, 1, 3, 1], vec![1.0, 2.0, 3.0]);
        assert!(matches!(check_frame(&other, &reference, tol), Finding::Shape { .. }));
    }

    /// A stand-in reference engine: doubles its input.
    struct Doubler;
    impl DepthEngine for Doubler {
        fn name(&self) -> &str {
            "doubler"
        }
        fn provider(&self) -> String {
            "cpu".into()
        }
        fn run(&mut self, input: &Tensor) -> Result<Tensor, EngineError> {
            Ok(Tensor::from_vec(input.shape, input.data.iter().map(|v| 2.0 * v).collect()))
        }
    }

    #[test]
    fn live_validator_checks_every_nth_frame_in_the_background() {
        let mut v = LiveValidator::spawn(Box::new(Doubler), 3, Precision::Fp16);
        let input = Tensor::from_vec([1, 1, 1, 3], vec![1.0, 2.0, 3.0]);
        let good = Tensor::from_vec([1, 1, 1, 3], vec![2.0, 4.0, 6.0]);
        let black = Tensor::zeros([1, 1, 1, 3]);
        let mut taken = Vec::new();
        for frame in 0..7u64 {
            let out = if frame == 3 { &black } else { &good };
            if v.offer(frame, &input, out) {
                taken.push(frame);
            }
            // Let the checker catch up so no frame is skipped as busy in this test.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(taken, vec![0, 3, 6]);
        let summary = v.finish();
        assert_eq!(summary, ValidationSummary { checked: 3, problems: 1, skipped_busy: 0 });
    }

    #[test]
    fn fp16_problem_suggests_fp32_rebuild() {
        let v = Verdict { frame: 0, finding: Finding::Blank, precision: Precision::Fp16 };
        assert!(v.suggests_fp32_rebuild());
        let v = Verdict { precision: Precision::Fp32, ..v };
        assert!(v.is_problem() && !v.suggests_fp32_rebuild());
    }
}
