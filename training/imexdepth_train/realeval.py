"""Real-data evaluation: the Middlebury 2014 Motorcycle pair shipped in scikit-image.

Ground truth: the left image and its float disparity from ``skimage.data.stereo_motorcycle()``,
converted with the published calibration to metric depth ``Z = f B / (d + doffs)`` (f in pixels,
B in metres, doffs in pixels); pixels whose disparity is not finite or <= 0 are invalid.

Fitting the 500x741 frame to the model's 240x320 input, honestly: the 4:3 centre crop
(all 500 rows, columns 37..703, 667 wide), then area averaging by 2.08 in both directions. Depth
is averaged over the valid ground-truth pixels inside each output pixel's footprint; an output
pixel is valid only when at least half of its footprint is. The crop narrows the horizontal
field of view from 41 to 37 degrees, against 60-70 in the synthetic training frames, so metric
scale is not expected to transfer: the median-scaled and ranking metrics are the ones to read.

Baselines printed beside every model:

- ``constant``: one depth everywhere (ordinal accuracy 0.5, Spearman 0 by definition);
- ``row_prior``: depth rising with height in the image, ``exp(ln 4 * (1 - (i + 0.5) / H))`` for
  row i (the bottom row nearest, the top four times as far), what a floor seen from above gives.

``python -m imexdepth_train.realeval --checkpoint CKPT [--checkpoint CKPT ...] [--out DIR]``
prints the table (at each checkpoint's training size) and writes qualitative PNGs (input beside
predicted depth) for the Motorcycle image, the real photos in scikit-image and Debian's
opencv-doc examples when installed.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from imexdepth_train import metrics

logger = logging.getLogger(__name__)

# Middlebury 2014 Motorcycle calibration (calib.txt of the data set).
MOTORCYCLE_FOCAL_PX = 994.978
MOTORCYCLE_BASELINE_M = 0.193001
MOTORCYCLE_DOFFS_PX = 31.086
HEIGHT, WIDTH = 240, 320
ROW_PRIOR_RANGE = 4.0

SKIMAGE_PHOTOS = ["coffee", "chelsea", "astronaut"]
OPENCV_DOC_DIR = Path("/usr/share/doc/opencv-doc/examples/data")
OPENCV_DOC_PHOTOS = ["home.jpg", "fruits.jpg", "building.jpg", "baboon.jpg", "stuff.jpg",
                     "board.jpg", "apple.jpg", "messi5.jpg", "left01.jpg", "aloeL.jpg"]

def centre_crop_box(h: int, w: int, aspect: float) -> tuple[int, int, int, int]:
    """The largest centred (left, top, right, bottom) box of ``aspect`` = width / height."""
    if w / h > aspect:
        cw = int(round(h * aspect))
        left = (w - cw) // 2
        return left, 0, left + cw, h
    ch = int(round(w / aspect))
    top = (h - ch) // 2
    return 0, top, w, top + ch


def fit_image(rgb: np.ndarray, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """uint8 [H0,W0,3] to float32 [3,height,width] in [0,1]: centre crop, area averaging."""
    img = Image.fromarray(rgb[..., :3]).crop(centre_crop_box(*rgb.shape[:2], width / height))
    img = img.resize((width, height), Image.Resampling.BOX)
    return np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0


def fit_depth(depth: np.ndarray, valid: np.ndarray, height: int = HEIGHT, width: int = WIDTH):
    """Valid-weighted area averaging of depth; valid where at least half the footprint is."""
    box = centre_crop_box(*depth.shape, width / height)
    def area(a: np.ndarray) -> np.ndarray:
        img = Image.fromarray(a.astype(np.float32), mode="F").crop(box)
        return np.asarray(img.resize((width, height), Image.Resampling.BOX), np.float64)
    weight = area(valid)
    total = area(np.where(valid, depth, 0.0))
    ok = weight >= 0.5
    out = np.full((height, width), np.nan, np.float32)
    out[ok] = total[ok] / weight[ok]
    return out, ok


def motorcycle(height: int = HEIGHT, width: int = WIDTH):
    """Image float32 [3,H,W], depth float32 [H,W] metres (NaN invalid), valid bool [H,W]."""
    import skimage.data

    left, _right, disparity = skimage.data.stereo_motorcycle()
    valid = np.isfinite(disparity) & (disparity > 0)
    depth = np.zeros(disparity.shape, np.float64)
    depth[valid] = MOTORCYCLE_FOCAL_PX * MOTORCYCLE_BASELINE_M / (
        disparity[valid] + MOTORCYCLE_DOFFS_PX)
    image = fit_image(left, height, width)
    depth, ok = fit_depth(depth, valid, height, width)
    return image, depth, ok


def row_prior(height: int, width: int) -> np.ndarray:
    """The baseline depth map of the module doc: bottom row 1, top row ``ROW_PRIOR_RANGE``."""
    rows = (np.arange(height) + 0.5) / height
    col = np.exp(np.log(ROW_PRIOR_RANGE) * (1.0 - rows))
    return np.repeat(col[:, None], width, axis=1).astype(np.float32)


def baselines(height: int, width: int) -> dict[str, np.ndarray]:
    return {"constant": np.ones((height, width), np.float32), "row_prior": row_prior(height, width)}


@torch.no_grad()
def predict(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """Depth [H,W] of one image [3,H,W] through a model in eval mode (mode restored)."""
    was_training = model.training
    model.eval()
    try:
        out = model(torch.from_numpy(np.ascontiguousarray(image))[None])
    finally:
        model.train(was_training)
    return out[0, 0].double().numpy()


def evaluate(models: dict[str, torch.nn.Module], height: int = HEIGHT, width: int = WIDTH):
    """Metrics on Motorcycle for the baselines and each model: {name: metrics}."""
    image, depth, valid = motorcycle(height, width)
    results = {name: metrics.depth_metrics(pred, depth, valid)
               for name, pred in baselines(height, width).items()}
    for name, model in models.items():
        results[name] = metrics.depth_metrics(predict(model, image), depth, valid)
    return results


TABLE_COLUMNS = ["ordinal", "spearman", "abs_rel_ms", "rmse_ms", "delta1_ms", "abs_rel", "delta1"]


def format_table(results: dict[str, dict[str, float]], title: str = "Middlebury Motorcycle") -> str:
    """A fixed-width table, one row per model or baseline."""
    name_w = max(12, *(len(n) for n in results))
    head = f"{title:<{name_w}} " + " ".join(f"{c:>10}" for c in TABLE_COLUMNS)
    rows = [head]
    for name, m in results.items():
        rows.append(f"{name:<{name_w}} " + " ".join(f"{m[c]:>10.4f}" for c in TABLE_COLUMNS))
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------
# Qualitative output

# Anchors of a perceptually ordered dark-to-bright ramp (near = bright), written for this file.
RAMP = np.array([[0.05, 0.03, 0.15], [0.35, 0.07, 0.45], [0.72, 0.18, 0.38],
                 [0.95, 0.45, 0.18], [0.99, 0.85, 0.35], [0.99, 0.99, 0.80]], np.float32)


def colorize(depth: np.ndarray) -> np.ndarray:
    """Depth [H,W] to uint8 RGB, nearer brighter, over the 2-98th percentile of inverse depth."""
    inv = 1.0 / np.maximum(depth, 1e-3)
    finite = inv[np.isfinite(inv)]
    lo, hi = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))
    t = np.clip((inv - lo) / max(hi - lo, 1e-6), 0, 1)
    t = np.nan_to_num(t) * (len(RAMP) - 1)
    k = np.minimum(t.astype(int), len(RAMP) - 2)
    f = (t - k)[..., None]
    rgb = RAMP[k] * (1 - f) + RAMP[k + 1] * f
    return (rgb * 255 + 0.5).astype(np.uint8)


def real_photos(height: int = HEIGHT, width: int = WIDTH) -> dict[str, np.ndarray]:
    """Motorcycle, scikit-image's photos and opencv-doc examples, fitted to the model size."""
    import skimage.data

    photos = {"motorcycle": motorcycle(height, width)[0]}
    for name in SKIMAGE_PHOTOS:
        photos[name] = fit_image(np.asarray(getattr(skimage.data, name)()), height, width)
    for name in OPENCV_DOC_PHOTOS:
        path = OPENCV_DOC_DIR / name
        if path.exists():
            rgb = np.asarray(Image.open(path).convert("RGB"))
            photos[Path(name).stem] = fit_image(rgb, height, width)
    if not (OPENCV_DOC_DIR / OPENCV_DOC_PHOTOS[0]).exists():
        logger.warning("%s not found (apt-get install opencv-doc): skipping its photos",
                       OPENCV_DOC_DIR)
    return photos


def write_qualitative(models: dict[str, torch.nn.Module], out: Path,
                      height: int = HEIGHT, width: int = WIDTH) -> list[Path]:
    """One PNG per photo: the input, then each model's depth, then the row prior."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    prior = colorize(row_prior(height, width))
    for name, image in real_photos(height, width).items():
        tiles = [(image.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)]
        tiles += [colorize(predict(m, image)) for m in models.values()]
        tiles.append(prior)
        path = out / f"{name}.png"
        Image.fromarray(np.concatenate(tiles, axis=1)).save(path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Evaluate depth checkpoints on real data.")
    parser.add_argument("--checkpoint", type=Path, action="append", required=True)
    parser.add_argument("--out", type=Path, default=Path("out/realeval"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    from imexdepth_train.train import model_from_checkpoint

    by_size: dict[tuple[int, int], dict[str, torch.nn.Module]] = {}
    for path in args.checkpoint:
        model, ckpt = model_from_checkpoint(path)
        config = ckpt["training"].get("config", {})
        size = (int(config.get("height", HEIGHT)), int(config.get("width", WIDTH)))
        by_size.setdefault(size, {})[f"{ckpt['arch']}:{path.stem}"] = model
    for (h, w), models in by_size.items():
        print(format_table(evaluate(models, h, w), f"Motorcycle {w}x{h}"))
        for path in write_qualitative(models, args.out / f"{w}x{h}", h, w):
            logger.info("wrote %s", path)

if __name__ == "__main__":
    main()
