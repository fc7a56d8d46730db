"""Deterministic test fixtures for the Rust engines, written into ``tests/fixtures/<name>/``.

Each fixture directory holds:

- ``model.onnx``: written by ``export.export_model`` (so it passed ``onnx.checker`` and the
  ONNX Runtime parity check first),
- ``input.bin`` / ``output.bin``: raw little-endian float32, NCHW, the seeded input and the
  PyTorch eval-mode output for it,
- ``meta.json``: seed, shapes, library versions, opset, tolerance tier and the export's own
  parity figures.

Fixtures (all random weights, with random BatchNorm running statistics and affine parameters so
that folding is exercised, and perturbed implicit kernels):

- ``tiny-imex-periodic``, ``tiny-imex-reflect``: ``TinyNet`` on a 3x24x32 input; between them
  every op of ``models/README.md`` and both boundary modes.
- ``imexnet-depth-random``: the real ``imexnet-depth`` architecture at 240x320.

Regeneration is deterministic (fixed seeds, one thread): ``python -m imexdepth_train.fixtures
--out ../tests/fixtures`` from ``training/`` reproduces the files byte for byte on the same
library versions, except ``output.bin``: PyTorch's CPU kernels choose their SIMD path by CPU, so
the expected output may differ in the last bits on another machine (the tests allow 1e-5 of its
range there and byte equality everywhere else).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imexdepth_train import export, nets
from imexdepth_train.nets import Affine, Block, ConvBN, DepthHead, Describer, Normalize, UpConcat

log = logging.getLogger(__name__)

TOLERANCE_TIER = {"tier": "cross_runtime", "max_relative": export.PARITY_TOLERANCE,
                  "relative": "max|a - b| / max|b|"}
TINY_SIZE = (24, 32)


class TinyNet(nn.Module):
    """A small depth-like network that uses every op of the model format.

    Layout (3x24x32 input): normalize, coords + concat, conv/1, conv/2, IMEX block, ResNet block
    (``residual``), depthwise conv/2 with softplus, IMEX block at 1/4, nearest x2 + concat +
    affine + conv1x1, ``add`` with the 1/2 features, bilinear x2 + concat + conv, head conv
    without bias, per-row prior (``add_tensor``), soft clamp (``linear``, ``sigmoid``,
    ``linear``, ``exp``).
    """

    def __init__(self, boundary: str = "reflect", pad: int = 4, h: float = 1.0,
                 height: int = TINY_SIZE[0]):
        super().__init__()
        self.arch = "tiny-imex"
        self.options = {"boundary": boundary, "pad": pad, "h": h, "height": height}
        step = dict(h=h, boundary=boundary, kernel_scale=0.5)
        self.normalize = Normalize(nets.IMAGENET_MEAN, nets.IMAGENET_STD)
        self.coords = nets.WithCoords()
        self.conv_a = ConvBN(5, 6)
        self.conv_b = ConvBN(6, 8, stride=2)
        self.imex_b = Block(8, implicit=True, pad=pad, **step)
        self.res_b = Block(8, implicit=False, pad=pad, **step)
        self.conv_c = ConvBN(8, 8, stride=2, groups=8, act="softplus")
        self.imex_c = Block(8, implicit=True, pad=min(pad, 3), **step)
        self.norm_u = Affine(16)
        self.conv_u = ConvBN(16, 8, k=1)
        self.up_v = UpConcat(8, 6, 4)
        self.head_conv = ConvBN(4, 1, bn=False, act=None, bias=False)
        self.head = DepthHead(height, 0.1, 20.0, 2.5)
        nets.name_modules(self)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        a = self.conv_a(self.coords(self.normalize(image)))
        b = self.res_b(self.imex_b(self.conv_b(a)))
        c = self.imex_c(self.conv_c(b))
        u = torch.cat([nets.upsample(c, 2, "nearest"), b], dim=1)
        u = self.conv_u(self.norm_u(u)) + b
        return self.head(self.head_conv(self.up_v(u, a)))

    def describe(self) -> tuple[dict, dict[str, np.ndarray]]:
        d = Describer(self.arch)
        a = self.conv_a.describe(d, self.coords.describe(d, self.normalize.describe(d, d.input)))
        b = self.res_b.describe(d, self.imex_b.describe(d, self.conv_b.describe(d, a)))
        c = self.imex_c.describe(d, self.conv_c.describe(d, b))
        u = d.node("concat", [d.node("upsample", [c], scale=2, mode="nearest"), b])
        u = d.node("add", [self.conv_u.describe(d, self.norm_u.describe(d, u)), b])
        v = self.head_conv.describe(d, self.up_v.describe(d, u, a))
        return d.finish(self.head.describe(d, v))

    def io_spec(self, height: int, width: int, batch: int = 1) -> tuple[dict, dict]:
        spec_in = {"name": "image", "shape": [batch, 3, height, width], "color": "rgb",
                   "scale": 255.0}
        return spec_in, {"name": "depth", "kind": "depth", "unit": "m"}


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Gives every BatchNorm random running statistics and affine parameters, perturbs the
    implicit kernels and the row prior, all from ``seed``."""
    gen = torch.Generator().manual_seed(seed)

    def uniform(t: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(t.shape, generator=gen)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                mean = torch.randn(module.running_mean.shape, generator=gen)
                module.running_mean.copy_(0.3 * mean)
                module.running_var.copy_(uniform(module.running_var, 0.5, 2.0))
                if module.affine:
                    module.weight.copy_(uniform(module.weight, 0.5, 1.5))
                    module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=gen))
        for name, param in model.named_parameters():
            if name.endswith("solve.kernel"):
                param.add_(0.2 * torch.randn(param.shape, generator=gen))
            elif name.endswith("head.prior"):
                param.add_(torch.linspace(-0.5, 0.5, param.shape[2]).view(param.shape))
    return model


def fixture_models() -> dict[str, tuple[int, tuple[int, int], Any]]:
    """``name -> (seed, (height, width), factory)``."""
    return {
        "tiny-imex-periodic": (11, TINY_SIZE, lambda: TinyNet(boundary="periodic")),
        "tiny-imex-reflect": (12, TINY_SIZE, lambda: TinyNet(boundary="reflect", pad=4)),
        "imexnet-depth-random": (13, (240, 320), lambda: nets.build_model("imexnet-depth")),
    }


def write_fixture(name: str, out_dir: Path) -> dict[str, Any]:
    """Builds, exports (with its checks) and writes one fixture; returns its meta."""
    seed, (height, width), factory = fixture_models()[name]
    torch.manual_seed(seed)
    model = randomize(factory(), seed).eval()
    spec_in, spec_out = model.io_spec(height, width)
    x = export.sample_input(spec_in["shape"], seed)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy()
    target = out_dir / name
    parity = export.export_model(model, height, width, target / "model.onnx",
                                 {"fixture": name, "seed": seed, "random_init": True}, seed=seed)
    x.astype("<f4").tofile(target / "input.bin")
    y.astype("<f4").tofile(target / "output.bin")
    meta = {
        "name": name, "arch": model.arch, "options": nets.model_options(model), "seed": seed,
        "input": {"file": "input.bin", "shape": list(x.shape), "dtype": "float32 little-endian"},
        "output": {"file": "output.bin", "shape": list(y.shape), "dtype": "float32 little-endian",
                   "source": "PyTorch eval mode", "kind": spec_out["kind"],
                   "unit": spec_out["unit"]},
        "versions": export.versions(), "opset": export.OPSET, "ir_version": export.IR_VERSION,
        "tolerance": TOLERANCE_TIER, "ort_parity": parity.as_dict(),
        "ops": sorted({n["op"] for n in model.describe()[0]["nodes"]}),
    }
    (target / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    log.info("fixture %s: relative parity %.3g", name, parity.relative)
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imexdepth_train.fixtures",
                                     description="write the Rust test fixtures")
    parser.add_argument("--out", type=Path, required=True, help="e.g. ../tests/fixtures")
    parser.add_argument("--only", action="append", choices=sorted(fixture_models()),
                        help="write only this fixture (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    for name in args.only or sorted(fixture_models()):
        write_fixture(name, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
