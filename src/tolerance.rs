//! Numeric comparison with named tolerance tiers, shared by tests, `validate` and live checks.
//!
//! Relative error is `max |a - b| / max |b|` (the exporter's own measure, so figures printed by
//! the Python side and the Rust side are comparable). NaN or Inf in either side never passes.

/// How close two results must be, by where they come from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tier {
    /// Bit-identical.
    Exact,
    /// The same float32 computation in another order: 1e-6.
    F32Tight,
    /// The implicit solve in float32 against a float64 direct solve: 1e-5.
    F32Solve,
    /// Two runtimes or two implementations of a whole network (native vs PyTorch or ONNX
    /// Runtime, float32): 1e-4.
    CrossRuntime,
    /// Reduced precision (fp16 execution providers): 1e-2.
    Half,
    /// Through a decoded 8-bit image or 16-bit millimetre PNG: 2e-2.
    Decoded,
}

impl Tier {
    /// Largest allowed relative error.
    pub fn max_relative(self) -> f64 {
        match self {
            Tier::Exact => 0.0,
            Tier::F32Tight => 1e-6,
            Tier::F32Solve => 1e-5,
            Tier::CrossRuntime => 1e-4,
            Tier::Half => 1e-2,
            Tier::Decoded => 2e-2,
        }
    }
}

/// What a comparison found.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Comparison {
    pub len: usize,
    pub max_abs: f64,
    /// `max |a - b| / max |b|`.
    pub max_relative: f64,
    /// Index of the largest absolute difference.
    pub worst_index: usize,
    /// First index whose difference exceeds the tier (relative to `max |b|`), if any.
    pub first_bad: Option<usize>,
    /// How many elements exceed the tier.
    pub outliers: usize,
    /// NaN or Inf found on either side.
    pub non_finite: usize,
    pub tier_limit: f64,
}

impl Comparison {
    pub fn passed(&self) -> bool {
        self.non_finite == 0 && self.max_relative <= self.tier_limit
    }
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "max abs {:.3e}, max rel {:.3e} (limit {:.1e}) at index {}, first bad {:?}, \
             {} outliers, {} non-finite, of {}",
            self.max_abs,
            self.max_relative,
            self.tier_limit,
            self.worst_index,
            self.first_bad,
            self.outliers,
            self.non_finite,
            self.len
        )
    }
}

/// Compares `got` against the reference `want`.
pub fn compare(got: &[f32], want: &[f32], tier: Tier) -> Comparison {
    let limit = tier.max_relative();
    let mut non_finite = 0;
    let scale = want.iter().filter(|v| v.is_finite()).fold(0.0f64, |m, &v| m.max(v.abs() as f64));
    let (mut max_abs, mut worst_index, mut first_bad, mut outliers) = (0.0f64, 0, None, 0);
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        if !a.is_finite() || !b.is_finite() {
            non_finite += 1;
            first_bad.get_or_insert(i);
            continue;
        }
        let diff = (a as f64 - b as f64).abs();
        if diff > max_abs {
            (max_abs, worst_index) = (diff, i);
        }
        if diff > limit * scale {
            outliers += 1;
            first_bad.get_or_insert(i);
        }
    }
    if got.len() != want.len() {
        non_finite += got.len().abs_diff(want.len());
    }
    let max_relative = if scale > 0.0 { max_abs / scale } else { max_abs };
    Comparison {
        len: want.len(),
        max_abs,
        max_relative,
        worst_index,
        first_bad,
        outliers,
        non_finite,
        tier_limit: limit,
    }
}

/// Panics with the comparison's figures unless `got` matches `want` within `tier`.
#[track_caller]
pub fn assert_close(got: &[f32], want: &[f32], tier: Tier, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length (got vs want)");
    let cmp = compare(got, want, tier);
    assert!(cmp.passed(), "{what}: {cmp}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_never_passes() {
        assert!(!compare(&[f32::NAN], &[f32::NAN], Tier::Decoded).passed());
        assert!(!compare(&[1.0], &[f32::INFINITY], Tier::Decoded).passed());
    }

    #[test]
    fn reports_first_bad_and_outliers() {
        let cmp = compare(&[1.0, 2.5, 3.0, 9.0], &[1.0, 2.0, 3.0, 4.0], Tier::CrossRuntime);
        assert_eq!((cmp.first_bad, cmp.outliers, cmp.worst_index), (Some(1), 2, 3));
        assert!(!cmp.passed());
        assert!(compare(&[1.0, 2.0], &[1.0, 2.0], Tier::Exact).passed());
    }
}
