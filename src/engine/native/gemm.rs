//! The one matrix product of the native engine, through the `gemm` crate (row-major slices).
#![allow(unsafe_code)]

/// `out[m, n] += lhs[m, k] x rhs[k, n]`, all row-major and contiguous, on rayon's threads.
///
/// # Panics
/// If a slice is shorter than its shape says (an internal contract of the engine).
pub fn matmul_acc(out: &mut [f32], lhs: &[f32], rhs: &[f32], m: usize, k: usize, n: usize) {
    matmul_acc_strided(out, n, lhs, rhs, m, k, n);
}

/// As [`matmul_acc`], with `out`'s rows `out_stride` apart (a column block of a wider matrix).
///
/// # Panics
/// If a slice is shorter than its shape says or `out_stride < n`.
pub fn matmul_acc_strided(
    out: &mut [f32],
    out_stride: usize,
    lhs: &[f32],
    rhs: &[f32],
    m: usize,
    k: usize,
    n: usize,
) {
    assert!(out_stride >= n, "gemm out stride {out_stride} < {n} columns");
    let out_len = if m == 0 { 0 } else { (m - 1) * out_stride + n };
    assert!(
        out.len() >= out_len,
        "gemm out: need {}x{} (stride {}), got {} values",
        m,
        n,
        out_stride,
        out.len()
    );
    assert!(lhs.len() >= m * k, "gemm lhs: need {}x{}, got {} values", m, k, lhs.len());
    assert!(rhs.len() >= k * n, "gemm rhs: need {}x{}, got {} values", k, n, rhs.len());
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    let parallelism =
        if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the asserts above keep every element the strides address (row stride = columns,
    // column stride 1) inside its slice; `out` is borrowed mutably and so aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            out_stride as isize,
            true,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}
