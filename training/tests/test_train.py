"""Trainer: config validation, loss, a tiny run whose loss falls, resume, DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from imexdepth_train import train
from imexdepth_train.train import CheckpointError, ConfigError, load_config

TRAINING = Path(__file__).resolve().parents[1]
TINY = TRAINING / "configs" / "tiny.yaml"


def tiny_config(tmp_path: Path, synth_root: Path, **overrides) -> Path:
    raw = yaml.safe_load(TINY.read_text())
    raw.update(synth_root=str(synth_root), **overrides)
    path = tmp_path / f"tiny-{len(list(tmp_path.glob('*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synth-tiny")


def test_shipped_configs_load_and_differ_only_in_arch():
    a = load_config(TRAINING / "configs" / "imexnet-depth.yaml")
    b = load_config(TRAINING / "configs" / "resnet-depth.yaml")
    assert (a.arch, b.arch) == ("imexnet-depth", "resnet-depth")
    assert {**vars(a), "arch": None} == {**vars(b), "arch": None}
    assert load_config(TINY).epochs > 0


def test_unknown_config_keys_are_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("arch: resnet-depth\nlearning_rate: 0.1\nepoch: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown keys \['epoch', 'learning_rate'\]"):
        load_config(path)


def test_bad_config_values_are_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("arch: resnet-depth\nbatch_size: eight\n")
    with pytest.raises(ConfigError, match="'batch_size' expects int, found 'eight'"):
        load_config(path)
    path.write_text("arch: resnet-depth\ndataset: kitti\n")
    with pytest.raises(ConfigError, match="'dataset'.*kitti"):
        load_config(path)
    path.write_text("- just a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(path)
    path.write_text("lr: 0.1\n")
    with pytest.raises(ConfigError, match="missing key 'arch'"):
        load_config(path)


def test_loss_is_scale_invariant_where_it_should_be():
    cfg = train.Config(arch="resnet-depth", silog_lambda=1.0)
    gt = 1.0 + torch.rand(2, 1, 16, 16) * 4
    valid = torch.ones_like(gt, dtype=torch.bool)
    assert float(train.depth_loss(gt * 3.0, gt, valid, cfg)) < 1e-3
    noisy = gt * torch.exp(0.2 * torch.randn_like(gt))
    assert float(train.depth_loss(noisy, gt, valid, cfg)) > 0.1
    cfg.silog_lambda = 0.85  # keeps part of the scale error
    assert float(train.depth_loss(gt * 3.0, gt, valid, cfg)) > 0.3
    # Invalid pixels do not count.
    wild = gt.clone()
    wild[:, :, :4] = 100.0
    valid[:, :, :4] = False
    assert float(train.depth_loss(wild, gt, valid, train.Config(arch="x", silog_lambda=1.0))) < 1e-3


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_tiny_run_loss_falls_and_writes_checkpoints(tmp_path, synth_root, capsys):
    cfg = load_config(tiny_config(tmp_path, synth_root, epochs=6))
    out = tmp_path / "run"
    last = train.run_training(cfg, out)
    log = read_log(out)
    assert [r["epoch"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert log[-1]["train_loss"] < 0.8 * log[0]["train_loss"]
    assert {"constant", "row_prior", "resnet-depth"} <= set(last["real"])
    assert "row_prior" in capsys.readouterr().out  # the table is printed with its baselines
    for name in ("last.pt", "best.pt", "epoch_001.pt", "epoch_006.pt"):
        assert (out / name).exists()
    model, ckpt = train.model_from_checkpoint(out / "last.pt")
    assert ckpt["arch"] == "resnet-depth" and ckpt["training"]["step"] == 6 * 4
    assert model(torch.rand(1, 3, 96, 128)).min() > 0


class Killed(Exception):
    pass


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, synth_root, monkeypatch):
    path = tiny_config(tmp_path, synth_root, epochs=2)
    cfg = load_config(path)
    train.run_training(cfg, tmp_path / "straight")

    original = train.Trainer.train_step

    def dying_step(self, batch):
        if self.state.step == 5:  # killed after step 5; last.pt holds step 4
            raise Killed
        return original(self, batch)

    monkeypatch.setattr(train.Trainer, "train_step", dying_step)
    with pytest.raises(Killed):
        train.run_training(cfg, tmp_path / "killed")
    monkeypatch.setattr(train.Trainer, "train_step", original)
    assert torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["training"]["step"] == 4
    train.run_training(cfg, tmp_path / "killed", resume=True)

    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    assert b["training"]["step"] == a["training"]["step"] == 8
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_resume_refuses_other_arch(tmp_path, synth_root):
    out = tmp_path / "run"
    train.run_training(load_config(tiny_config(tmp_path, synth_root, epochs=1)), out)
    other = tiny_config(tmp_path, synth_root, epochs=2, arch="imexnet-depth")
    with pytest.raises(CheckpointError, match="'resnet-depth'.*'imexnet-depth'.*refusing"):
        train.run_training(load_config(other), out, resume=True)


def test_unreadable_checkpoint_is_named(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="last.pt: not a readable"):
        train.model_from_checkpoint(bad)
    torch.save({"arch": "resnet-depth"}, bad)
    with pytest.raises(CheckpointError, match="lacks keys"):
        train.model_from_checkpoint(bad)


def test_time_budget_stops_the_run(tmp_path, synth_root):
    cfg = load_config(tiny_config(tmp_path, synth_root, epochs=50, max_minutes=0.05))
    last = train.run_training(cfg, tmp_path / "run")
    assert last["reason"] == "budget" and last["step"] < 50 * 4


@pytest.mark.slow
def test_ddp_two_processes(tmp_path, synth_root):
    cfg = tiny_config(tmp_path, synth_root, epochs=2, batch_size=2)
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(TRAINING), "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node=2", "--master_port=29533", "-m",
           "imexdepth_train.train", "--config", str(cfg), "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["training"]["world_size"] == 2
    assert ckpt["training"]["step"] == 2 * (16 // (2 * 2))
    assert len(read_log(out)) == 2
