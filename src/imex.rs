//! The implicit solve of IMEXnet: `Y_c = (I + h B_c^T B_c)^-1 X_c` for every channel `c`.
//!
//! `B_c` is a depthwise 3x3 cross-correlation with kernel `k_c` (`[C, 1, 3, 3]`, row-major).
//! Under periodic boundaries on an `H x W` grid, `B^T B` is diagonal in the 2-D DFT: at
//! frequency `(u, v)` the solve multiplies by `1 / (1 + h |B^(u, v)|^2)`, where
//! `B^(u, v) = sum_ij k[i][j] exp(-2 pi i (u (i - 1) / H + v (j - 1) / W))` is the DFT of the
//! kernel placed with its centre at index `(0, 0)` (taps that wrap onto one index add up, which
//! matters for grids smaller than 3). `|B^|^2` does not depend on the sign convention.
//!
//! Layout and normalisation: planes are NCHW float32. The forward transform is a real FFT along
//! W (`realfft`, `W / 2 + 1` one-sided bins) followed by complex FFTs along H (`rustfft`), both
//! unscaled; the `1 / (H W)` of the inverse is folded into the per-frequency factor together
//! with any output scale (the IMEX step folds its `h` there too). The factor is computed once
//! per (kernel, h, H, W) in float64 and stored as float32 in a [`SolvePlan`].
//!
//! Boundary modes ([`Boundary`]): `periodic` solves on the `H x W` torus; `reflect` pads every
//! side by `pad` pixels by reflection (edge pixel not repeated, as ONNX `Pad` mode `reflect`),
//! solves periodically on the `(H + 2 pad) x (W + 2 pad)` grid and crops the centre. It needs
//! `pad < H` and `pad < W`.
//!
//! Cost per channel: `O(Hp Wp log(Hp Wp))`; scratch per worker thread: one padded plane of
//! reals and `Hp (Wp / 2 + 1)` complex values, reused across calls. Channels are solved in
//! parallel with rayon.

use std::sync::Mutex;

use rayon::prelude::*;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};
use std::sync::Arc;

pub use crate::model::Boundary;

/// A 3x3 kernel per channel, row-major (`[C, 1, 3, 3]` flattened).
pub type Kernel3 = [f32; 9];

/// Everything needed to solve on one grid: FFT plans, the per-frequency factor, scratch.
pub struct SolvePlan {
    channels: usize,
    /// Size of the planes passed in (the crop size in reflect mode).
    height: usize,
    width: usize,
    boundary: Boundary,
    pad: usize,
    /// Grid the FFTs run on (`height + 2 pad` in reflect mode).
    grid_h: usize,
    grid_w: usize,
    /// `scale / ((1 + h |B^|^2) H W)` per channel, transposed: `[C][W/2+1][H]`.
    factor: Vec<f32>,
    row_forward: Arc<dyn RealToComplex<f32>>,
    row_inverse: Arc<dyn ComplexToReal<f32>>,
    col_forward: Arc<dyn Fft<f32>>,
    col_inverse: Arc<dyn Fft<f32>>,
    scratch: Mutex<Vec<Scratch>>,
}

/// Per-worker buffers, reused across calls.
struct Scratch {
    /// Padded grid plane, `grid_h * grid_w` reals.
    grid: Vec<f32>,
    /// One row's one-sided spectrum, `grid_w / 2 + 1`.
    row_spectrum: Vec<Complex<f32>>,
    /// Transposed spectrum `[W/2+1][H]`, so that column FFTs run on contiguous memory.
    spectrum: Vec<Complex<f32>>,
    fft_scratch: Vec<Complex<f32>>,
    real_scratch: Vec<Complex<f32>>,
}

/// Errors in the parameters of a solve (a model's description, checked at load).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SolveError {
    #[error("reflect padding {pad} needs a grid larger than the pad; got {height}x{width}")]
    PadTooLarge { pad: usize, height: usize, width: usize },
    #[error("step size h must be finite and >= 0, got {h}")]
    BadStep { h: f32 },
    #[error("expected {expected} kernels (one per channel), got {found}")]
    KernelCount { expected: usize, found: usize },
    #[error("empty grid {height}x{width}")]
    Empty { height: usize, width: usize },
}

impl SolvePlan {
    /// Plans `out_c = scale * (I + h B_c^T B_c)^-1 x_c` for `kernels.len()` channels of
    /// `height x width` planes.
    pub fn new(
        kernels: &[Kernel3],
        h: f32,
        scale: f32,
        height: usize,
        width: usize,
        boundary: Boundary,
        pad: usize,
    ) -> Result<Self, SolveError> {
        if !(h.is_finite() && h >= 0.0) {
            return Err(SolveError::BadStep { h });
        }
        if height == 0 || width == 0 {
            return Err(SolveError::Empty { height, width });
        }
        let pad = if boundary == Boundary::Reflect { pad } else { 0 };
        if pad > 0 && (pad >= height || pad >= width) {
            return Err(SolveError::PadTooLarge { pad, height, width });
        }
        let (grid_h, grid_w) = (height + 2 * pad, width + 2 * pad);
        let mut real_planner = RealFftPlanner::<f32>::new();
        let mut planner = FftPlanner::<f32>::new();
        let factor =
            kernels.iter().flat_map(|k| factor_table(k, h, scale, grid_h, grid_w)).collect();
        Ok(Self {
            channels: kernels.len(),
            height,
            width,
            boundary,
            pad,
            grid_h,
            grid_w,
            factor,
            row_forward: real_planner.plan_fft_forward(grid_w),
            row_inverse: real_planner.plan_fft_inverse(grid_w),
            col_forward: planner.plan_fft_forward(grid_h),
            col_inverse: planner.plan_fft_inverse(grid_h),
            scratch: Mutex::new(Vec::new()),
        })
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// `(height, width)` of the planes this plan solves.
    pub fn size(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    /// Solves every channel of one image (`[C, H, W]` flattened), writing into `out`
    /// (`out += result` when `accumulate`, else `out = result`). Channels run in parallel.
    ///
    /// # Panics
    /// If `x` or `out` is not `C * H * W` long (an internal contract of the engine).
    pub fn solve_image(&self, x: &[f32], out: &mut [f32], accumulate: bool) {
        let plane = self.height * self.width;
        assert_eq!(x.len(), self.channels * plane, "solve input length (C*H*W)");
        assert_eq!(out.len(), x.len(), "solve output length (C*H*W)");
        out.par_chunks_mut(plane).zip(x.par_chunks(plane)).enumerate().for_each_init(
            || self.lease(),
            |lease, (c, (out_c, x_c))| {
                let scratch = lease.scratch.as_mut().expect("lease holds scratch until dropped");
                self.solve_plane(c, x_c, out_c, accumulate, scratch);
            },
        );
    }

    fn lease(&self) -> Lease<'_> {
        let reused = self.scratch.lock().ok().and_then(|mut pool| pool.pop());
        Lease { pool: &self.scratch, scratch: Some(reused.unwrap_or_else(|| self.new_scratch())) }
    }

    fn new_scratch(&self) -> Scratch {
        let bins = self.grid_w / 2 + 1;
        let zero = Complex::new(0.0, 0.0);
        let fft_len = self
            .col_forward
            .get_inplace_scratch_len()
            .max(self.col_inverse.get_inplace_scratch_len());
        let real_len = self.row_forward.get_scratch_len().max(self.row_inverse.get_scratch_len());
        Scratch {
            grid: vec![0.0; self.grid_h * self.grid_w],
            row_spectrum: vec![zero; bins],
            spectrum: vec![zero; bins * self.grid_h],
            fft_scratch: vec![zero; fft_len],
            real_scratch: vec![zero; real_len],
        }
    }

    /// One channel: pad into the grid, forward FFT, multiply, inverse FFT, crop.
    fn solve_plane(&self, c: usize, x: &[f32], out: &mut [f32], acc: bool, s: &mut Scratch) {
        let (gh, gw, bins) = (self.grid_h, self.grid_w, self.grid_w / 2 + 1);
        self.fill_grid(x, &mut s.grid);

        // Rows: one-sided real FFT along W, stored transposed as [bin][row].
        for (r, row) in s.grid.chunks_exact_mut(gw).enumerate() {
            self.row_forward
                .process_with_scratch(row, &mut s.row_spectrum, &mut s.real_scratch)
                .expect("buffer sizes come from the plan");
            for (v, value) in s.row_spectrum.iter().enumerate() {
                s.spectrum[v * gh + r] = *value;
            }
        }

        // Columns: full complex FFT along H, the factor, the inverse FFT.
        self.col_forward.process_with_scratch(&mut s.spectrum, &mut s.fft_scratch);
        let factor = &self.factor[c * bins * gh..(c + 1) * bins * gh];
        for (value, g) in s.spectrum.iter_mut().zip(factor) {
            *value *= *g;
        }
        self.col_inverse.process_with_scratch(&mut s.spectrum, &mut s.fft_scratch);

        // Rows back: gather each row's bins, inverse real FFT along W.
        for (r, row) in s.grid.chunks_exact_mut(gw).enumerate() {
            for (v, value) in s.row_spectrum.iter_mut().enumerate() {
                *value = s.spectrum[v * gh + r];
            }
            // The spectrum of a real signal: DC (and Nyquist for even W) bins are real; drop
            // the rounding residue the inverse real FFT would otherwise reject.
            s.row_spectrum[0].im = 0.0;
            if gw % 2 == 0 {
                s.row_spectrum[bins - 1].im = 0.0;
            }
            self.row_inverse
                .process_with_scratch(&mut s.row_spectrum, row, &mut s.real_scratch)
                .expect("buffer sizes come from the plan; DC and Nyquist are real");
        }
        self.crop_grid(&s.grid, out, acc);
    }

    /// Copies `x` into the grid, reflecting `pad` pixels on every side.
    fn fill_grid(&self, x: &[f32], grid: &mut [f32]) {
        let (p, w, gw) = (self.pad, self.width, self.grid_w);
        for (gr, grid_row) in grid.chunks_exact_mut(gw).enumerate() {
            let src = &x[reflect(gr, p, self.height) * w..][..w];
            grid_row[p..p + w].copy_from_slice(src);
            for j in 0..p {
                grid_row[p - 1 - j] = src[j + 1];
                grid_row[p + w + j] = src[w - 2 - j];
            }
        }
    }

    fn crop_grid(&self, grid: &[f32], out: &mut [f32], accumulate: bool) {
        let (p, w) = (self.pad, self.width);
        for (r, out_row) in out.chunks_exact_mut(w).enumerate() {
            let src = &grid[(r + p) * self.grid_w + p..][..w];
            if accumulate {
                out_row.iter_mut().zip(src).for_each(|(o, v)| *o += v);
            } else {
                out_row.copy_from_slice(src);
            }
        }
    }

    pub fn boundary(&self) -> Boundary {
        self.boundary
    }
}

/// Row of the padded grid `gr` mapped to a row of the `n`-row plane (reflection, edge not
/// repeated).
fn reflect(gr: usize, pad: usize, n: usize) -> usize {
    let i = gr as isize - pad as isize;
    let n = n as isize;
    let r = if i < 0 {
        -i
    } else if i >= n {
        2 * (n - 1) - i
    } else {
        i
    };
    r as usize
}

/// Returns scratch to the plan's pool when a rayon job ends.
struct Lease<'a> {
    pool: &'a Mutex<Vec<Scratch>>,
    scratch: Option<Scratch>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let (Some(scratch), Ok(mut pool)) = (self.scratch.take(), self.pool.lock()) {
            pool.push(scratch);
        }
    }
}

/// `|B^(u, v)|^2` on the full `H x W` grid for one kernel, float64, row-major `[u][v]`.
pub fn kernel_symbol(kernel: &Kernel3, height: usize, width: usize) -> Vec<f64> {
    let tau = std::f64::consts::TAU;
    let mut symbol = Vec::with_capacity(height * width);
    for u in 0..height {
        for v in 0..width {
            let (mut re, mut im) = (0.0f64, 0.0f64);
            for i in 0..3 {
                for j in 0..3 {
                    let angle = tau
                        * ((u as f64) * (i as f64 - 1.0) / height as f64
                            + (v as f64) * (j as f64 - 1.0) / width as f64);
                    let k = kernel[i * 3 + j] as f64;
                    re += k * angle.cos();
                    im -= k * angle.sin();
                }
            }
            symbol.push(re * re + im * im);
        }
    }
    symbol
}

/// The factor table of one channel, transposed `[v][u]` over the one-sided bins.
fn factor_table(kernel: &Kernel3, h: f32, scale: f32, height: usize, width: usize) -> Vec<f32> {
    let bins = width / 2 + 1;
    let symbol = kernel_symbol(kernel, height, width);
    let norm = scale as f64 / (height * width) as f64;
    let mut table = Vec::with_capacity(bins * height);
    for v in 0..bins {
        for u in 0..height {
            table.push((norm / (1.0 + h as f64 * symbol[u * width + v])) as f32);
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tolerance::{Tier, assert_close};

    /// A tiny deterministic generator (xorshift), so tests need no extra crate.
    fn noise(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn kernels(c: usize, seed: u64) -> Vec<Kernel3> {
        let v = noise(seed, 9 * c);
        v.chunks_exact(9).map(|k| k.try_into().unwrap()).collect()
    }

    /// Dense `A = I + h B^T B` on the periodic `n x m` grid, B the correlation with `k`, float64.
    fn dense_system(k: &Kernel3, h: f64, n: usize, m: usize) -> Vec<f64> {
        let size = n * m;
        let mut b = vec![0.0f64; size * size];
        for r in 0..n {
            for c in 0..m {
                for i in 0..3 {
                    for j in 0..3 {
                        let row = (r as isize + i as isize - 1).rem_euclid(n as isize) as usize;
                        let col = (c as isize + j as isize - 1).rem_euclid(m as isize) as usize;
                        b[(r * m + c) * size + row * m + col] += k[i * 3 + j] as f64;
                    }
                }
            }
        }
        let mut a = vec![0.0f64; size * size];
        for i in 0..size {
            a[i * size + i] = 1.0;
        }
        for p in 0..size {
            for q in 0..size {
                let s: f64 = (0..size).map(|t| b[t * size + p] * b[t * size + q]).sum();
                a[p * size + q] += h * s;
            }
        }
        a
    }

    /// Gaussian elimination with partial pivoting, float64.
    fn dense_solve(mut a: Vec<f64>, mut x: Vec<f64>) -> Vec<f64> {
        let n = x.len();
        for col in 0..n {
            let piv = (col..n)
                .max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))
                .unwrap();
            for t in 0..n {
                a.swap(col * n + t, piv * n + t);
            }
            x.swap(col, piv);
            for row in col + 1..n {
                let f = a[row * n + col] / a[col * n + col];
                for t in col..n {
                    a[row * n + t] -= f * a[col * n + t];
                }
                x[row] -= f * x[col];
            }
        }
        for row in (0..n).rev() {
            let s: f64 = (row + 1..n).map(|t| a[row * n + t] * x[t]).sum();
            x[row] = (x[row] - s) / a[row * n + row];
        }
        x
    }

    fn reflect_pad(x: &[f32], n: usize, m: usize, p: usize) -> Vec<f32> {
        let (gn, gm) = (n + 2 * p, m + 2 * p);
        let mut out = vec![0.0; gn * gm];
        for r in 0..gn {
            for c in 0..gm {
                out[r * gm + c] = x[reflect(r, p, n) * m + reflect(c, p, m)];
            }
        }
        out
    }

    fn check_dense(n: usize, m: usize, h: f32, boundary: Boundary, pad: usize, seed: u64) {
        let ks = kernels(2, seed);
        let x = noise(seed + 1, 2 * n * m);
        let plan = SolvePlan::new(&ks, h, 1.0, n, m, boundary, pad).unwrap();
        let mut got = noise(seed + 2, x.len()); // dirty output buffer
        plan.solve_image(&x, &mut got, false);
        let p = if boundary == Boundary::Reflect { pad } else { 0 };
        let (gn, gm) = (n + 2 * p, m + 2 * p);
        let mut want = Vec::new();
        for c in 0..2 {
            let xc = reflect_pad(&x[c * n * m..(c + 1) * n * m], n, m, p);
            let a = dense_system(&ks[c], h as f64, gn, gm);
            let y = dense_solve(a, xc.iter().map(|&v| v as f64).collect());
            for r in 0..n {
                for col in 0..m {
                    want.push(y[(r + p) * gm + col + p] as f32);
                }
            }
        }
        let what = format!("{n}x{m} h={h} {boundary:?} pad={pad}");
        assert_close(&got, &want, Tier::F32Solve, &what);
    }

    #[test]
    fn periodic_matches_dense_solve() {
        let sizes = [
            (1, 1),
            (1, 2),
            (2, 2),
            (2, 3),
            (3, 3),
            (5, 7),
            (4, 6),
            (7, 5),
            (8, 8),
            (11, 13),
            (16, 16),
            (13, 16),
        ];
        for (i, &(n, m)) in sizes.iter().enumerate() {
            for h in [0.1, 1.0, 10.0] {
                check_dense(n, m, h, Boundary::Periodic, 0, i as u64 + 3);
            }
        }
    }

    #[test]
    fn reflect_matches_dense_solve_on_padded_grid() {
        let cases = [(2, 2, 1), (3, 5, 2), (5, 5, 4), (7, 6, 3), (9, 11, 2), (12, 12, 3)];
        for (i, &(n, m, p)) in cases.iter().enumerate() {
            for h in [0.1, 1.0, 10.0] {
                check_dense(n, m, h, Boundary::Reflect, p, i as u64 + 40);
            }
        }
    }

    #[test]
    fn constant_passes_a_zero_mean_kernel_unchanged() {
        let mut k = kernels(1, 5)[0];
        let mean: f32 = k.iter().sum::<f32>() / 9.0;
        k.iter_mut().for_each(|v| *v -= mean);
        let plan = SolvePlan::new(&[k], 3.0, 1.0, 6, 10, Boundary::Periodic, 0).unwrap();
        let x = vec![0.7f32; 60];
        let mut y = vec![f32::NAN; 60];
        plan.solve_image(&x, &mut y, false);
        assert_close(&y, &x, Tier::F32Solve, "constant input");
    }

    #[test]
    fn impulse_spreads_across_the_whole_plane() {
        let lap = [-1.0, -4.0, -1.0, -4.0, 20.0, -4.0, -1.0, -4.0, -1.0].map(|v: f32| v / 6.0);
        let plan = SolvePlan::new(&[lap], 1.0, 1.0, 32, 32, Boundary::Periodic, 0).unwrap();
        let mut x = vec![0.0f32; 32 * 32];
        x[16 * 32 + 16] = 1.0;
        let mut y = vec![0.0f32; 32 * 32];
        plan.solve_image(&x, &mut y, false);
        let total: f32 = y.iter().sum();
        assert!((total - 1.0).abs() < 1e-4, "mass preserved, got {total}");
        // A 3x3 convolution reaches 9 pixels; one implicit step (h = 1) reaches about half of
        // the 1024 above 1e-6.
        let reached = y.iter().filter(|v| v.abs() > 1e-6).count();
        assert!(reached > 400, "pixels reached by one implicit step: {reached} of 1024");
    }

    #[test]
    fn reuse_and_accumulate_are_consistent() {
        let ks = kernels(3, 9);
        let plan = SolvePlan::new(&ks, 1.0, 2.0, 9, 14, Boundary::Reflect, 3).unwrap();
        let x = noise(1, 3 * 9 * 14);
        let mut a = vec![0.0; x.len()];
        plan.solve_image(&x, &mut a, false);
        let mut b = x.clone();
        plan.solve_image(&x, &mut b, true); // b = x + 2 solve(x), using pooled dirty scratch
        let want: Vec<f32> = x.iter().zip(&a).map(|(x, a)| x + a).collect();
        assert_close(&b, &want, Tier::F32Tight, "accumulate");
    }

    #[test]
    fn bad_parameters_are_refused() {
        let k = kernels(1, 1);
        let err = SolvePlan::new(&k, 1.0, 1.0, 4, 4, Boundary::Reflect, 4).err();
        assert_eq!(err, Some(SolveError::PadTooLarge { pad: 4, height: 4, width: 4 }));
        assert!(SolvePlan::new(&k, f32::NAN, 1.0, 4, 4, Boundary::Periodic, 0).is_err());
        assert!(SolvePlan::new(&k, 1.0, 1.0, 0, 4, Boundary::Periodic, 0).is_err());
    }
}
