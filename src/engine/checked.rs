//! An engine with live validation: every Nth frame is checked against the native engine on a
//! background thread (NaN/Inf, blank frames, divergence past the precision's tolerance). A
//! reduced-precision engine (TensorRT fp16 or int8) that fails a check is reopened in fp32, once;
//! public reports show fp16 engines producing black frames.
//!
//! The caller's frame loop is never blocked by a check: a frame due while the previous check
//! still runs is skipped (counted in [`ValidationSummary::skipped_busy`]). The fp32 rebuild does
//! block the frame that triggers it (TensorRT can take minutes; a warning says so).

use std::path::Path;

use super::parity::{LiveValidator, Precision, ValidationSummary, Verdict};
use super::select::{self, EngineOptions, OpenError};
use super::{DepthEngine, EngineError};
use crate::tensor::Tensor;

/// Opens the fp32 replacement: `(fast engine, native reference)`.
pub type Reopen =
    Box<dyn FnMut() -> Result<(Box<dyn DepthEngine>, Box<dyn DepthEngine>), OpenError> + Send>;

/// A fast engine whose output is checked against a reference every `every` frames.
pub struct CheckedEngine {
    inner: Box<dyn DepthEngine>,
    validator: Option<LiveValidator>,
    every: u64,
    precision: Precision,
    frame: u64,
    reopen: Option<Reopen>,
    /// Counts of validators retired by a rebuild.
    earlier: ValidationSummary,
}

impl CheckedEngine {
    /// Opens `model` as `options` ask and checks every `every`th frame against the native engine.
    /// With `every == 0`, or when the chosen engine is the native engine itself, nothing is
    /// checked.
    pub fn open(model: &Path, options: &EngineOptions, every: u64) -> Result<Self, OpenError> {
        let inner = select::open(model, options)?;
        if inner.name() == "native" || every == 0 {
            return Ok(Self::unchecked(inner));
        }
        let reference = select::open_native(model)?;
        let precision = options.precision();
        let (model, fp32) = (model.to_path_buf(), options.fp32());
        let reopen: Reopen =
            Box::new(move || Ok((select::open(&model, &fp32)?, select::open_native(&model)?)));
        let reopen = (precision != Precision::Fp32).then_some(reopen);
        Ok(Self::with_reference(inner, reference, every, precision, reopen))
    }

    /// `inner` checked against `reference`; `reopen` gives the fp32 replacement if a check fails
    /// on a reduced-precision engine.
    pub fn with_reference(
        inner: Box<dyn DepthEngine>,
        reference: Box<dyn DepthEngine>,
        every: u64,
        precision: Precision,
        reopen: Option<Reopen>,
    ) -> Self {
        let validator = Some(LiveValidator::spawn(reference, every, precision));
        let earlier = ValidationSummary::default();
        Self { inner, validator, every, precision, frame: 0, reopen, earlier }
    }

    fn unchecked(inner: Box<dyn DepthEngine>) -> Self {
        let earlier = ValidationSummary::default();
        let (validator, reopen) = (None, None);
        Self { inner, validator, every: 0, precision: Precision::Fp32, frame: 0, reopen, earlier }
    }

    /// The precision of the engine now running.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Whether frames are being checked.
    pub fn is_checked(&self) -> bool {
        self.validator.is_some()
    }

    /// Counts so far (including validators retired by an fp32 rebuild).
    pub fn summary(&self) -> ValidationSummary {
        let now = self.validator.as_ref().map(|v| v.summary().clone()).unwrap_or_default();
        add(&self.earlier, &now)
    }

    /// Stops checking, waits for the checks in flight, and returns the counts.
    pub fn finish(mut self) -> ValidationSummary {
        let now = self.validator.take().map(LiveValidator::finish).unwrap_or_default();
        add(&self.earlier, &now)
    }

    fn rebuild_fp32(&mut self) {
        let Some(mut reopen) = self.reopen.take() else { return };
        tracing::warn!(
            "reopening the engine in fp32 after {} frames failed their check (a TensorRT build \
             can take minutes)",
            self.precision
        );
        match reopen() {
            Ok((inner, reference)) => {
                if let Some(old) = self.validator.take() {
                    self.earlier = add(&self.earlier, &old.finish());
                }
                self.inner = inner;
                self.precision = Precision::Fp32;
                self.validator = Some(LiveValidator::spawn(reference, self.every, Precision::Fp32));
                tracing::info!("now running on {} in fp32", self.inner.provider());
            }
            Err(err) => tracing::warn!(
                "the fp32 rebuild failed ({}); keeping the {} engine",
                super::parity::error_chain(&err),
                self.precision
            ),
        }
    }
}

fn add(a: &ValidationSummary, b: &ValidationSummary) -> ValidationSummary {
    ValidationSummary {
        checked: a.checked + b.checked,
        problems: a.problems + b.problems,
        skipped_busy: a.skipped_busy + b.skipped_busy,
    }
}

impl DepthEngine for CheckedEngine {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn provider(&self) -> String {
        self.inner.provider()
    }

    fn run(&mut self, input: &Tensor) -> Result<Tensor, EngineError> {
        let output = self.inner.run(input)?;
        let frame = self.frame;
        self.frame += 1;
        let Some(validator) = self.validator.as_mut() else { return Ok(output) };
        validator.offer(frame, input, &output);
        if validator.poll().iter().any(Verdict::suggests_fp32_rebuild) {
            self.rebuild_fp32();
        }
        Ok(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Multiplies its input by `k` (0 gives black frames).
    struct Scale(f32);
    impl DepthEngine for Scale {
        fn name(&self) -> &str {
            "scale"
        }
        fn provider(&self) -> String {
            format!("x{}", self.0)
        }
        fn run(&mut self, input: &Tensor) -> Result<Tensor, EngineError> {
            Ok(Tensor::from_vec(input.shape, input.data.iter().map(|v| self.0 * v).collect()))
        }
    }

    fn run_frames(engine: &mut CheckedEngine, n: usize) {
        let input = Tensor::from_vec([1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        for _ in 0..n {
            engine.run(&input).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    #[test]
    fn black_fp16_frames_trigger_one_fp32_rebuild() {
        let reopen: Reopen =
            Box::new(|| Ok((Box::new(Scale(2.0)) as _, Box::new(Scale(2.0)) as _)));
        let mut engine = CheckedEngine::with_reference(
            Box::new(Scale(0.0)),
            Box::new(Scale(2.0)),
            1,
            Precision::Fp16,
            Some(reopen),
        );
        run_frames(&mut engine, 6);
        assert_eq!(engine.precision(), Precision::Fp32);
        assert_eq!(engine.provider(), "x2");
        let summary = engine.finish();
        assert!(summary.problems >= 1 && summary.checked > summary.problems, "{summary:?}");
    }

    #[test]
    fn fp32_problems_are_reported_but_not_rebuilt() {
        let mut engine = CheckedEngine::with_reference(
            Box::new(Scale(1.5)),
            Box::new(Scale(1.0)),
            2,
            Precision::Fp32,
            None,
        );
        run_frames(&mut engine, 4);
        assert_eq!(engine.provider(), "x1.5");
        let summary = engine.finish();
        assert_eq!((summary.checked, summary.problems), (2, 2), "{summary:?}");
    }
}
