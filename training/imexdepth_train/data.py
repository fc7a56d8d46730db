"""Datasets over the synthetic frame cache written by :mod:`imexdepth_train.render`.

A sample is ``dict(image=float32 [3,H,W] RGB in [0,1], depth=float32 [1,H,W] metres,
valid=bool [1,H,W])``. Depth files are 16-bit PNG in millimetres with 0 meaning no depth.

Training augmentation: horizontal flip (depth flips with the image, so geometry stays right)
and colour jitter (brightness, contrast, saturation, per-channel gain). No vertical flips or
rotations: up and down carry depth cues (floor near the bottom) that real webcams keep.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from imexdepth_train import render

logger = logging.getLogger(__name__)


class CacheError(Exception):
    """A cache file is missing, unreadable or not what the renderer writes."""

    def __init__(self, path: Path, expected: str, found: str):
        self.path, self.expected, self.found = Path(path), expected, found
        super().__init__(f"{path}: expected {expected}, found {found}")


def read_png(path: Path, mode: str, shape: tuple[int, int] | None) -> np.ndarray:
    """Reads one PNG, checking its pixel mode and size; errors name the file."""
    if not path.exists():
        raise CacheError(path, f"a {mode} PNG written by imexdepth_train.render", "no such file")
    try:
        with Image.open(path) as img:
            img.load()
            found_mode, arr = img.mode, np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise CacheError(path, f"a readable {mode} PNG", f"a corrupt file ({err})") from err
    if mode == "RGB" and found_mode != "RGB":
        raise CacheError(path, "an RGB image", f"mode {found_mode}")
    if mode == "I;16" and arr.dtype != np.uint16:
        raise CacheError(path, "a 16-bit depth PNG (mm)", f"mode {found_mode}, dtype {arr.dtype}")
    if shape is not None and arr.shape[:2] != shape:
        raise CacheError(path, f"size {shape[0]}x{shape[1]}", f"{arr.shape[0]}x{arr.shape[1]}")
    return arr


def load_frame(root: Path, split: str, index: int, shape=None) -> dict[str, torch.Tensor]:
    """One cached frame as tensors (see the module doc)."""
    img_path, depth_path = render.frame_paths(Path(root), split, index)
    image = read_png(img_path, "RGB", shape)
    mm = read_png(depth_path, "I;16", image.shape[:2])
    depth = mm.astype(np.float32) / 1000.0
    return {
        "image": torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1).contiguous(),
        "depth": torch.from_numpy(depth)[None],
        "valid": torch.from_numpy(mm > 0)[None],
    }


def color_jitter(image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation and white-balance jitter, clipped to [0, 1]."""
    u = torch.rand(6, generator=gen)
    brightness = 0.75 + 0.5 * u[0]
    contrast = 0.75 + 0.5 * u[1]
    saturation = 0.7 + 0.6 * u[2]
    gains = 0.92 + 0.16 * u[3:6]
    x = image * brightness * gains[:, None, None]
    mean = x.mean()
    x = mean + (x - mean) * contrast
    luma = x.mean(0, keepdim=True)
    x = luma + (x - luma) * saturation
    return x.clamp(0.0, 1.0)


def augment(sample: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Training augmentation: horizontal flip with probability 1/2, then colour jitter."""
    if torch.rand(1, generator=gen).item() < 0.5:
        sample = {k: v.flip(-1) for k, v in sample.items()}
    sample["image"] = color_jitter(sample["image"], gen)
    return sample


class SyntheticDepth(Dataset):
    """Frames ``0..count-1`` of one split of a cache folder ``<root>/<version-hash>``.

    Args:
        root: the version folder (what :func:`render.generate` returns).
        split: ``"train"`` or ``"val"``.
        count: number of frames; defaults to the count in ``meta.json``.
        augment: apply training augmentation, seeded by ``seed``, the epoch and the index, so a
            resumed run sees the same samples as an uninterrupted one.
    """

    def __init__(self, root: Path, split: str, count: int | None = None,
                 augment: bool = False, seed: int = 0):
        self.root, self.split = Path(root), split
        meta_path = self.root / "meta.json"
        if not meta_path.exists():
            raise CacheError(meta_path, "meta.json of a render cache", "no such file")
        try:
            meta = json.loads(meta_path.read_text())
            self.shape = (int(meta["height"]), int(meta["width"]))
            available = int(meta[split])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise CacheError(meta_path, f"JSON with height, width and {split}", repr(err)) from err
        self.count = available if count is None else count
        if self.count > available:
            raise CacheError(meta_path, f"at least {self.count} {split} frames", str(available))
        self.augment, self.seed, self.epoch = augment, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = load_frame(self.root, self.split, index, self.shape)
        if self.augment:
            gen = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) & 0x7FFFFFFF)
            sample = augment(sample, gen)
        return sample
