//! Elementwise and reshaping ops of the model format (`models/README.md`), NCHW float32.

use crate::model::UpsampleMode;
use crate::tensor::Tensor;

/// `(x - mean_c) / std_c`.
pub fn normalize(x: Tensor, mean: &[f32], std: &[f32]) -> Tensor {
    per_channel(x, |c, v| (v - mean[c]) / std[c])
}

/// `x * scale_c + bias_c`.
pub fn affine(x: Tensor, scale: &[f32], bias: &[f32]) -> Tensor {
    per_channel(x, |c, v| v * scale[c] + bias[c])
}

fn per_channel(mut x: Tensor, f: impl Fn(usize, f32) -> f32) -> Tensor {
    let (plane, channels) = (x.h() * x.w(), x.c());
    for (i, chunk) in x.data.chunks_exact_mut(plane).enumerate() {
        chunk.iter_mut().for_each(|v| *v = f(i % channels, *v));
    }
    x
}

/// An elementwise map, in place.
pub fn map(mut x: Tensor, f: impl Fn(f32) -> f32) -> Tensor {
    x.data.iter_mut().for_each(|v| *v = f(*v));
    x
}

/// `a + k b`, same shapes (checked at load), in place in `a`.
pub fn add_scaled(mut a: Tensor, b: &Tensor, k: f32) -> Tensor {
    a.data.iter_mut().zip(&b.data).for_each(|(a, b)| *a += k * b);
    a
}

/// PyTorch's softplus (threshold 20: `x` itself above it).
pub fn softplus(v: f32) -> f32 {
    if v > 20.0 { v } else { v.max(0.0) + (-v.abs()).exp().ln_1p() }
}

pub fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// `x + t`, `t` of shape `[1, C or 1, H or 1, W or 1]` broadcast.
pub fn add_broadcast(x: Tensor, t: &[f32], tshape: [usize; 4]) -> Tensor {
    let [n, c, h, w] = x.shape;
    let idx = |dim: usize, i: usize| if tshape[dim] == 1 { 0 } else { i };
    let mut out = x;
    for ni in 0..n {
        for ci in 0..c {
            for hi in 0..h {
                let row = ((ni * c + ci) * h + hi) * w;
                let trow = (idx(1, ci) * tshape[2] + idx(2, hi)) * tshape[3];
                for wi in 0..w {
                    out.data[row + wi] += t[trow + idx(3, wi)];
                }
            }
        }
    }
    out
}

/// Concatenation along channels.
pub fn concat(parts: &[&Tensor]) -> Tensor {
    let [n, _, h, w] = parts[0].shape;
    let c: usize = parts.iter().map(|t| t.c()).sum();
    let mut data = Vec::with_capacity(n * c * h * w);
    for ni in 0..n {
        for t in parts {
            let len = t.c() * h * w;
            data.extend_from_slice(&t.data[ni * len..(ni + 1) * len]);
        }
    }
    Tensor { shape: [n, c, h, w], data }
}

/// `[N, 2, H, W]`: row then column, `(i + 0.5) / H * 2 - 1`.
pub fn coords(x: &Tensor) -> Tensor {
    let [n, _, h, w] = x.shape;
    let mut data = Vec::with_capacity(n * 2 * h * w);
    for _ in 0..n {
        for r in 0..h {
            data.extend(std::iter::repeat_n((r as f32 + 0.5) / h as f32 * 2.0 - 1.0, w));
        }
        for _ in 0..h {
            data.extend((0..w).map(|c| (c as f32 + 0.5) / w as f32 * 2.0 - 1.0));
        }
    }
    Tensor { shape: [n, 2, h, w], data }
}

/// Integer upsampling: nearest (`floor(i / s)`) or bilinear with half-pixel centres
/// (PyTorch `align_corners=False`, ONNX `Resize` `half_pixel`).
pub fn upsample(x: &Tensor, scale: usize, mode: UpsampleMode) -> Tensor {
    let [n, c, h, w] = x.shape;
    let (ho, wo) = (h * scale, w * scale);
    let rows = taps(h, ho, scale, mode);
    let cols = taps(w, wo, scale, mode);
    let mut data = vec![0.0; n * c * ho * wo];
    for (src, dst) in x.data.chunks_exact(h * w).zip(data.chunks_exact_mut(ho * wo)) {
        for (r, &(r0, r1, fr)) in rows.iter().enumerate() {
            let (a, b) = (&src[r0 * w..][..w], &src[r1 * w..][..w]);
            for (q, &(c0, c1, fc)) in cols.iter().enumerate() {
                let top = a[c0] + (a[c1] - a[c0]) * fc;
                let bottom = b[c0] + (b[c1] - b[c0]) * fc;
                dst[r * wo + q] = top + (bottom - top) * fr;
            }
        }
    }
    Tensor { shape: [n, c, ho, wo], data }
}

/// For each output index: the two source indices and the weight of the second.
fn taps(n: usize, out: usize, scale: usize, mode: UpsampleMode) -> Vec<(usize, usize, f32)> {
    (0..out)
        .map(|i| match mode {
            UpsampleMode::Nearest => (i / scale, i / scale, 0.0),
            UpsampleMode::Bilinear => {
                let src = ((i as f32 + 0.5) / scale as f32 - 0.5).max(0.0);
                let i0 = (src.floor() as usize).min(n - 1);
                let i1 = (i0 + 1).min(n - 1);
                (i0, i1, src - i0 as f32)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_matches_half_pixel_rule() {
        let x = Tensor::from_vec([1, 1, 1, 3], vec![0.0, 4.0, 8.0]);
        let y = upsample(&x, 2, UpsampleMode::Bilinear);
        assert_eq!(y.shape, [1, 1, 2, 6]);
        assert_eq!(&y.data[..6], &[0.0, 1.0, 3.0, 5.0, 7.0, 8.0]);
        assert_eq!(&y.data[6..], &y.data[..6]);
        let y = upsample(&x, 2, UpsampleMode::Nearest);
        assert_eq!(&y.data[6..], &[0.0, 0.0, 4.0, 4.0, 8.0, 8.0]);
    }

    #[test]
    fn coords_span_minus_one_to_one() {
        let c = coords(&Tensor::zeros([1, 3, 2, 4]));
        assert_eq!(&c.data[..4], &[-0.5; 4]);
        assert_eq!(&c.data[8..12], &[-0.75, -0.25, 0.25, 0.75]);
    }
}
