"""NYU Depth v2 labelled set (``nyu_depth_v2_labeled.mat``, MATLAB v7.3 = HDF5) as a Dataset.

MATLAB stores arrays column-major, so h5py sees the axes reversed: ``images`` is
``[N, 3, W, H]`` uint8 and ``depths`` is ``[N, W, H]`` float metres (W = 640, H = 480 in the
real file). Each sample is transposed back to row-major ``[3, H, W]``, then resized to the
model size (area averaging for the image; depth averaged over valid pixels, valid where at
least half the footprint has depth) and returned in the layout of :mod:`imexdepth_train.data`.

Split: the file holds no split, so frames are split by index, the last ``val_fraction`` for
validation (consecutive frames of one scene stay mostly on one side).
"""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from imexdepth_train.data import augment as augment_sample
from imexdepth_train.realeval import fit_depth, fit_image

logger = logging.getLogger(__name__)


class NyuFormatError(Exception):
    """The file is not an NYU Depth v2 labelled .mat in MATLAB's transposed HDF5 layout."""

    def __init__(self, path: Path, expected: str, found: str):
        self.path, self.expected, self.found = Path(path), expected, found
        super().__init__(f"{path}: expected {expected}, found {found}")


def check_layout(path: Path, f: h5py.File) -> int:
    """Checks keys, ranks, dtypes and shapes; returns the number of frames."""
    for key in ("images", "depths"):
        if key not in f:
            raise NyuFormatError(path, "HDF5 datasets 'images' and 'depths'",
                                 f"keys {sorted(f.keys())}")
    images, depths = f["images"], f["depths"]
    if images.ndim != 4 or images.shape[1] != 3:
        raise NyuFormatError(path, "'images' of shape [N, 3, W, H] (MATLAB's transposed layout)",
                             f"shape {list(images.shape)}")
    if images.dtype != np.uint8:
        raise NyuFormatError(path, "'images' of dtype uint8", f"dtype {images.dtype}")
    n, _, w, h = images.shape
    if w < h:
        raise NyuFormatError(path, "'images' [N, 3, W, H] with W >= H (landscape, W = 640)",
                             f"shape {list(images.shape)}: is it [N, 3, H, W], not transposed?")
    if depths.shape != (n, w, h):
        raise NyuFormatError(path, f"'depths' of shape [N, W, H] = {[n, w, h]}",
                             f"shape {list(depths.shape)}")
    if not np.issubdtype(depths.dtype, np.floating):
        raise NyuFormatError(path, "'depths' of a float dtype (metres)", f"dtype {depths.dtype}")
    return n


class NyuDepth(Dataset):
    """Frames of one split of the labelled NYU Depth v2 file.

    Args:
        path: the ``.mat`` file.
        split: ``"train"`` or ``"val"``.
        height, width: the model size.
        val_fraction: share of frames (the last ones) used for validation.
        augment: training augmentation as in :mod:`imexdepth_train.data`.
    """

    def __init__(self, path: Path, split: str = "train", height: int = 240, width: int = 320,
                 val_fraction: float = 0.1, augment: bool = False, seed: int = 0):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.path, self.shape = Path(path), (height, width)
        if not self.path.exists():
            raise NyuFormatError(self.path, "the NYU Depth v2 labelled .mat file", "no such file")
        try:
            with h5py.File(self.path, "r") as f:
                n = check_layout(self.path, f)
        except OSError as err:
            raise NyuFormatError(self.path, "an HDF5 file (MATLAB v7.3 .mat)", str(err)) from err
        n_val = max(1, int(round(n * val_fraction))) if n > 1 else 0
        first = n - n_val
        self.indices = list(range(first)) if split == "train" else list(range(first, n))
        self.augment, self.seed, self.epoch = augment, seed, 0
        self._file: h5py.File | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def _h5(self) -> h5py.File:
        if self._file is None:  # opened lazily, once per DataLoader worker
            self._file = h5py.File(self.path, "r")
        return self._file

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        k = self.indices[i]
        f = self._h5()
        rgb = np.asarray(f["images"][k]).transpose(2, 1, 0)  # [3,W,H] -> [H,W,3]
        depth = np.asarray(f["depths"][k], np.float64).T  # [W,H] -> [H,W]
        valid = np.isfinite(depth) & (depth > 0)
        image = fit_image(np.ascontiguousarray(rgb), *self.shape)
        depth, ok = fit_depth(depth, valid, *self.shape)
        sample = {"image": torch.from_numpy(image),
                  "depth": torch.from_numpy(np.nan_to_num(depth, nan=0.0))[None],
                  "valid": torch.from_numpy(ok)[None]}
        if self.augment:
            gen = torch.Generator().manual_seed(hash((self.seed, self.epoch, k)) & 0x7FFFFFFF)
            sample = augment_sample(sample, gen)
        return sample

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"] = None  # h5py handles do not pickle
        return state
