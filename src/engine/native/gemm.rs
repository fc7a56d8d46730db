//! The one matrix product of the native engine, through the `gemm` crate (row-major slices).
#![allow(unsafe_code)]

/// `out[m, n] += lhs[m, k] x rhs[k, n]`, all row-major and contiguous, on rayon's threads.
///
/// # Panics
/// If a slice is shorter than its shape says (an internal contract of the engine).
pub fn matmul_acc(out: &mut [f32], lhs: &[f32], rhs: &[f32], m: usize, k: usize, n: usize) {
    assert!(out.len() >= m * n, "gemm out: need {}x{}, got {} values", m, n, out.len());
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
            n as isize,
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
