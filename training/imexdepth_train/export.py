"""ONNX export built directly from a model's architecture description, with self-checks.

The graph is written node by node with ``onnx.helper`` from ``model.describe()``, so every
initializer the description names appears in the file under exactly that name (the native Rust
engine reads them; ONNX Runtime runs the graph). Opset 17, IR version 8, fixed input size,
``metadata_props`` as in ``models/README.md``.

The implicit solve ``(I + h B^T B)^-1 f`` becomes real matrix products for the fixed grid
``Hp x Wp`` (``Hp = H + 2 pad`` in reflect mode, which adds ``Pad(reflect)`` before and
``Slice`` after). With ``Wr = Wp // 2 + 1`` one-sided frequencies along W::

    Xr = X Cw,  Xi = X Sw                       [.., Hp, Wr]   one-sided DFT along W
    Zr = Ch Xr + Sh Xi,  Zi = Ch Xi - Sh Xr                    full DFT along H
    Zr, Zi *= G                                 G = h / (1 + h |B^|^2), [1, C, Hp, Wr]
    Ar = Ch Zr - Sh Zi,  Ai = Ch Zi + Sh Zr                    inverse along H
    Y = Ar Icw + Ai Isw                         [.., Hp, Wp]   inverse one-sided along W

``Cw = cos / sqrt(Wp)``, ``Sw = -sin / sqrt(Wp)``, ``Ch = cos / sqrt(Hp)``,
``Sh = sin / sqrt(Hp)``, ``Icw = a_v cos / sqrt(Wp)``, ``Isw = -a_v sin / sqrt(Wp)`` with
``a_v = 1`` for ``v = 0`` and (even ``Wp``) ``v = Wp / 2``, else 2: the transform is split
symmetrically between forward and inverse, so intermediates keep the input's magnitude (safe in
fp16). ``h`` is folded into ``G``; the step output is ``y + Y``. ``G`` is computed inside the
graph from the stored ``B`` kernel (small MatMuls on initializers only, which ONNX Runtime
constant-folds at load), so both engines read the same kernel. Cost per solve
``C Hp Wr (4 Wp + 8 Hp)`` multiply-adds.

CLI::

    python -m imexdepth_train.export --checkpoint CKPT [--arch ARCH] --size 240x320 --out F.onnx
    python -m imexdepth_train.export --random-init ARCH [--seed S] --size 240x320 --out F.onnx

Checks before writing: ``onnx.checker`` (full), then ONNX Runtime CPU against the PyTorch
module in eval mode on a seeded random input; the maximum relative error
``max|a - b| / max|b|`` must be at most ``1e-4``. On failure nothing is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from imexdepth_train import nets

log = logging.getLogger(__name__)

OPSET = 17
IR_VERSION = 8
#: Maximum ``max|ort - torch| / max|torch|`` an export may show.
PARITY_TOLERANCE = 1e-4
CHECKPOINT_KEYS = ("arch", "options", "state_dict", "training")


class ExportError(RuntimeError):
    """An export that failed its own checks, or bad input to the exporter."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: names the file, the field and what was found."""


# --------------------------------------------------------------------------------------------
# Checkpoints


def save_checkpoint(path: str | Path, model: nn.Module, training: dict[str, Any]) -> None:
    """Writes ``{"arch", "options", "state_dict", "training"}`` (the trainer's format)."""
    ckpt = {"arch": model.arch, "options": nets.model_options(model),
            "state_dict": model.state_dict(), "training": dict(training)}
    torch.save(ckpt, path)


def load_checkpoint(path: str | Path, arch: str | None = None) -> tuple[nn.Module, dict]:
    """Loads a checkpoint and rebuilds its model (in eval mode).

    Args:
        path: file written by ``save_checkpoint``.
        arch: if given, the architecture the caller expects; any other is refused.

    Returns:
        ``(model, checkpoint dict)``.

    Raises:
        CheckpointError: unreadable file, missing keys, wrong arch or mismatched weights.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for bad files
        raise CheckpointError(f"{path}: cannot read as a torch checkpoint: {err}") from err
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict with keys {CHECKPOINT_KEYS}, "
                              f"found {type(ckpt).__name__}")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: missing keys {missing}; found {sorted(ckpt)}")
    if arch is not None and ckpt["arch"] != arch:
        raise CheckpointError(f"{path}: field 'arch' is {ckpt['arch']!r}, expected {arch!r}")
    try:
        model = nets.build_model(ckpt["arch"], **ckpt["options"])
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (ValueError, RuntimeError, TypeError) as err:
        raise CheckpointError(f"{path}: fields 'arch'/'options'/'state_dict' do not make a "
                              f"model: {err}") from err
    return model.eval(), ckpt


# --------------------------------------------------------------------------------------------
# Graph construction


class GraphBuilder:
    """Accumulates ONNX nodes and initializers; tensor names follow the architecture's."""

    def __init__(self, weights: dict[str, np.ndarray]):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, np.ndarray] = {}
        for name, value in weights.items():
            self.initializers[name] = np.asarray(value, dtype=np.float32)

    def const(self, name: str, value: np.ndarray | float, dtype=np.float32) -> str:
        """Adds an initializer that is not part of the architecture (a graph-only constant)."""
        if name in self.initializers:
            raise ExportError(f"graph constant {name!r} clashes with an existing initializer")
        self.initializers[name] = np.asarray(value, dtype=dtype)
        return name

    def shared_const(self, name: str, make) -> str:
        """Adds ``make()`` under ``name`` once (for matrices shared by several solves)."""
        if name not in self.initializers:
            self.initializers[name] = np.asarray(make(), dtype=np.float32)
        return name

    def op(self, op_type: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output


def dft_matrices(hp: int, wp: int) -> dict[str, np.ndarray]:
    """The symmetric-scaled real DFT matrices of the module doc, float64."""
    wr = wp // 2 + 1
    w, v = np.arange(wp)[:, None], np.arange(wr)[None, :]
    angle_w = 2 * np.pi * w * v / wp
    alpha = np.full(wr, 2.0)
    alpha[0] = 1.0
    if wp % 2 == 0:
        alpha[-1] = 1.0
    u = np.arange(hp)
    angle_h = 2 * np.pi * np.outer(u, u) / hp
    return {
        "cw": np.cos(angle_w) / math.sqrt(wp), "sw": -np.sin(angle_w) / math.sqrt(wp),
        "ch": np.cos(angle_h) / math.sqrt(hp), "sh": np.sin(angle_h) / math.sqrt(hp),
        "icw": (alpha[:, None] * np.cos(angle_w).T) / math.sqrt(wp),
        "isw": (-alpha[:, None] * np.sin(angle_w).T) / math.sqrt(wp),
    }


def tap_tables(hp: int, wp: int) -> dict[str, np.ndarray]:
    """Cosines and sines of the 3 taps' phases: ``[Hp, 3]`` along H and ``[3, Wr]`` along W."""
    taps = np.array([-1.0, 0.0, 1.0])
    angle_h = 2 * np.pi * np.outer(np.arange(hp), taps) / hp
    angle_w = 2 * np.pi * np.outer(taps, np.arange(wp // 2 + 1)) / wp
    return {"hc": np.cos(angle_h), "hs": np.sin(angle_h), "wc": np.cos(angle_w),
            "ws": np.sin(angle_w)}


def emit_factor(g: GraphBuilder, node: dict, hp: int, wp: int) -> str:
    """``G = h / (1 + h |B^|^2)``, ``[1, C, Hp, Wr]``, computed in the graph from the kernel.

    Only initializers feed it, so ONNX Runtime folds it once at load; the ``B`` kernel stays the
    single source of truth for both engines.
    """
    out, kernel = node["output"], node["kernel"]
    t = {k: g.shared_const(f"imex.dft.{hp}x{wp}.tap_{k}", lambda k=k: tap_tables(hp, wp)[k])
         for k in ("hc", "hs", "wc", "ws")}

    inner = {k: g.op("MatMul", [t[k], kernel], f"{out}/k_{k}") for k in ("hc", "hs")}

    def sandwich(left: str, right: str) -> str:  # ([Hp, 3] @ [C, 1, 3, 3]) @ [3, Wr]
        return g.op("MatMul", [inner[left], t[right]], f"{out}/k_{left}_{right}")

    real = g.op("Sub", [sandwich("hc", "wc"), sandwich("hs", "ws")], f"{out}/symbol_re")
    imag = g.op("Add", [sandwich("hs", "wc"), sandwich("hc", "ws")], f"{out}/symbol_im")
    power = g.op("Add", [g.op("Mul", [real, real], f"{out}/re2"),
                         g.op("Mul", [imag, imag], f"{out}/im2")], f"{out}/power")
    h = g.const(f"{out}/h", node["h"])
    one = g.const(f"{out}/one", 1.0)
    denom = g.op("Add", [one, g.op("Mul", [power, h], f"{out}/h_power")], f"{out}/denom")
    factor = g.op("Div", [h, denom], f"{out}/factor_c1")
    return g.op("Transpose", [factor], f"{out}/factor", perm=[1, 0, 2, 3])


def emit_solve(g: GraphBuilder, x: str, node: dict, shape: tuple[int, ...]) -> str:
    """Writes ``h (I + h B^T B)^-1 x`` as matrix products; returns the output name."""
    _, c, height, width = shape
    pad = node["pad"] if node["boundary"] == "reflect" else 0
    out = node["output"]
    if pad:
        pads = g.const(f"{out}/pads", [0, 0, pad, pad, 0, 0, pad, pad], np.int64)
        x = g.op("Pad", [x, pads], f"{out}/padded", mode="reflect")
    hp, wp = height + 2 * pad, width + 2 * pad
    mats = {k: g.shared_const(f"imex.dft.{hp}x{wp}.{k}", lambda k=k: dft_matrices(hp, wp)[k])
            for k in ("cw", "sw", "ch", "sh", "icw", "isw")}
    gain = emit_factor(g, node, hp, wp)

    def mm(a: str, b: str, name: str) -> str:
        return g.op("MatMul", [a, b], f"{out}/{name}")

    xr, xi = mm(x, mats["cw"], "xr"), mm(x, mats["sw"], "xi")
    zr = g.op("Add", [mm(mats["ch"], xr, "ch_xr"), mm(mats["sh"], xi, "sh_xi")], f"{out}/zr")
    zi = g.op("Sub", [mm(mats["ch"], xi, "ch_xi"), mm(mats["sh"], xr, "sh_xr")], f"{out}/zi")
    zr, zi = g.op("Mul", [zr, gain], f"{out}/gzr"), g.op("Mul", [zi, gain], f"{out}/gzi")
    ar = g.op("Sub", [mm(mats["ch"], zr, "ch_zr"), mm(mats["sh"], zi, "sh_zi")], f"{out}/ar")
    ai = g.op("Add", [mm(mats["ch"], zi, "ch_zi"), mm(mats["sh"], zr, "sh_zr")], f"{out}/ai")
    y = g.op("Add", [mm(ar, mats["icw"], "yr"), mm(ai, mats["isw"], "yi")], f"{out}/solved")
    if pad:
        starts = g.const(f"{out}/starts", [pad, pad], np.int64)
        ends = g.const(f"{out}/ends", [pad + height, pad + width], np.int64)
        axes = g.const(f"{out}/axes", [2, 3], np.int64)
        y = g.op("Slice", [y, starts, ends, axes], f"{out}/cropped")
    return y


def _channel_view(g: GraphBuilder, name: str, out: str) -> str:
    """A ``[C]`` initializer as ``[1, C, 1, 1]`` (Unsqueeze), for broadcasting."""
    axes = g.const(f"{out}/{name}.axes", [0, 2, 3], np.int64)
    return g.op("Unsqueeze", [name, axes], f"{out}/{name}.nchw")


def emit_node(g: GraphBuilder, node: dict, shapes: dict[str, tuple[int, ...]]) -> None:
    """Writes the ONNX nodes of one architecture node."""
    op, ins, out = node["op"], node["inputs"], node["output"]
    shape = shapes[ins[0]]
    if op == "normalize":
        mean = g.const(f"{out}/mean", np.asarray(node["mean"]).reshape(1, -1, 1, 1))
        std = g.const(f"{out}/std", np.asarray(node["std"]).reshape(1, -1, 1, 1))
        g.op("Div", [g.op("Sub", [ins[0], mean], f"{out}/centred"), std], out)
    elif op == "conv":
        k = g.initializers[node["weight"]].shape[2:]
        p, s = node["padding"], node["stride"]
        inputs = [ins[0], node["weight"]] + ([node["bias"]] if node["bias"] else [])
        g.op("Conv", inputs, out, kernel_shape=list(k), pads=[p, p, p, p], strides=[s, s],
             group=node["groups"])
    elif op == "affine":
        scaled = g.op("Mul", [ins[0], _channel_view(g, node["scale"], out)], f"{out}/scaled")
        g.op("Add", [scaled, _channel_view(g, node["bias"], out)], out)
    elif op in ("relu", "sigmoid", "exp", "softplus"):
        g.op({"relu": "Relu", "sigmoid": "Sigmoid", "exp": "Exp", "softplus": "Softplus"}[op],
             ins, out)
    elif op == "add":
        g.op("Add", ins, out)
    elif op == "residual":
        hf = g.op("Mul", [ins[1], g.const(f"{out}/h", node["h"])], f"{out}/hf")
        g.op("Add", [ins[0], hf], out)
    elif op == "imex":
        g.op("Add", [ins[0], emit_solve(g, ins[1], node, shape)], out)
    elif op == "upsample":
        _emit_upsample(g, node)
    elif op == "concat":
        g.op("Concat", ins, out, axis=1)
    elif op == "linear":
        ax = g.op("Mul", [ins[0], g.const(f"{out}/a", node["a"])], f"{out}/ax")
        g.op("Add", [ax, g.const(f"{out}/b", node["b"])], out)
    elif op == "coords":
        n, _, height, width = shape
        grid = nets.coords_like(torch.zeros(n, 1, height, width, dtype=torch.float64)).numpy()
        g.op("Identity", [g.const(f"{out}/grid", grid)], out)
    elif op == "add_tensor":
        g.op("Add", [ins[0], node["tensor"]], out)
    else:
        raise ExportError(f"node {out!r}: op {op!r} has no ONNX lowering")


def _emit_upsample(g: GraphBuilder, node: dict) -> None:
    s, out = float(node["scale"]), node["output"]
    scales = g.const(f"{out}/scales", [1.0, 1.0, s, s])
    if node["mode"] == "nearest":
        attrs = dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                     nearest_mode="floor")
    else:
        attrs = dict(mode="linear", coordinate_transformation_mode="half_pixel")
    g.op("Resize", [node["inputs"][0], "", scales], out, **attrs)


def versions() -> dict[str, str]:
    """Versions of the libraries that shape the exported file."""
    return {"torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}


def exporter_string() -> str:
    v = versions()
    return (f"imexdepth_train.export (torch {v['torch']}, onnx {v['onnx']}, "
            f"onnxruntime {v['onnxruntime']})")


def model_boundary(model: nn.Module, arch: dict) -> str:
    """The model's single boundary mode (``imexdepth.boundary``); mixed modes are refused."""
    boundary = nets.model_options(model).get("boundary", "periodic")
    used = {n["boundary"] for n in arch["nodes"] if n["op"] == "imex"}
    if used - {boundary}:
        raise ExportError(f"imex nodes use boundary modes {sorted(used)}, the model's option "
                          f"says {boundary!r}; one mode per file")
    return boundary


def build_onnx(model: nn.Module, height: int, width: int, training: dict[str, Any],
               batch: int = 1) -> onnx.ModelProto:
    """The ONNX model of ``model`` for a fixed ``batch x C x height x width`` input."""
    arch, weights = model.describe()
    spec_in, spec_out = model.io_spec(height, width, batch)
    shapes = nets.infer_shapes(arch, weights, tuple(spec_in["shape"]))
    g = GraphBuilder(weights)
    for node in arch["nodes"]:
        emit_node(g, node, shapes)
    boundary = model_boundary(model, arch)
    graph = helper.make_graph(
        g.nodes, arch["name"],
        [helper.make_tensor_value_info(arch["input"], TensorProto.FLOAT, spec_in["shape"])],
        [helper.make_tensor_value_info(arch["output"], TensorProto.FLOAT,
                                       list(shapes[arch["output"]]))],
        [numpy_helper.from_array(v, name) for name, v in g.initializers.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="imexdepth_train", ir_version=IR_VERSION)
    meta = {
        "imexdepth.format": "1",
        "imexdepth.arch": json.dumps(arch),
        "imexdepth.input": json.dumps(spec_in),
        "imexdepth.output": json.dumps(spec_out),
        "imexdepth.boundary": boundary,
        "imexdepth.training": json.dumps(training, sort_keys=True),
        "imexdepth.exporter": exporter_string(),
    }
    helper.set_model_props(proto, meta)
    return proto


# --------------------------------------------------------------------------------------------
# Checks and export


@dataclass
class Parity:
    """ORT-vs-PyTorch agreement on one input."""

    max_abs: float
    max_ref: float
    relative: float
    elementwise_rel: float

    def as_dict(self) -> dict[str, float]:
        return {"max_abs": self.max_abs, "max_ref": self.max_ref, "relative": self.relative,
                "elementwise_rel": self.elementwise_rel}


def compare(got: np.ndarray, want: np.ndarray) -> Parity:
    """``relative = max|got - want| / max|want|``; ``elementwise_rel`` = max of
    ``|got - want| / max(|want|, 1e-6 max|want|)``. NaN anywhere gives ``inf``."""
    if got.shape != want.shape:
        raise ExportError(f"output shape {got.shape} differs from PyTorch's {want.shape}")
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    ref = float(np.max(np.abs(want))) if want.size else 0.0
    if not (np.all(np.isfinite(got)) and np.all(np.isfinite(want))):
        return Parity(math.inf, ref, math.inf, math.inf)
    floor = max(ref * 1e-6, np.finfo(np.float32).tiny)
    elem = diff / np.maximum(np.abs(want), floor)
    max_abs = float(diff.max())
    return Parity(max_abs, ref, max_abs / max(ref, floor), float(elem.max()))


def run_ort(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Runs the model on ONNX Runtime's CPU provider."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(proto.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: x})[0]


def sample_input(shape: list[int], seed: int) -> np.ndarray:
    """A seeded uniform ``[0, 1)`` float32 input."""
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def check_export(model: nn.Module, proto: onnx.ModelProto, x: np.ndarray) -> Parity:
    """``onnx.checker`` (full) and ORT-vs-PyTorch parity; raises ``ExportError`` on failure."""
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as err:
        raise ExportError(f"onnx.checker refused the graph: {err}") from err
    with torch.no_grad():
        want = model.eval()(torch.from_numpy(x)).numpy()
    parity = compare(run_ort(proto, x), want)
    if not parity.relative <= PARITY_TOLERANCE:
        raise ExportError(f"ONNX Runtime differs from PyTorch: relative {parity.relative:.3g} > "
                          f"{PARITY_TOLERANCE} (max abs {parity.max_abs:.3g})")
    return parity


def export_model(model: nn.Module, height: int, width: int, out: str | Path,
                 training: dict[str, Any], seed: int = 0, batch: int = 1) -> Parity:
    """Builds, checks and (only if the checks pass) writes the ONNX file.

    Returns:
        The parity figures of the check.
    """
    model = model.eval()
    proto = build_onnx(model, height, width, training, batch)
    spec_in, _ = model.io_spec(height, width, batch)
    parity = check_export(model, proto, sample_input(spec_in["shape"], seed))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(proto.SerializeToString())
    log.info("wrote %s (parity: relative %.3g, elementwise %.3g)", out, parity.relative,
             parity.elementwise_rel)
    return parity


def parse_size(text: str) -> tuple[int, int]:
    """``"240x320"`` -> ``(240, 320)`` (height x width)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"--size expects HEIGHTxWIDTH such as 240x320, got "
                                         f"{text!r}")
    return int(parts[0]), int(parts[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imexdepth_train.export",
                                     description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="checkpoint written by the trainer")
    source.add_argument("--random-init", metavar="ARCH", help="export an untrained ARCH")
    parser.add_argument("--arch", help="with --checkpoint: refuse any other architecture")
    parser.add_argument("--options", type=json.loads, default={},
                        help="with --random-init: JSON object of architecture options")
    parser.add_argument("--seed", type=int, default=0, help="random-init seed")
    parser.add_argument("--size", type=parse_size, default=(240, 320), help="HEIGHTxWIDTH")
    parser.add_argument("--batch", type=int, default=1,
                        help="fixed batch size (1 for depth models, N for Q-tips models)")
    parser.add_argument("--out", type=Path, required=True, help="output .onnx path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    height, width = args.size
    try:
        if args.checkpoint:
            model, ckpt = load_checkpoint(args.checkpoint, args.arch)
            training = ckpt["training"]
        else:
            torch.manual_seed(args.seed)
            model = nets.build_model(args.random_init, **args.options)
            training = {"random_init": True, "seed": args.seed}
        parity = export_model(model, height, width, args.out, training, batch=args.batch)
    except (CheckpointError, ExportError, ValueError) as err:
        log.error("%s", err)
        return 1
    print(json.dumps({"out": str(args.out), "parity": parity.as_dict()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
