"""The implicit solve against a dense direct solve (numpy float64), and its exact gradients."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from imexdepth_train import imex

torch.set_num_threads(1)

SIZES = (1, 2, 3, 5, 7, 8, 16)
STEPS = (0.1, 1.0, 10.0)


def correlation_matrix(kernel: np.ndarray, height: int, width: int) -> np.ndarray:
    """Dense periodic 3x3 cross-correlation: ``(B y)[p, q] = sum k[i, j] y[p+i-1, q+j-1]``."""
    n = height * width
    b = np.zeros((n, n))
    for p, q, i, j in itertools.product(range(height), range(width), range(3), range(3)):
        src = ((p + i - 1) % height) * width + (q + j - 1) % width
        b[p * width + q, src] += kernel[i, j]
    return b


def reflect_index(i: int, n: int) -> int:
    """Index into an axis of length ``n`` under reflection without repeating the edge."""
    period = 2 * (n - 1)
    i = abs(i) % period if period else 0
    return period - i if i >= n else i


def dense_solve(x: np.ndarray, kernel: np.ndarray, h: float, boundary: str, pad: int) -> np.ndarray:
    """``(I + h B^T B)^-1 x`` for one ``[H, W]`` plane, built explicitly in float64."""
    height, width = x.shape
    if boundary == "periodic":
        pad = 0
    hp, wp = height + 2 * pad, width + 2 * pad
    padding = np.zeros((hp * wp, height * width))
    for p, q in itertools.product(range(hp), range(wp)):
        src = reflect_index(p - pad, height) * width + reflect_index(q - pad, width)
        padding[p * wp + q, src] = 1.0
    b = correlation_matrix(kernel, hp, wp)
    system = np.eye(hp * wp) + h * b.T @ b
    y = np.linalg.solve(system, padding @ x.reshape(-1)).reshape(hp, wp)
    return y[pad:pad + height, pad:pad + width]


def test_reflect_index_matches_numpy():
    row = np.arange(5)
    padded = np.pad(row, 4, mode="reflect")
    assert [row[reflect_index(i - 4, 5)] for i in range(13)] == padded.tolist()


@pytest.mark.parametrize("boundary", imex.BOUNDARIES)
@pytest.mark.parametrize("height,width", [(s, t) for s in SIZES for t in SIZES if s <= 8 or s == t])
def test_solve_matches_dense(boundary: str, height: int, width: int):
    rng = np.random.default_rng(1000 * height + width)
    channels = 2
    kernel = rng.normal(size=(channels, 1, 3, 3))
    x = rng.normal(size=(1, channels, height, width))
    pad = min(3, height - 1, width - 1)
    for h in STEPS:
        got = imex.solve(torch.from_numpy(x), torch.from_numpy(kernel), h, boundary, pad).numpy()
        for c in range(channels):
            want = dense_solve(x[0, c], kernel[c, 0], h, boundary, pad)
            np.testing.assert_allclose(got[0, c], want, rtol=0,
                                       atol=1e-10 * max(1.0, abs(want).max()),
                                       err_msg=f"{boundary} {height}x{width} h={h} c={c}")


def test_impulse_and_constant_inputs():
    kernel = imex.laplacian_kernel(1).double()
    impulse = torch.zeros(1, 1, 7, 9, dtype=torch.float64)
    impulse[0, 0, 3, 4] = 1.0
    response = imex.solve(impulse, kernel, 1.0, "periodic")
    want = dense_solve(impulse[0, 0].numpy(), kernel[0, 0].numpy(), 1.0, "periodic", 0)
    np.testing.assert_allclose(response[0, 0].numpy(), want, atol=1e-12)
    # A zero-mean kernel annihilates constants: the solve passes them through unchanged.
    constant = torch.full((1, 1, 6, 5), 2.5, dtype=torch.float64)
    for boundary in imex.BOUNDARIES:
        out = imex.solve(constant, kernel, 10.0, boundary, 2)
        np.testing.assert_allclose(out.numpy(), constant.numpy(), atol=1e-12)


def test_solve_is_a_contraction():
    """``(I + hL)^-1`` has eigenvalues in (0, 1]: the solve never amplifies its input."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 16, 12, generator=gen, dtype=torch.float64)
    kernel = torch.randn(4, 1, 3, 3, generator=gen, dtype=torch.float64)
    y = imex.solve(x, kernel, 10.0, "periodic")
    assert y.norm() <= x.norm()


@pytest.mark.parametrize("boundary", imex.BOUNDARIES)
def test_gradcheck_input_and_kernel(boundary: str):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(1, 2, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    kernel = torch.randn(2, 1, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, k: imex.solve(a, k, 0.7, boundary, 2), (x, kernel))


def test_gradcheck_step_module_through_projection():
    step = imex.ImexStep(2, h=1.5, boundary="reflect", pad=2).double()
    with torch.no_grad():
        step.solve.kernel.add_(0.1 * torch.randn_like(step.solve.kernel))
    gen = torch.Generator().manual_seed(8)
    y = torch.randn(1, 2, 6, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    f = torch.randn(1, 2, 6, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(step, (y, f))
    kernel = step.solve.kernel
    assert torch.autograd.gradcheck(
        lambda k: y.detach() + 1.5 * imex.solve(f.detach(), k - k.mean((-2, -1), keepdim=True),
                                                1.5, "reflect", 2), (kernel,))


def test_step_equals_paper_form():
    """``y + h S f`` equals the paper's ``(I + hL)^-1 (y + hLy + hf)`` (eq. 6)."""
    rng = np.random.default_rng(5)
    y, f = rng.normal(size=(2, 5, 7))
    kernel = rng.normal(size=(3, 3))
    kernel -= kernel.mean()
    b = correlation_matrix(kernel, 5, 7)
    lap = b.T @ b
    h = 2.0
    y_flat, f_flat = y.reshape(-1), f.reshape(-1)
    paper = np.linalg.solve(np.eye(35) + h * lap, y_flat + h * lap @ y_flat + h * f_flat)
    step = imex.ImexStep(1, h=h, boundary="periodic").double()
    with torch.no_grad():
        step.solve.kernel.copy_(torch.from_numpy(kernel)[None, None])
    got = step(torch.from_numpy(y)[None, None], torch.from_numpy(f)[None, None])
    np.testing.assert_allclose(got.detach().numpy().reshape(-1), paper, atol=1e-10)


def test_effective_kernel_is_zero_mean_and_starts_as_paper_laplacian():
    solver = imex.ImplicitSolve(3, kernel_scale=0.5)
    np.testing.assert_allclose(solver.kernel[1, 0].detach().numpy(), 0.5 * imex.PAPER_LAPLACIAN,
                               atol=1e-7)
    with torch.no_grad():
        solver.kernel.add_(1.0)
    assert solver.effective_kernel().sum(dim=(-2, -1)).abs().max() < 1e-5


def test_bad_arguments_are_refused():
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="pad"):
        imex.solve(x, torch.zeros(1, 1, 3, 3), 1.0, "reflect", 4)
    with pytest.raises(ValueError, match="boundary"):
        imex.solve(x, torch.zeros(1, 1, 3, 3), 1.0, "zero", 1)
    with pytest.raises(ValueError, match=r"\[C, 1, 3, 3\]"):
        imex.solve(x, torch.zeros(1, 3, 3), 1.0, "periodic")
