//! 2-D convolution (ONNX `Conv`: cross-correlation, zero padding, stride, groups), NCHW float32.
//!
//! Dense and grouped convolutions lower to one matrix product per group through `im2col`
//! (`[Cin/g * kh * kw, Ho * Wo]`, skipped for 1x1 stride-1 kernels) and the `gemm` crate's
//! multithreaded kernel: `out[Cout/g, Ho*Wo] = W[Cout/g, K] x col[K, Ho*Wo] + bias`. Depthwise
//! convolutions (one input channel per group) run as direct loops, channels in parallel.
//! Cost: `Cout * Ho * Wo * Cin/g * kh * kw` multiply-adds; scratch: one `im2col` matrix, reused.

use rayon::prelude::*;

/// A convolution's parameters, checked against its input shape at model load.
#[derive(Clone, Debug)]
pub struct Conv2d {
    /// `[Cout, Cin / groups, kh, kw]` row-major.
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub cout: usize,
    pub cin: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
}

impl Conv2d {
    /// Output size for an `h x w` input.
    pub fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        let out = |n: usize, k: usize| (n + 2 * self.padding).saturating_sub(k) / self.stride + 1;
        (out(h, self.kh), out(w, self.kw))
    }

    /// Multiply-adds for an `h x w` input.
    pub fn macs(&self, h: usize, w: usize) -> u64 {
        let (ho, wo) = self.output_size(h, w);
        (self.cout * ho * wo * (self.cin / self.groups) * self.kh * self.kw) as u64
    }

    /// Runs on one image `[Cin, H, W]`, writing `[Cout, Ho, Wo]` into `out`. `col` is scratch.
    ///
    /// # Panics
    /// If the slice lengths do not match the shapes (checked at model load).
    pub fn run(&self, x: &[f32], h: usize, w: usize, out: &mut [f32], col: &mut Vec<f32>) {
        let (ho, wo) = self.output_size(h, w);
        assert_eq!(x.len(), self.cin * h * w, "conv input length (Cin*H*W)");
        assert_eq!(out.len(), self.cout * ho * wo, "conv output length (Cout*Ho*Wo)");
        if self.groups == self.cin && self.cin == self.cout && self.groups > 1 {
            self.depthwise(x, h, w, out);
            return;
        }
        let (cin_g, cout_g) = (self.cin / self.groups, self.cout / self.groups);
        let k = cin_g * self.kh * self.kw;
        let direct = self.kh == 1 && self.kw == 1 && self.stride == 1 && self.padding == 0;
        for g in 0..self.groups {
            let xg = &x[g * cin_g * h * w..(g + 1) * cin_g * h * w];
            let outg = &mut out[g * cout_g * ho * wo..(g + 1) * cout_g * ho * wo];
            self.fill_bias(outg, g * cout_g, ho * wo);
            let lhs = &self.weight[g * cout_g * k..(g + 1) * cout_g * k];
            if direct {
                super::gemm::matmul_acc(outg, lhs, xg, cout_g, k, ho * wo);
                continue;
            }
            // Blocks of whole output rows, so that each unfolded block stays in cache.
            let rows = (IM2COL_BLOCK / (k * wo)).clamp(1, ho);
            for r0 in (0..ho).step_by(rows) {
                let r1 = (r0 + rows).min(ho);
                let cols = (r1 - r0) * wo;
                col.resize(k * cols, 0.0);
                im2col(xg, h, w, self, (r0, r1), wo, col);
                let block = &mut outg[r0 * wo..];
                super::gemm::matmul_acc_strided(block, ho * wo, lhs, col, cout_g, k, cols);
            }
        }
    }

    fn fill_bias(&self, out: &mut [f32], first: usize, plane: usize) {
        for (c, o) in out.chunks_exact_mut(plane).enumerate() {
            o.fill(self.bias.as_ref().map_or(0.0, |b| b[first + c]));
        }
    }

    /// One 2-D correlation per channel.
    fn depthwise(&self, x: &[f32], h: usize, w: usize, out: &mut [f32]) {
        let (ho, wo) = self.output_size(h, w);
        let (kh, kw, s, p) = (self.kh, self.kw, self.stride, self.padding as isize);
        out.par_chunks_mut(ho * wo).enumerate().for_each(|(c, oc)| {
            let xc = &x[c * h * w..(c + 1) * h * w];
            let wc = &self.weight[c * kh * kw..(c + 1) * kh * kw];
            let b = self.bias.as_ref().map_or(0.0, |b| b[c]);
            for (r, orow) in oc.chunks_exact_mut(wo).enumerate() {
                for (col, o) in orow.iter_mut().enumerate() {
                    let mut acc = b;
                    for i in 0..kh {
                        let y = (r * s + i) as isize - p;
                        if y < 0 || y >= h as isize {
                            continue;
                        }
                        let xrow = &xc[y as usize * w..][..w];
                        for j in 0..kw {
                            let xx = (col * s + j) as isize - p;
                            if xx >= 0 && xx < w as isize {
                                acc += wc[i * kw + j] * xrow[xx as usize];
                            }
                        }
                    }
                    *o = acc;
                }
            }
        });
    }
}

/// Floats of one unfolded block (`K x rows * Wo`): 256 KiB, to stay in a core's L2 cache.
const IM2COL_BLOCK: usize = 64 * 1024;

/// Unfolds output rows `r0..r1` of `x` (`[C, H, W]`) into `col` (`[C * kh * kw, (r1 - r0) *
/// Wo]`), zeros where padded.
fn im2col(
    x: &[f32],
    h: usize,
    w: usize,
    conv: &Conv2d,
    (r0, r1): (usize, usize),
    wo: usize,
    col: &mut [f32],
) {
    let (kh, kw, s, p) = (conv.kh, conv.kw, conv.stride, conv.padding as isize);
    col.par_chunks_mut((r1 - r0) * wo).enumerate().for_each(|(row, dst)| {
        let (ch, i, j) = (row / (kh * kw), (row / kw) % kh, row % kw);
        let xc = &x[ch * h * w..(ch + 1) * h * w];
        // Output columns q whose input column q*s + j - p lies inside the row.
        let q_lo = ((p - j as isize).max(0) as usize).div_ceil(s).min(wo);
        let q_hi = ((w as isize + p - j as isize).max(0) as usize).div_ceil(s).clamp(q_lo, wo);
        for (r, drow) in (r0..r1).zip(dst.chunks_exact_mut(wo)) {
            let y = (r * s + i) as isize - p;
            if y < 0 || y >= h as isize {
                drow.fill(0.0);
                continue;
            }
            let xrow = &xc[y as usize * w..][..w];
            drow[..q_lo].fill(0.0);
            drow[q_hi..].fill(0.0);
            let first = q_lo * s + j - p as usize;
            if s == 1 {
                drow[q_lo..q_hi].copy_from_slice(&xrow[first..first + (q_hi - q_lo)]);
            } else {
                for (d, x) in drow[q_lo..q_hi].iter_mut().zip(xrow[first..].iter().step_by(s)) {
                    *d = *x;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tolerance::{Tier, assert_close};

    fn naive(conv: &Conv2d, x: &[f32], h: usize, w: usize) -> Vec<f32> {
        let (ho, wo) = conv.output_size(h, w);
        let (cin_g, cout_g) = (conv.cin / conv.groups, conv.cout / conv.groups);
        let mut out = vec![0.0f32; conv.cout * ho * wo];
        for o in 0..conv.cout {
            let g = o / cout_g;
            for r in 0..ho {
                for c in 0..wo {
                    let mut acc = conv.bias.as_ref().map_or(0.0, |b| b[o]) as f64;
                    for ci in 0..cin_g {
                        for i in 0..conv.kh {
                            for j in 0..conv.kw {
                                let y = (r * conv.stride + i) as isize - conv.padding as isize;
                                let xx = (c * conv.stride + j) as isize - conv.padding as isize;
                                if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                                    continue;
                                }
                                let xi = ((g * cin_g + ci) * h + y as usize) * w + xx as usize;
                                let wi = ((o * cin_g + ci) * conv.kh + i) * conv.kw + j;
                                acc += (conv.weight[wi] * x[xi]) as f64;
                            }
                        }
                    }
                    out[(o * ho + r) * wo + c] = acc as f32;
                }
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn matches_naive_for_every_kind() {
        // (cin, cout, k, stride, padding, groups, h, w)
        let cases = [
            (3, 8, 3, 1, 1, 1, 7, 9),
            (4, 6, 3, 2, 1, 1, 8, 11),
            (5, 5, 1, 1, 0, 1, 4, 4),
            (6, 6, 3, 1, 1, 6, 5, 7),
            (6, 6, 3, 2, 1, 6, 9, 6),
            (4, 8, 3, 1, 1, 2, 5, 5),
            (2, 3, 1, 2, 0, 1, 5, 5),
            (1, 1, 3, 1, 1, 1, 1, 1),
        ];
        for (n, &(cin, cout, k, stride, padding, groups, h, w)) in cases.iter().enumerate() {
            let conv = Conv2d {
                weight: values(cout * cin / groups * k * k, n as u32),
                bias: (n % 2 == 0).then(|| values(cout, 7)),
                cout,
                cin,
                kh: k,
                kw: k,
                stride,
                padding,
                groups,
            };
            let x = values(cin * h * w, 99 + n as u32);
            let (ho, wo) = conv.output_size(h, w);
            let mut out = vec![f32::NAN; cout * ho * wo];
            let mut col = vec![f32::NAN; 3];
            conv.run(&x, h, w, &mut out, &mut col);
            assert_close(&out, &naive(&conv, &x, h, w), Tier::F32Solve, &format!("case {n}"));
        }
    }
}
