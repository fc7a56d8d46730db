"""Renderer and cache dataset: determinism, planar depth, cache reuse, bad cache files."""

from pathlib import Path

import numpy as np
import pytest
import torch

from imexdepth_train import render
from imexdepth_train.data import CacheError, SyntheticDepth, augment, load_frame

H, W = 48, 64


def test_same_seed_same_frame_and_other_index_differs():
    a_img, a_depth = render.render_frame(render.frame_seed(7, "train", 3), H, W)
    b_img, b_depth = render.render_frame(render.frame_seed(7, "train", 3), H, W)
    c_img, _ = render.render_frame(render.frame_seed(7, "train", 4), H, W)
    assert a_img.shape == (H, W, 3) and a_img.dtype == np.uint8
    assert a_depth.shape == (H, W) and a_depth.dtype == np.float32
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_depth, b_depth)
    assert np.abs(a_img.astype(int) - c_img.astype(int)).mean() > 5


def test_depth_is_planar_z_not_ray_distance():
    scene = render.Scene()
    m = scene.material(render.paint(np.random.default_rng(0), "wall"))
    scene.shapes.append(render.quad([-50, -50, 3.0], [100, 0, 0], [0, 100, 0], m))
    scene.camera = render.Camera(np.zeros(3, np.float32), np.eye(3, dtype=np.float32), 65.0)
    depth = render.planar_depth(scene, render.make_raycaster(scene), H, W)
    np.testing.assert_allclose(depth, 3.0, rtol=1e-5)


def test_frames_are_plausible_rooms():
    depths = [render.render_frame(render.frame_seed(0, "val", i), H, W)[1] for i in range(6)]
    for d in depths:
        assert np.isfinite(d).mean() > 0.95
        assert 0.05 < np.nanmedian(d) < 15.0
    # Webcams pitched down see the floor: lower rows are nearer on average.
    lower = np.mean([np.nanmean(d[-H // 4 :]) for d in depths])
    upper = np.mean([np.nanmean(d[: H // 4]) for d in depths])
    assert lower < upper


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    return render.generate(out, 3, 2, seed=5, workers=1, height=H, width=W, progress=False)


def test_cache_round_trip(cache):
    ds = SyntheticDepth(cache, "train")
    assert len(ds) == 3
    s = ds[1]
    assert s["image"].shape == (3, H, W) and s["image"].dtype == torch.float32
    assert s["depth"].shape == (1, H, W) and s["valid"].dtype == torch.bool
    assert 0.0 <= float(s["image"].min()) and float(s["image"].max()) <= 1.0
    img, depth = render.render_frame(render.frame_seed(5, "train", 1), H, W)
    np.testing.assert_array_equal((s["image"].permute(1, 2, 0).numpy() * 255).round(), img)
    ok = s["valid"][0].numpy()
    np.testing.assert_allclose(s["depth"][0].numpy()[ok], depth[ok], atol=6e-4)


def test_generate_renders_only_missing_frames(cache):
    _, depth_png = render.frame_paths(cache, "val", 0)
    kept = render.frame_paths(cache, "val", 1)[0].stat().st_mtime_ns
    depth_png.unlink()
    render.generate(cache.parent, 3, 2, seed=5, workers=1, height=H, width=W, progress=False)
    assert depth_png.exists()
    assert render.frame_paths(cache, "val", 1)[0].stat().st_mtime_ns == kept


def test_corrupt_cache_file_is_named(cache):
    img, _ = render.frame_paths(cache, "train", 2)
    original = img.read_bytes()
    try:
        img.write_bytes(b"not a png at all")
        with pytest.raises(CacheError, match=str(img)):
            SyntheticDepth(cache, "train")[2]
    finally:
        img.write_bytes(original)


def test_missing_cache_file_and_meta_are_named(cache, tmp_path):
    with pytest.raises(CacheError, match="meta.json"):
        SyntheticDepth(tmp_path, "train")
    with pytest.raises(CacheError, match="000099.png.*no such file"):
        load_frame(cache, "train", 99)
    with pytest.raises(CacheError, match="at least 10 train frames"):
        SyntheticDepth(cache, "train", count=10)


def test_augmentation_flips_image_and_depth_together(cache):
    s = SyntheticDepth(cache, "train")[0]
    flipped = None
    for seed in range(20):
        out = augment({k: v.clone() for k, v in s.items()}, torch.Generator().manual_seed(seed))
        assert 0.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0
        moved = not torch.equal(out["depth"], s["depth"])
        if moved and torch.equal(out["depth"], s["depth"].flip(-1)):
            flipped = out
    assert flipped is not None
    assert torch.equal(flipped["valid"], s["valid"].flip(-1))


def test_augmented_dataset_is_deterministic(cache):
    a = SyntheticDepth(cache, "train", augment=True, seed=1)[0]["image"]
    b = SyntheticDepth(cache, "train", augment=True, seed=1)[0]["image"]
    assert torch.equal(a, b)
