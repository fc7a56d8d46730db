"""Depth metrics of the monocular depth literature, computed over valid pixels.

With ``pred`` and ``gt`` the predicted and true depth (metres) at valid pixels:

- ``abs_rel`` = mean(|pred - gt| / gt), ``sq_rel`` = mean((pred - gt)^2 / gt)
- ``rmse`` = sqrt(mean((pred - gt)^2)), ``rmse_log`` = sqrt(mean((ln pred - ln gt)^2))
- ``delta1/2/3`` = fraction of pixels with max(pred/gt, gt/pred) < 1.25, 1.25^2, 1.25^3
- ``*_ms``: the same after median scaling, pred * median(gt) / median(pred), which removes the
  global scale a monocular network cannot know.
- ``ordinal``: over random pixel pairs whose true depths differ by more than 10%
  (max/min > 1.1), the fraction whose predicted order matches; a tie in the prediction counts
  one half, so a constant prediction scores exactly 0.5.
- ``spearman``: rank correlation of pred and gt (ties get average ranks); 0 for a constant
  prediction, whose correlation is undefined.

The ranking metrics need no scale and are the ones that tell whether a net beats the trivial
"lower rows are nearer" prior on real photos.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

ORDINAL_PAIRS = 100_000
ORDINAL_MIN_RATIO = 1.1
DEPTH_FLOOR_M = 1e-3


def _valid(pred, gt, valid) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, np.float64).ravel(), np.asarray(gt, np.float64).ravel()
    if pred.shape != gt.shape:
        raise ValueError(f"prediction has {pred.size} pixels, ground truth {gt.size}")
    mask = np.isfinite(gt) & (gt > 0)
    if valid is not None:
        mask &= np.asarray(valid, bool).ravel()
    if not mask.any():
        raise ValueError("no valid ground-truth pixel")
    return pred[mask], gt[mask]


def errors(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """abs_rel, sq_rel, rmse, rmse_log, delta1-3 of 1-D arrays of positive depths."""
    pred = np.maximum(pred, DEPTH_FLOOR_M)
    ratio = np.maximum(pred / gt, gt / pred)
    diff = pred - gt
    return {
        "abs_rel": float(np.mean(np.abs(diff) / gt)),
        "sq_rel": float(np.mean(diff**2 / gt)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(pred) - np.log(gt)) ** 2))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
    }


def median_scaled(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    return pred * (np.median(gt) / max(float(np.median(pred)), DEPTH_FLOOR_M))


def ordinal_accuracy(pred: np.ndarray, gt: np.ndarray, pairs: int = ORDINAL_PAIRS,
                     seed: int = 0, min_ratio: float = ORDINAL_MIN_RATIO) -> float:
    """Share of random pairs (true depths differing by more than ``min_ratio``) ordered right."""
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(gt), (2, pairs))
    g1, g2 = gt[i], gt[j]
    keep = np.maximum(g1, g2) > min_ratio * np.minimum(g1, g2)
    if not keep.any():
        return float("nan")
    true_order = np.sign(g1[keep] - g2[keep])
    pred_order = np.sign(pred[i][keep] - pred[j][keep])
    score = np.where(pred_order == 0, 0.5, (pred_order == true_order).astype(np.float64))
    return float(score.mean())


def spearman(pred: np.ndarray, gt: np.ndarray) -> float:
    if np.ptp(pred) == 0 or np.ptp(gt) == 0:
        return 0.0
    return float(stats.spearmanr(pred, gt).statistic)


def depth_metrics(pred, gt, valid=None, seed: int = 0) -> dict[str, float]:
    """Every metric of the module doc for one image (arrays of any matching shape)."""
    p, g = _valid(pred, gt, valid)
    out = errors(p, g)
    out.update({f"{k}_ms": v for k, v in errors(median_scaled(p, g), g).items()})
    out["ordinal"] = ordinal_accuracy(p, g, seed=seed)
    out["spearman"] = spearman(p, g)
    return out


def mean_metrics(per_image: list[dict[str, float]]) -> dict[str, float]:
    """Average of per-image metrics (each image weighs the same)."""
    if not per_image:
        return {}
    return {k: float(np.nanmean([m[k] for m in per_image])) for k in per_image[0]}
