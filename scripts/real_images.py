"""Writes real photographs shipped in scikit-image to a folder, as the bundled real input.

The Middlebury 2014 Motorcycle pair comes with its ground-truth disparity, converted to metric
depth (16-bit PNG, millimetres) with the calibration published for it.
"""

import sys
from pathlib import Path

import numpy as np
import skimage.data
import skimage.io

# Middlebury 2014 Motorcycle calibration (calib.txt of the data set).
MOTORCYCLE_FOCAL_PX = 994.978
MOTORCYCLE_BASELINE_MM = 193.001
MOTORCYCLE_DOFFS = 31.086

PHOTOS = ["coffee", "chelsea", "astronaut", "rocket"]


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    left, _right, disparity = skimage.data.stereo_motorcycle()
    skimage.io.imsave(out / "motorcycle.png", left, check_contrast=False)
    valid = np.isfinite(disparity) & (disparity > 0)
    depth_mm = np.zeros(disparity.shape, np.float64)
    depth_mm[valid] = MOTORCYCLE_FOCAL_PX * MOTORCYCLE_BASELINE_MM / (
        disparity[valid] + MOTORCYCLE_DOFFS
    )
    gt = out / "gt"
    gt.mkdir(exist_ok=True)
    skimage.io.imsave(
        gt / "motorcycle.depth.png", np.clip(depth_mm, 0, 65535).astype(np.uint16),
        check_contrast=False,
    )
    for name in PHOTOS:
        skimage.io.imsave(out / f"{name}.png", getattr(skimage.data, name)(), check_contrast=False)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
