"""Depth networks (IMEXnet and its ResNet twin) and their architecture descriptions.

``build_model(arch, **options)`` makes a ``torch.nn.Module``; every model has ``describe()``,
which returns the architecture description of ``models/README.md`` (a dict) and every
initializer it names (float32 numpy arrays), with batch normalisation folded in inference mode
(running statistics). The ONNX exporter and the native Rust engine both work from that pair.

Depth networks take ``[N, 3, H, W]`` RGB in ``[0, 1]`` and return planar depth in metres,
``[N, 1, H, W]``, at the input resolution. Layout (strides relative to the input)::

    normalize (ImageNet) [-> concat coords]
    stem1   conv3x3/2 -> BN -> ReLU                               1/2, c1
    stem2   conv3x3/2 -> BN -> ReLU                               1/4, c2
    stage1  blocks1 x  y <- step(y, f(y))                         1/4, c2
    down    conv3x3/2 -> BN -> ReLU                               1/8, c3
    stage2  blocks2 x  y <- step(y, f(y))                         1/8, c3
    up1     bilinear x2, concat stage1, conv3x3 -> BN -> ReLU      1/4, c2
    reduce  conv1x1 -> BN -> ReLU                                 1/4, c_dec
    up2     bilinear x2, concat stem1, conv3x3 -> BN -> ReLU       1/2, c_dec
    head    conv3x3 -> 1 channel (log-depth residual), bilinear x2   1/1
    [+ learned per-row log-depth prior [1, 1, H, 1]]
    soft clamp of log-depth to [ln d_min, ln d_max], exp

with ``f(y) = BN(conv3x3(ReLU(BN(conv3x3(y)))))``. The IMEX step is
``y + h (I + h B^T B)^-1 f(y)`` (``imex.ImexStep``); the ResNet twin uses ``y + h f(y)``, which
is the same network without the two solves' kernels.

The soft clamp maps a log-depth ``z`` to ``lo + (hi - lo) sigmoid(s (z - mid))`` with
``lo = ln d_min``, ``hi = ln d_max``, ``mid = (lo + hi) / 2`` and ``s = 4 / (hi - lo)``, so its
slope is 1 at the geometric middle of the range and the depth can never leave
``(d_min, d_max)``. It is written with the ops ``linear``, ``sigmoid``, ``linear``, ``exp``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imexdepth_train.imex import BOUNDARIES, ImexStep

#: ImageNet channel statistics (torchvision's normalisation of RGB in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEPTH_ARCHS = ("imexnet-depth", "resnet-depth")


class Describer:
    """Collects architecture nodes and float32 initializers while a model describes itself."""

    def __init__(self, name: str, input_name: str = "image"):
        self.name = name
        self.input = input_name
        self.nodes: list[dict[str, Any]] = []
        self.weights: dict[str, np.ndarray] = {}
        self._count = 0

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        """Appends a node and returns the name of its (fresh) output tensor."""
        self._count += 1
        output = f"t{self._count}_{op}"
        self.nodes.append({"op": op, "inputs": list(inputs), "output": output, **attrs})
        return output

    def weight(self, name: str, value: torch.Tensor | np.ndarray) -> str:
        """Registers an initializer under ``name`` (refusing duplicates) and returns the name."""
        if name in self.weights:
            raise ValueError(f"initializer {name!r} registered twice")
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().double().numpy()
        self.weights[name] = np.ascontiguousarray(value, dtype=np.float32)
        return name

    def finish(self, output: str, output_name: str = "depth") -> tuple[dict, dict]:
        """Renames the last tensor to ``output_name`` and returns ``(arch, weights)``."""
        last = self.nodes[-1]
        if last["output"] != output:
            raise ValueError(f"output {output!r} is not the last node's output")
        last["output"] = output_name
        arch = {"name": self.name, "input": self.input, "output": output_name, "nodes": self.nodes}
        return arch, self.weights


def _qualname(module: nn.Module) -> str:
    name = getattr(module, "qualname", None)
    if name is None:
        raise RuntimeError(f"{type(module).__name__} has no qualname; build it via build_model")
    return name


def name_modules(model: nn.Module) -> None:
    """Stores every submodule's dotted path as ``qualname`` (initializer names derive from it)."""
    for path, module in model.named_modules():
        module.qualname = path or "model"


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Conv weight and bias with an inference-mode BatchNorm folded in (float64)."""
    weight = conv.weight.detach().double()
    if conv.bias is not None:
        bias = conv.bias.detach().double()
    else:
        bias = torch.zeros(weight.shape[0], dtype=torch.float64)
    if bn is None:
        return weight, bias
    scale, shift = bn_scale_shift(bn)
    return weight * scale[:, None, None, None], bias * scale + shift


def bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` with ``bn(x) = x * scale + shift`` in inference mode (float64)."""
    inv_std = 1.0 / torch.sqrt(bn.running_var.double() + bn.eps)
    gamma = bn.weight.detach().double() if bn.affine else torch.ones_like(inv_std)
    beta = bn.bias.detach().double() if bn.affine else torch.zeros_like(inv_std)
    scale = gamma * inv_std
    return scale, beta - bn.running_mean.double() * scale


class Normalize(nn.Module):
    """``(x - mean_c) / std_c``."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.mean, self.std = tuple(mean), tuple(std)
        self.register_buffer("_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self._mean) / self._std

    def describe(self, d: Describer, x: str) -> str:
        return d.node("normalize", [x], mean=list(self.mean), std=list(self.std))


def coords_like(x: torch.Tensor) -> torch.Tensor:
    """``[N, 2, H, W]``: row then column, ``(i + 0.5) / H * 2 - 1``."""
    n, _, height, width = x.shape
    rows = (torch.arange(height, dtype=x.dtype, device=x.device) + 0.5) / height * 2 - 1
    cols = (torch.arange(width, dtype=x.dtype, device=x.device) + 0.5) / width * 2 - 1
    grid = torch.stack([rows[:, None].expand(height, width), cols[None, :].expand(height, width)])
    return grid.expand(n, 2, height, width)


class WithCoords(nn.Module):
    """Concatenates the normalised row and column channels to the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, coords_like(x)], dim=1)

    def describe(self, d: Describer, x: str) -> str:
        return d.node("concat", [x, d.node("coords", [x])])


def _activation(name: str | None, x: torch.Tensor) -> torch.Tensor:
    if name == "relu":
        return F.relu(x)
    if name == "softplus":
        return F.softplus(x)
    return x


class ConvBN(nn.Module):
    """Conv2d (padding ``k // 2``) -> optional BatchNorm -> optional ReLU or softplus."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1,
                 bn: bool = True, act: str | None = "relu", bias: bool | None = None,
                 bn_affine: bool = True):
        super().__init__()
        bias = not bn if bias is None else bias
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(cout, affine=bn_affine) if bn else None
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return _activation(self.act, x)

    def describe(self, d: Describer, x: str) -> str:
        q = _qualname(self)
        weight, bias = fold_batchnorm(self.conv, self.bn)
        has_bias = self.bn is not None or self.conv.bias is not None
        x = d.node("conv", [x], weight=d.weight(f"{q}.weight", weight),
                   bias=d.weight(f"{q}.bias", bias) if has_bias else None,
                   stride=self.conv.stride[0],
                   padding=self.conv.padding[0], groups=self.conv.groups)
        return d.node(self.act, [x]) if self.act else x


class Affine(nn.Module):
    """A BatchNorm on its own (not after a conv): exported as ``affine``."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)

    def describe(self, d: Describer, x: str) -> str:
        q = _qualname(self)
        scale, shift = bn_scale_shift(self.bn)
        return d.node("affine", [x], scale=d.weight(f"{q}.scale", scale),
                      bias=d.weight(f"{q}.bias", shift))


class Block(nn.Module):
    """``y <- y + h S f(y)`` (IMEX, ``S`` the implicit solve) or ``y + h f(y)`` (ResNet)."""

    def __init__(self, channels: int, implicit: bool, h: float, boundary: str, pad: int,
                 kernel_scale: float):
        super().__init__()
        self.f1 = ConvBN(channels, channels)
        self.f2 = ConvBN(channels, channels, act=None)
        self.h = float(h)
        self.imex = ImexStep(channels, h, boundary, pad, kernel_scale) if implicit else None

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        f = self.f2(self.f1(y))
        return self.imex(y, f) if self.imex is not None else y + self.h * f

    def describe(self, d: Describer, y: str) -> str:
        f = self.f2.describe(d, self.f1.describe(d, y))
        if self.imex is None:
            return d.node("residual", [y, f], h=self.h)
        solve = self.imex.solve
        kernel = d.weight(f"{_qualname(self)}.imex.kernel", solve.effective_kernel())
        return d.node("imex", [y, f], kernel=kernel, h=solve.h, boundary=solve.boundary,
                      pad=solve.pad)


class UpConcat(nn.Module):
    """Upsample x2, concatenate a skip tensor, then ``ConvBN``."""

    def __init__(self, cin: int, cskip: int, cout: int, mode: str = "bilinear", k: int = 3):
        super().__init__()
        self.mode = mode
        self.conv = ConvBN(cin + cskip, cout, k)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([upsample(x, 2, self.mode), skip], dim=1))

    def describe(self, d: Describer, x: str, skip: str) -> str:
        up = d.node("upsample", [x], scale=2, mode=self.mode)
        return self.conv.describe(d, d.node("concat", [up, skip]))


def upsample(x: torch.Tensor, scale: int, mode: str) -> torch.Tensor:
    """Nearest, or bilinear with half-pixel centres (``align_corners=False``)."""
    if mode == "nearest":
        return F.interpolate(x, scale_factor=scale, mode="nearest")
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


class DepthHead(nn.Module):
    """Log-depth residual [+ per-row prior], soft-clamped to ``[ln d_min, ln d_max]``, exp."""

    def __init__(self, row_prior_height: int | None, min_depth: float, max_depth: float,
                 init_depth: float):
        super().__init__()
        if not 0 < min_depth < init_depth < max_depth:
            raise ValueError(f"need 0 < min_depth < init_depth < max_depth, got "
                             f"{min_depth}, {init_depth}, {max_depth}")
        self.lo, self.hi = math.log(min_depth), math.log(max_depth)
        init = math.log(init_depth)
        self.prior = (nn.Parameter(torch.full((1, 1, row_prior_height, 1), init))
                      if row_prior_height else None)
        self.init_bias = 0.0 if self.prior is not None else init

    @property
    def slope(self) -> float:
        return 4.0 / (self.hi - self.lo)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.prior is not None:
            if z.shape[-2] != self.prior.shape[-2]:
                raise ValueError(f"row prior has {self.prior.shape[-2]} rows, input gives "
                                 f"{z.shape[-2]}")
            z = z + self.prior
        mid = 0.5 * (self.lo + self.hi)
        return torch.exp(self.lo + (self.hi - self.lo) * torch.sigmoid(self.slope * (z - mid)))

    def describe(self, d: Describer, z: str) -> str:
        if self.prior is not None:
            z = d.node("add_tensor", [z], tensor=d.weight(f"{_qualname(self)}.prior", self.prior))
        mid = 0.5 * (self.lo + self.hi)
        z = d.node("linear", [z], a=self.slope, b=-self.slope * mid)
        z = d.node("linear", [d.node("sigmoid", [z])], a=self.hi - self.lo, b=self.lo)
        return d.node("exp", [z])


def _parse_options(cls: type, options: dict[str, Any], what: str) -> Any:
    """``cls(**options)``, refusing unknown keys and boundary modes with a message naming them."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown {what} options {unknown}; known: {sorted(known)}")
    parsed = cls(**options)
    if parsed.boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {parsed.boundary!r}")
    return parsed


@dataclass
class DepthOptions:
    """Options of the depth networks (see the module doc for the layout)."""

    c1: int = 24
    c2: int = 32
    c3: int = 64
    c_dec: int = 16
    blocks1: int = 2
    blocks2: int = 3
    h: float = 1.0
    boundary: str = "reflect"
    pad: int = 8
    kernel_scale: float = 1.0
    coords: bool = False
    row_prior: bool = False
    height: int = 240
    min_depth: float = 0.1
    max_depth: float = 20.0
    init_depth: float = 2.5

    @classmethod
    def parse(cls, options: dict[str, Any]) -> "DepthOptions":
        parsed = _parse_options(cls, options, "depth-network")
        return parsed

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class DepthNet(nn.Module):
    """IMEXnet (``implicit=True``) or its ResNet twin for metric depth."""

    def __init__(self, arch: str, implicit: bool, options: DepthOptions):
        super().__init__()
        o = options
        self.arch, self.options = arch, o
        step = dict(implicit=implicit, h=o.h, boundary=o.boundary, pad=o.pad,
                    kernel_scale=o.kernel_scale)
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.coords = WithCoords() if o.coords else None
        self.stem1 = ConvBN(3 + 2 * o.coords, o.c1, stride=2)
        self.stem2 = ConvBN(o.c1, o.c2, stride=2)
        self.stage1 = nn.ModuleList(Block(o.c2, **step) for _ in range(o.blocks1))
        self.down = ConvBN(o.c2, o.c3, stride=2)
        self.stage2 = nn.ModuleList(Block(o.c3, **step) for _ in range(o.blocks2))
        self.up1 = UpConcat(o.c3, o.c2, o.c2)
        self.reduce = ConvBN(o.c2, o.c_dec, k=1)
        self.up2 = UpConcat(o.c_dec, o.c1, o.c_dec)
        self.head_conv = ConvBN(o.c_dec, 1, bn=False, act=None)
        self.head = DepthHead(o.height if o.row_prior else None, o.min_depth, o.max_depth,
                              o.init_depth)
        with torch.no_grad():
            self.head_conv.conv.bias.fill_(self.head.init_bias)
        name_modules(self)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.normalize(image)
        if self.coords is not None:
            x = self.coords(x)
        s1 = self.stem1(x)
        y = self.stem2(s1)
        for block in self.stage1:
            y = block(y)
        z = self.down(y)
        for block in self.stage2:
            z = block(z)
        u = self.up2(self.reduce(self.up1(z, y)), s1)
        return self.head(upsample(self.head_conv(u), 2, "bilinear"))

    def describe(self) -> tuple[dict, dict[str, np.ndarray]]:
        """``(arch, weights)`` in the format of ``models/README.md``, BN folded."""
        d = Describer(self.arch)
        x = self.normalize.describe(d, d.input)
        if self.coords is not None:
            x = self.coords.describe(d, x)
        s1 = self.stem1.describe(d, x)
        y = self.stem2.describe(d, s1)
        for block in self.stage1:
            y = block.describe(d, y)
        z = self.down.describe(d, y)
        for block in self.stage2:
            z = block.describe(d, z)
        u = self.up2.describe(d, self.reduce.describe(d, self.up1.describe(d, z, y)), s1)
        u = d.node("upsample", [self.head_conv.describe(d, u)], scale=2, mode="bilinear")
        return d.finish(self.head.describe(d, u))

    def io_spec(self, height: int, width: int, batch: int = 1) -> tuple[dict, dict]:
        """``imexdepth.input`` and ``imexdepth.output`` for an input of ``height x width``."""
        spec_in = {"name": "image", "shape": [batch, 3, height, width], "color": "rgb",
                   "scale": 255.0}
        return spec_in, {"name": "depth", "kind": "depth", "unit": "m"}


# --------------------------------------------------------------------------------------------
# Q-tips segmentation networks (the paper's Table 1; facts in shared/data/qtips/README.md)

QTIPS_ARCHS = ("qtips-imexnet", "qtips-resnet", "qtips-bn")


@dataclass
class QtipsOptions:
    """Options of the Q-tips networks.

    ``widths`` are the stage widths; each stage is a transition conv3x3 -> BN -> ReLU to its width
    followed by ``layers`` same-width layers (the reference: 64/128/256, an opening layer and
    three same-width layers per stage, "four layers each").
    """

    widths: tuple[int, ...] = (64, 128, 256)
    layers: int = 3
    h: float = 1.0
    boundary: str = "periodic"
    pad: int = 8
    kernel_scale: float = 1.0
    zero_mean: bool = True
    classes: int = 4

    @classmethod
    def parse(cls, options: dict[str, Any]) -> "QtipsOptions":
        parsed = _parse_options(cls, options, "Q-tips")
        parsed.widths = tuple(int(w) for w in parsed.widths)
        return parsed

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["widths"] = list(self.widths)
        return out


class QtipsLayer(nn.Module):
    """One same-width layer: ``z = K^T ReLU(BN(K y))`` with one shared kernel ``K``, then

    - ``qtips-imexnet``: ``y <- BN(y + h (I + h B^T B)^-1 z)``,
    - ``qtips-bn``: ``y <- BN(y + h z)``,
    - ``qtips-resnet``: ``y <- y + h z``.

    ``K^T`` is the adjoint of the 3x3 convolution (``conv_transpose2d`` with the same weight),
    exported as an ordinary conv with the kernel flipped and its channel axes swapped. With
    ``zero_mean`` the kernel is projected to zero spatial mean per filter in every forward pass,
    as the reference does. BN has no affine parameters, as in the reference; unlike the
    reference, evaluation uses running statistics (so it folds into ``affine``).
    """

    def __init__(self, width: int, variant: str, o: QtipsOptions):
        super().__init__()
        self.kernel = nn.Parameter(torch.empty(width, width, 3, 3))
        nn.init.kaiming_uniform_(self.kernel, a=math.sqrt(5))
        self.bn_inner = nn.BatchNorm2d(width, affine=False)
        self.zero_mean, self.h = o.zero_mean, float(o.h)
        implicit = variant == "qtips-imexnet"
        self.imex = ImexStep(width, o.h, o.boundary, o.pad, o.kernel_scale) if implicit else None
        self.state_bn = Affine(width) if variant != "qtips-resnet" else None
        if self.state_bn is not None:
            self.state_bn.bn = nn.BatchNorm2d(width, affine=False)

    def effective_kernel(self) -> torch.Tensor:
        if not self.zero_mean:
            return self.kernel
        return self.kernel - self.kernel.mean(dim=(-2, -1), keepdim=True)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        k = self.effective_kernel()
        z = F.conv_transpose2d(F.relu(self.bn_inner(F.conv2d(y, k, padding=1))), k, padding=1)
        y = self.imex(y, z) if self.imex is not None else y + self.h * z
        return self.state_bn(y) if self.state_bn is not None else y

    def describe(self, d: Describer, y: str) -> str:
        q = _qualname(self)
        k = self.effective_kernel().detach().double()
        scale, shift = bn_scale_shift(self.bn_inner)
        x = d.node("conv", [y], weight=d.weight(f"{q}.k.weight", k * scale[:, None, None, None]),
                   bias=d.weight(f"{q}.k.bias", shift), stride=1, padding=1, groups=1)
        adjoint = k.flip(-2, -1).transpose(0, 1)
        z = d.node("conv", [d.node("relu", [x])], weight=d.weight(f"{q}.kt.weight", adjoint),
                   bias=None, stride=1, padding=1, groups=1)
        if self.imex is None:
            y = d.node("residual", [y, z], h=self.h)
        else:
            solve = self.imex.solve
            kernel = d.weight(f"{q}.imex.kernel", solve.effective_kernel())
            y = d.node("imex", [y, z], kernel=kernel, h=solve.h, boundary=solve.boundary,
                       pad=solve.pad)
        return self.state_bn.describe(d, y) if self.state_bn is not None else y


class QtipsNet(nn.Module):
    """Q-tips segmentation: ``[N, 1, 64, 64]`` gray in ``[0, 1]`` -> ``[N, classes, 64, 64]``
    logits. Input normalisation ``(x - 0.5) / 0.5``; no pooling; 1x1 head without bias."""

    def __init__(self, arch: str, options: QtipsOptions):
        super().__init__()
        self.arch, self.options = arch, options
        o = options
        self.normalize = Normalize((0.5,), (0.5,))
        stages, cin = [], 1
        for width in o.widths:
            stages.append(ConvBN(cin, width, bn_affine=False))
            stages.extend(QtipsLayer(width, arch, o) for _ in range(o.layers))
            cin = width
        self.body = nn.Sequential(*stages)
        self.head = nn.Conv2d(cin, o.classes, 1, bias=False)
        name_modules(self)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.normalize(image)))

    def describe(self) -> tuple[dict, dict[str, np.ndarray]]:
        d = Describer(self.arch)
        x = self.normalize.describe(d, d.input)
        for layer in self.body:
            x = layer.describe(d, x)
        x = d.node("conv", [x], weight=d.weight("head.weight", self.head.weight), bias=None,
                   stride=1, padding=0, groups=1)
        return d.finish(x, "logits")

    def io_spec(self, height: int, width: int, batch: int = 1) -> tuple[dict, dict]:
        spec_in = {"name": "image", "shape": [batch, 1, height, width], "color": "gray",
                   "scale": 255.0}
        return spec_in, {"name": "logits", "kind": "logits", "unit": "class"}


def build_model(arch: str, **options: Any) -> nn.Module:
    """Builds a network by architecture name.

    Args:
        arch: ``"imexnet-depth"``, ``"resnet-depth"``, ``"qtips-imexnet"``, ``"qtips-resnet"``,
            ``"qtips-bn"`` or ``"tiny-imex"`` (a small test network that uses every op; see
            ``fixtures.py``).
        **options: architecture options (``DepthOptions`` / ``QtipsOptions`` fields).

    Returns:
        The module, in training mode, with ``describe()`` and ``io_spec()``.
    """
    if arch in DEPTH_ARCHS:
        return DepthNet(arch, arch == "imexnet-depth", DepthOptions.parse(options))
    if arch in QTIPS_ARCHS:
        return QtipsNet(arch, QtipsOptions.parse(options))
    if arch == "tiny-imex":
        from imexdepth_train.fixtures import TinyNet

        return TinyNet(**options)
    known = list(DEPTH_ARCHS) + list(QTIPS_ARCHS) + ["tiny-imex"]
    raise ValueError(f"unknown architecture {arch!r}; known: {known}")


def model_options(model: nn.Module) -> dict[str, Any]:
    """The options ``build_model`` needs to rebuild ``model`` (stored in checkpoints)."""
    return model.options.as_dict() if hasattr(model.options, "as_dict") else dict(model.options)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def infer_shapes(arch: dict, weights: dict[str, np.ndarray],
                 input_shape: tuple[int, int, int, int]) -> dict[str, tuple[int, ...]]:
    """Shape of every tensor of an architecture description for a given input shape.

    Raises:
        ValueError: on an unknown op, a missing input or inconsistent shapes.
    """
    shapes: dict[str, tuple[int, ...]] = {arch["input"]: tuple(input_shape)}
    for node in arch["nodes"]:
        missing = [name for name in node["inputs"] if name not in shapes]
        if missing:
            raise ValueError(f"node {node['output']!r} ({node['op']}) reads unknown {missing}")
        shapes[node["output"]] = _node_shape(node, [shapes[i] for i in node["inputs"]], weights)
    return shapes


def _node_shape(node: dict, ins: list[tuple[int, ...]], weights: dict) -> tuple[int, ...]:
    op, (n, c, height, width) = node["op"], ins[0]
    if op == "conv":
        cout, cin_g, kh, kw = weights[node["weight"]].shape
        if cin_g * node["groups"] != c:
            raise ValueError(f"conv {node['weight']}: input has {c} channels, weight expects "
                             f"{cin_g * node['groups']}")
        s, p = node["stride"], node["padding"]
        return (n, cout, (height + 2 * p - kh) // s + 1, (width + 2 * p - kw) // s + 1)
    if op == "upsample":
        return (n, c, height * node["scale"], width * node["scale"])
    if op == "concat":
        if any(s[2:] != ins[0][2:] or s[0] != n for s in ins):
            raise ValueError(f"concat {node['output']}: mismatched shapes {ins}")
        return (n, sum(s[1] for s in ins), height, width)
    if op == "coords":
        return (n, 2, height, width)
    if op in ("add", "residual", "imex") and ins[0] != ins[1]:
        raise ValueError(f"{op} {node['output']}: mismatched shapes {ins}")
    if op in ("normalize", "affine", "relu", "add", "residual", "imex", "sigmoid", "exp",
              "softplus", "linear", "add_tensor"):
        return ins[0]
    raise ValueError(f"unknown op {op!r}")


def imex_matrix_macs(channels: int, height: int, width: int) -> int:
    """Multiply-adds of one solve written as real DFT matrix products (the ONNX form)."""
    return channels * height * (width // 2 + 1) * (4 * width + 8 * height)


def count_macs(arch: dict, weights: dict[str, np.ndarray],
               input_shape: tuple[int, int, int, int]) -> dict[str, int]:
    """Multiply-adds per forward pass, by kind.

    Returns:
        ``conv`` (all convolutions), ``imex_matrix`` (the solves as real matrix products, as in
        the ONNX graph), ``imex_fft`` (an estimate of the solves as real FFTs, ``2.5 N log2 N``
        per real transform of ``N`` points, forward and inverse, plus the scaling), and
        ``total`` = ``conv + imex_matrix`` (elementwise ops are not counted).
    """
    shapes = infer_shapes(arch, weights, input_shape)
    conv = matrix = fft = 0
    for node in arch["nodes"]:
        out = shapes[node["output"]]
        if node["op"] == "conv":
            _, cin_g, kh, kw = weights[node["weight"]].shape
            conv += math.prod(out) * cin_g * kh * kw
        elif node["op"] == "imex":
            n, c, height, width = out
            pad = node["pad"] if node["boundary"] == "reflect" else 0
            hp, wp = height + 2 * pad, width + 2 * pad
            matrix += n * imex_matrix_macs(c, hp, wp)
            points = hp * wp
            fft += int(n * c * (2 * 2.5 * points * math.log2(max(points, 2)) + points))
    return {"conv": conv, "imex_matrix": matrix, "imex_fft": fft, "total": conv + matrix}
