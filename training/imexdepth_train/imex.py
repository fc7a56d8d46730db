"""The implicit step of IMEXnet: ``Y = (I + h B^T B)^-1 X`` per channel, solved in Fourier space.

``B`` is a depthwise 3x3 cross-correlation with a trainable kernel ``[C, 1, 3, 3]``. With
periodic boundaries ``B^T B`` is diagonal in the 2-D DFT of the ``H x W`` grid; the factor at
frequency ``(u, v)`` is ``1 / (1 + h |B^(u, v)|^2)``, where ``B^`` is the DFT of the kernel placed
with its centre at index ``(0, 0)`` (entries that wrap onto the same index add up, which matters
for grids smaller than 3). ``|B^|^2`` does not depend on the DFT's sign convention, so the
solve is the same for correlation and convolution.

Tensors are NCHW float. ``torch.fft.rfft2`` / ``irfft2`` with the default ("backward")
normalisation: the forward transform is unscaled and the inverse applies ``1 / (H W)``. Autograd
through these is exact, so gradients with respect to the input and the kernel are exact too.
Cost per channel ``O(H W log(H W))``.

Boundary modes:

- ``"periodic"``: the solve on the ``H x W`` torus.
- ``"reflect"``: pad by ``pad`` pixels on every side by reflection (edge pixel not repeated,
  ``torch.nn.functional.pad(mode="reflect")`` = ONNX ``Pad`` mode ``reflect``), solve
  periodically on the ``(H + 2 pad) x (W + 2 pad)`` grid, crop the centre. Needs ``pad < H`` and
  ``pad < W``.

The IMEX step (see ``models/README.md``) is ``y + h * solve(f)``, which equals the paper's
``(I + hL)^-1 (y + hLy + h f)`` exactly.

Kernel initialisation: every channel starts from the paper's discrete Laplacian, eq. (7),
``(1/6) [[-1, -4, -1], [-4, 20, -4], [-1, -4, -1]]`` times ``kernel_scale``. Like the authors'
reference code, the kernel is projected to zero mean (per channel) in every forward pass, so
``B`` annihilates constants and the mean of each channel passes the solve unchanged.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Boundary = Literal["periodic", "reflect"]
BOUNDARIES: tuple[str, ...] = ("periodic", "reflect")

#: The paper's discrete Laplace operator, eq. (7).
PAPER_LAPLACIAN = np.array([[-1.0, -4.0, -1.0], [-4.0, 20.0, -4.0], [-1.0, -4.0, -1.0]]) / 6.0


def _phase_tables(n: int, n_freq: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[2, n_freq, 3]`` cosine and sine of ``2 pi k (i - 1) / n`` for taps ``i = 0, 1, 2``."""
    k = torch.arange(n_freq, dtype=torch.float64)
    offsets = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    angle = 2.0 * math.pi * k[:, None] * offsets[None, :] / n
    return torch.stack([torch.cos(angle), torch.sin(angle)]).to(dtype=dtype, device=device)


def kernel_symbol(kernel: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``|B^(u, v)|^2`` on the one-sided grid, ``[C, H, W // 2 + 1]``.

    Args:
        kernel: ``[C, 1, 3, 3]`` correlation kernel.
        height: grid height ``H``.
        width: grid width ``W``.

    Returns:
        The squared magnitude of the kernel's DFT, differentiable in ``kernel``.
    """
    if kernel.dim() != 4 or kernel.shape[1:] != (1, 3, 3):
        raise ValueError(f"kernel must be [C, 1, 3, 3], got {list(kernel.shape)}")
    k = kernel[:, 0]
    ch, sh = _phase_tables(height, height, k.dtype, k.device)
    cw, sw = _phase_tables(width, width // 2 + 1, k.dtype, k.device)
    # cos(a + b) = ca cb - sa sb, sin(a + b) = sa cb + ca sb, summed over the 3x3 taps.
    real = torch.einsum("cij,ui,vj->cuv", k, ch, cw) - torch.einsum("cij,ui,vj->cuv", k, sh, sw)
    imag = torch.einsum("cij,ui,vj->cuv", k, sh, cw) + torch.einsum("cij,ui,vj->cuv", k, ch, sw)
    return real * real + imag * imag


def solve_factor(kernel: torch.Tensor, h: float, height: int, width: int) -> torch.Tensor:
    """Per-frequency factor ``1 / (1 + h |B^|^2)``, ``[C, H, W // 2 + 1]``."""
    return 1.0 / (1.0 + h * kernel_symbol(kernel, height, width))


def solve_periodic(x: torch.Tensor, kernel: torch.Tensor, h: float) -> torch.Tensor:
    """``(I + h B^T B)^-1 x`` per channel with periodic boundaries; ``x`` is ``[N, C, H, W]``."""
    height, width = x.shape[-2:]
    factor = solve_factor(kernel, h, height, width)
    spectrum = torch.fft.rfft2(x)
    return torch.fft.irfft2(spectrum * factor, s=(height, width))


def solve(x: torch.Tensor, kernel: torch.Tensor, h: float, boundary: Boundary, pad: int = 0):
    """``(I + h B^T B)^-1 x`` per channel in the given boundary mode.

    Args:
        x: ``[N, C, H, W]`` right-hand side.
        kernel: ``[C, 1, 3, 3]`` kernel of ``B`` (used as given; no projection here).
        h: step size, ``h >= 0``.
        boundary: ``"periodic"`` or ``"reflect"``.
        pad: reflection padding on every side (reflect mode only), ``0 <= pad < min(H, W)``.

    Returns:
        The solution, same shape as ``x``.
    """
    if boundary == "periodic":
        return solve_periodic(x, kernel, h)
    if boundary != "reflect":
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    height, width = x.shape[-2:]
    if not 0 <= pad < min(height, width):
        raise ValueError(f"reflect pad must satisfy 0 <= pad < min(H, W) = {min(height, width)}, "
                         f"got {pad}")
    if pad == 0:
        return solve_periodic(x, kernel, h)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    return solve_periodic(padded, kernel, h)[..., pad:pad + height, pad:pad + width]


def laplacian_kernel(channels: int, scale: float = 1.0) -> torch.Tensor:
    """The paper's eq. (7) stencil for every channel, ``[C, 1, 3, 3]``, times ``scale``."""
    stencil = torch.tensor(PAPER_LAPLACIAN * scale, dtype=torch.float32)
    return stencil.expand(channels, 1, 3, 3).clone()


class ImplicitSolve(nn.Module):
    """``x -> (I + h B^T B)^-1 x`` with a trainable, zero-mean-projected kernel ``B``.

    Args:
        channels: number of channels ``C``.
        h: step size.
        boundary: ``"periodic"`` or ``"reflect"``.
        pad: reflection padding (reflect mode).
        kernel_scale: the initial kernel is ``kernel_scale`` times the paper's eq. (7).
    """

    def __init__(self, channels: int, h: float = 1.0, boundary: Boundary = "reflect",
                 pad: int = 8, kernel_scale: float = 1.0):
        super().__init__()
        if boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
        self.h = float(h)
        self.boundary = boundary
        self.pad = int(pad) if boundary == "reflect" else 0
        self.kernel = nn.Parameter(laplacian_kernel(channels, kernel_scale))

    def effective_kernel(self) -> torch.Tensor:
        """The kernel the solve uses: the parameter projected to zero mean per channel."""
        return self.kernel - self.kernel.mean(dim=(-2, -1), keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return solve(x, self.effective_kernel(), self.h, self.boundary, self.pad)


class ImexStep(nn.Module):
    """``(y, f) -> y + h (I + h B^T B)^-1 f``, the IMEX step in the one-solve form."""

    def __init__(self, channels: int, h: float = 1.0, boundary: Boundary = "reflect",
                 pad: int = 8, kernel_scale: float = 1.0):
        super().__init__()
        self.solve = ImplicitSolve(channels, h, boundary, pad, kernel_scale)

    @property
    def h(self) -> float:
        return self.solve.h

    def forward(self, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return y + self.solve.h * self.solve(f)
