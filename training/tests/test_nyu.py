"""NYU Depth v2 loader on tiny HDF5 files with the real file's (MATLAB-transposed) layout."""

import h5py
import numpy as np
import pytest

from imexdepth_train.nyu import NyuDepth, NyuFormatError

N, W, H = 5, 64, 48


def write_nyu(path, images=None, depths=None, skip=()):
    rows, cols = np.mgrid[0:H, 0:W]
    img_hw = np.zeros((N, H, W, 3), np.uint8)
    img_hw[..., 0] = (cols * 4).astype(np.uint8)  # red grows to the right
    img_hw[..., 1] = (rows * 5).astype(np.uint8)  # green grows downwards
    depth_hw = np.broadcast_to(1.0 + rows / 10.0, (N, H, W)).astype(np.float32).copy()
    depth_hw[:, :4, :4] = 0.0  # no depth in the top-left corner
    with h5py.File(path, "w") as f:
        if "images" not in skip:
            f["images"] = images if images is not None else img_hw.transpose(0, 3, 2, 1)
        if "depths" not in skip:
            f["depths"] = depths if depths is not None else depth_hw.transpose(0, 2, 1)
    return path


def test_loads_transposed_layout_upright(tmp_path):
    path = write_nyu(tmp_path / "nyu.mat")
    train, val = NyuDepth(path, "train", 24, 32), NyuDepth(path, "val", 24, 32)
    assert len(train) == 4 and len(val) == 1
    s = train[0]
    assert s["image"].shape == (3, 24, 32) and s["depth"].shape == (1, 24, 32)
    red, green = s["image"][0].numpy(), s["image"][1].numpy()
    assert np.all(np.diff(red.mean(0)) > 0) and np.all(np.diff(green.mean(1)) > 0)
    depth, valid = s["depth"][0].numpy(), s["valid"][0].numpy()
    assert not valid[0, 0] and valid[-1, -1]
    assert np.all(np.diff(depth[5:, 10]) > 0)  # depth grows with the row, as written
    np.testing.assert_allclose(depth[-1, 10], 1.0 + 46.5 / 10.0, atol=0.01)


def test_untransposed_layout_is_refused(tmp_path):
    images = np.zeros((N, 3, H, W), np.uint8)  # [N,3,H,W]: not MATLAB's layout
    path = write_nyu(tmp_path / "bad.mat", images=images, depths=np.zeros((N, H, W), np.float32))
    with pytest.raises(NyuFormatError, match=r"\[N, 3, W, H\].*not transposed"):
        NyuDepth(path)


def test_channels_last_and_bad_depths_are_refused(tmp_path):
    path = write_nyu(tmp_path / "hwc.mat", images=np.zeros((N, W, H, 3), np.uint8))
    with pytest.raises(NyuFormatError, match=r"'images' of shape \[N, 3, W, H\]"):
        NyuDepth(path)
    path = write_nyu(tmp_path / "depth.mat", depths=np.zeros((N, H, W), np.float32))
    with pytest.raises(NyuFormatError, match=r"'depths' of shape \[N, W, H\]"):
        NyuDepth(path)


def test_missing_key_and_missing_file(tmp_path):
    path = write_nyu(tmp_path / "nodepth.mat", skip=("depths",))
    with pytest.raises(NyuFormatError, match=r"'depths'.*found keys \['images'\]"):
        NyuDepth(path)
    with pytest.raises(NyuFormatError, match="no such file"):
        NyuDepth(tmp_path / "absent.mat")
    (tmp_path / "text.mat").write_text("MATLAB 5.0 MAT-file")
    with pytest.raises(NyuFormatError, match="HDF5"):
        NyuDepth(tmp_path / "text.mat")
