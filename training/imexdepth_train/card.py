"""Figures and pictures of the model card (``models/README.md``) from trained checkpoints.

``python -m imexdepth_train.card --checkpoint A.pt --checkpoint B.pt --out ../models/card``
evaluates each checkpoint and the two baselines (constant depth, row prior) on the synthetic
validation frames (all of them unless ``--val-limit``) and on the Middlebury Motorcycle frame,
prints both tables as Markdown, writes them with every metric to ``OUT/metrics.json``, and writes
one PNG per real photo: the input, each model's depth, the row prior (nearer is brighter; for
Motorcycle the ground truth comes last).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from imexdepth_train import metrics, realeval, render
from imexdepth_train.data import SyntheticDepth

logger = logging.getLogger(__name__)

COLUMNS = ["abs_rel_ms", "delta1_ms", "ordinal", "spearman", "abs_rel", "delta1", "rmse_ms"]


def synthetic_val(models: dict[str, torch.nn.Module], cfg: dict, limit: int) -> dict:
    """Mean per-image metrics on the validation frames for the baselines and each model."""
    root = Path(cfg["synth_root"]) / render.version_hash(cfg["synth_seed"], cfg["height"],
                                                         cfg["width"])
    val = SyntheticDepth(root, "val", cfg["val_frames"])
    count = len(val) if limit <= 0 else min(limit, len(val))
    preds = dict(realeval.baselines(cfg["height"], cfg["width"]))
    per_image: dict[str, list] = {name: [] for name in [*preds, *models]}
    for i in range(count):
        s = val[i]
        gt, valid = s["depth"][0].numpy(), s["valid"][0].numpy()
        for name, pred in preds.items():
            per_image[name].append(metrics.depth_metrics(pred, gt, valid))
        for name, model in models.items():
            per_image[name].append(
                metrics.depth_metrics(realeval.predict(model, s["image"].numpy()), gt, valid))
    return {name: metrics.mean_metrics(rows) for name, rows in per_image.items()}, count


def markdown(results: dict[str, dict[str, float]]) -> str:
    head = "| | " + " | ".join(COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    rows = [f"| {name} | " + " | ".join(f"{m[c]:.3f}" for c in COLUMNS) + " |"
            for name, m in results.items()]
    return "\n".join([head, rule, *rows])


def write_pictures(models: dict[str, torch.nn.Module], out: Path, height: int,
                   width: int) -> list[Path]:
    """Input | each model | row prior (| ground truth for Motorcycle), one PNG per photo."""
    out.mkdir(parents=True, exist_ok=True)
    prior = realeval.colorize(realeval.row_prior(height, width))
    written = []
    for name, image in realeval.real_photos(height, width).items():
        tiles = [(image.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)]
        tiles += [realeval.colorize(realeval.predict(m, image)) for m in models.values()]
        tiles.append(prior)
        if name == "motorcycle":
            _, depth, _ = realeval.motorcycle(height, width)
            tiles.append(realeval.colorize(depth))
        path = out / f"{name}.png"
        Image.fromarray(np.concatenate(tiles, axis=1)).save(path, optimize=True)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Model-card figures and pictures.")
    parser.add_argument("--checkpoint", type=Path, action="append", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--val-limit", type=int, default=0, help="0 = every validation frame")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    from imexdepth_train.train import model_from_checkpoint

    models, cfg = {}, {}
    for path in args.checkpoint:
        model, ckpt = model_from_checkpoint(path)
        models[f"{ckpt['arch']} @ step {ckpt['training']['step']}"] = model
        cfg = ckpt["training"]["config"]
    h, w = cfg["height"], cfg["width"]
    synth, count = synthetic_val(models, cfg, args.val_limit)
    real = realeval.evaluate(models, h, w)
    print(f"Synthetic validation ({count} frames)\n\n{markdown(synth)}\n")
    print(f"Middlebury Motorcycle ({w}x{h})\n\n{markdown(real)}\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(
        {"synthetic_val": synth, "synthetic_val_frames": count, "motorcycle": real}, indent=1))
    for path in write_pictures(models, args.out, h, w):
        logger.info("wrote %s", path)


if __name__ == "__main__":
    main()
