"""Training of the depth networks on rendered frames (or NYU Depth v2), CPU or DDP.

``python -m imexdepth_train.train --config configs/X.yaml [--resume] [--out DIR]``;
``torchrun --nproc_per_node=2 -m imexdepth_train.train ...`` for DDP (gloo backend).

Loss, on log depth ``r = ln pred - ln gt`` over valid pixels, per image then averaged:

- scale-invariant log loss (Eigen et al. 2014, square-rooted form of Lee et al. 2019),
  ``sqrt(mean(r^2) - lambda mean(r)^2)`` with ``lambda = silog_lambda`` (0.85 keeps 15% of the
  global-scale error, so the metric scale still trains, but most of the gradient goes to shape);
- gradient matching on log depth (Li and Snavely 2018, MegaDepth), ``mean |dx r| + |dy r|`` at
  ``grad_scales`` scales (subsampled by 2 each), weighted by ``grad_weight``: it sharpens depth
  edges and, being scale-invariant, does not fight the first term.

Checkpoints (``out/last.pt`` every ``checkpoint_every`` steps and at each evaluation,
``out/epoch_NNN.pt`` at each epoch end, ``out/best.pt``) are written atomically, so a run
killed at any moment resumes with ``--resume`` from its last step: same data order (the
permutation of an epoch is a function of seed and epoch; finished batches are skipped), same
optimiser state. Resuming a checkpoint of another architecture is refused.

Evaluation (at each epoch end and every ``eval_every`` steps): synthetic validation metrics and
the Middlebury Motorcycle metrics, printed beside the constant and row-prior baselines.
Best checkpoint: the highest ``score = (delta1_ms(synthetic val) + 2 (ordinal(Middlebury) -
0.5)) / 2``, both terms 0 at chance and 1 when perfect, so a net that learns the rendered rooms
but loses real-photo ordering is not selected. This makes Motorcycle a selection set as well as
a test set: its figures for ``best.pt`` are optimistic, the log keeps every evaluation.

The time budget ``max_minutes`` (training plus evaluation, summed over resumed sessions) ends
the run early; the learning rate follows a cosine from ``lr`` to 0 over whichever runs out
first, the planned steps or the time budget.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.utils.data import DataLoader, Dataset, Sampler

from imexdepth_train import metrics, realeval, render
from imexdepth_train.data import SyntheticDepth

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


class ConfigError(Exception):
    """A training config is missing, malformed or holds unknown keys."""

    def __init__(self, path: Path | str, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")


class CheckpointError(Exception):
    """A checkpoint cannot be read or does not belong to this run."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


@dataclass
class Config:
    """Every key a config file may hold (paths relative to the config file's folder)."""

    arch: str
    options: dict = field(default_factory=dict)
    dataset: str = "synthetic"  # "synthetic" | "nyu"
    height: int = 240
    width: int = 320
    synth_root: str = "../../.cache/synth"
    synth_seed: int = 0
    train_frames: int = 5000
    val_frames: int = 500
    render_missing: bool = True
    render_workers: int = 2
    nyu_path: str = ""
    nyu_val_fraction: float = 0.1
    val_limit: int = 0  # evaluate on the first N validation frames (0 = all)
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    epochs: int = 10
    max_minutes: float = 0.0  # 0 = no time budget
    silog_lambda: float = 0.85
    grad_weight: float = 0.5
    grad_scales: int = 4
    checkpoint_every: int = 200
    eval_every: int = 0  # steps between evaluations besides epoch ends (0 = epoch ends only)
    real_eval: bool = True
    threads: int = 1
    seed: int = 0
    log_every: int = 20


def load_config(path: Path) -> Config:
    """Reads a YAML config, refusing unknown keys and values of the wrong type."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(path, f"cannot read the config ({err})") from err
    except yaml.YAMLError as err:
        raise ConfigError(path, f"not valid YAML ({err})") from err
    if not isinstance(raw, dict):
        raise ConfigError(path, f"expected a mapping of keys, found {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(Config)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(path, f"unknown keys {unknown}; known keys: {sorted(fields)}")
    if "arch" not in raw:
        raise ConfigError(path, "missing key 'arch'")
    for key, value in raw.items():
        want = {"int": int, "float": (int, float), "str": str, "bool": bool, "dict": dict}[
            str(fields[key].type)]
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise ConfigError(path, f"key '{key}' expects {fields[key].type}, found {value!r}")
    cfg = Config(**raw)
    if cfg.dataset not in ("synthetic", "nyu"):
        raise ConfigError(path, f"key 'dataset' expects 'synthetic' or 'nyu', "
                                f"found {cfg.dataset!r}")
    for key in ("synth_root", "nyu_path"):
        value = getattr(cfg, key)
        if value and not Path(value).is_absolute():
            setattr(cfg, key, str((path.parent / value).resolve()))
    return cfg


# --------------------------------------------------------------------------------------------
# Loss


def silog_loss(r: torch.Tensor, mask: torch.Tensor, lam: float) -> torch.Tensor:
    """Scale-invariant log loss per image [N] of log residuals ``r`` [N,1,H,W]."""
    n = mask.sum(dim=(1, 2, 3)).clamp(min=1)
    mean = (r * mask).sum(dim=(1, 2, 3)) / n
    mean_sq = (r * r * mask).sum(dim=(1, 2, 3)) / n
    return torch.sqrt((mean_sq - lam * mean * mean).clamp(min=1e-8))


def gradient_loss(r: torch.Tensor, mask: torch.Tensor, scales: int) -> torch.Tensor:
    """Multi-scale gradient matching of log residuals, per image [N]."""
    total = torch.zeros(r.shape[0], dtype=r.dtype, device=r.device)
    for s in range(scales):
        step = 2**s
        rs, ms = r[..., ::step, ::step], mask[..., ::step, ::step]
        mx = ms[..., :, 1:] * ms[..., :, :-1]
        my = ms[..., 1:, :] * ms[..., :-1, :]
        gx = (rs[..., :, 1:] - rs[..., :, :-1]).abs() * mx
        gy = (rs[..., 1:, :] - rs[..., :-1, :]).abs() * my
        count = (mx.sum(dim=(1, 2, 3)) + my.sum(dim=(1, 2, 3))).clamp(min=1)
        total = total + (gx.sum(dim=(1, 2, 3)) + gy.sum(dim=(1, 2, 3))) / count
    return total / scales


def depth_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, cfg: Config):
    """The loss of the module doc, averaged over the batch."""
    mask = valid.to(pred.dtype)
    r = (torch.log(pred.clamp(min=1e-3)) - torch.log(gt.clamp(min=1e-3))) * mask
    loss = silog_loss(r, mask, cfg.silog_lambda)
    if cfg.grad_weight > 0:
        loss = loss + cfg.grad_weight * gradient_loss(r, mask, cfg.grad_scales)
    return loss.mean()


# --------------------------------------------------------------------------------------------
# Data


class EpochSampler(Sampler[int]):
    """This rank's share of a seeded per-epoch permutation, from batch ``skip`` on."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch, self.skip = 0, 0
        self.per_rank = (n // (world * batch_size)) * batch_size
        if self.per_rank == 0:
            raise ValueError(f"{n} frames are fewer than one batch of {batch_size} per rank")

    def batches(self) -> int:
        return self.per_rank // self.batch_size

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        perm = torch.randperm(self.n, generator=gen)[: self.per_rank * self.world]
        mine = perm[self.rank :: self.world].tolist()
        return iter(mine[self.skip * self.batch_size :])

    def __len__(self) -> int:
        return self.per_rank - self.skip * self.batch_size


def make_datasets(cfg: Config, rank: int) -> tuple[Dataset, Dataset]:
    if cfg.dataset == "nyu":
        from imexdepth_train.nyu import NyuDepth

        kw = dict(height=cfg.height, width=cfg.width, val_fraction=cfg.nyu_val_fraction)
        return (NyuDepth(cfg.nyu_path, "train", augment=True, seed=cfg.seed, **kw),
                NyuDepth(cfg.nyu_path, "val", **kw))
    root = Path(cfg.synth_root) / render.version_hash(cfg.synth_seed, cfg.height, cfg.width)
    if cfg.render_missing and rank == 0:
        render.generate(Path(cfg.synth_root), cfg.train_frames, cfg.val_frames, cfg.synth_seed,
                        cfg.render_workers, cfg.height, cfg.width)
    if dist.is_initialized():
        dist.barrier()
    return (SyntheticDepth(root, "train", cfg.train_frames, augment=True, seed=cfg.seed),
            SyntheticDepth(root, "val", cfg.val_frames))


# --------------------------------------------------------------------------------------------
# Checkpoints


def save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> dict:
    """Loads a checkpoint dict, checking the keys every checkpoint has."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise CheckpointError(path, "no such checkpoint") from err
    except Exception as err:  # torch raises many types for a damaged file
        raise CheckpointError(path, f"not a readable torch checkpoint ({err})") from err
    missing = [k for k in ("arch", "options", "state_dict", "training") if k not in ckpt]
    if missing:
        raise CheckpointError(path, f"checkpoint lacks keys {missing}")
    return ckpt


def build(arch: str, options: dict) -> torch.nn.Module:
    from imexdepth_train.nets import build_model

    return build_model(arch, **options)


def model_from_checkpoint(path: Path) -> tuple[torch.nn.Module, dict]:
    """The model of a checkpoint, in eval mode, and the checkpoint dict."""
    ckpt = read_checkpoint(Path(path))
    model = build(ckpt["arch"], ckpt["options"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt


@dataclass
class RunState:
    """What a resumed run needs beyond the weights and the optimiser."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    elapsed_s: float = 0.0
    best_score: float = -math.inf
    history: list = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate(model: torch.nn.Module, val: Dataset, cfg: Config) -> dict[str, Any]:
    """Synthetic validation metrics and (if enabled) Middlebury metrics with baselines."""
    model.eval()
    count = len(val) if cfg.val_limit <= 0 else min(cfg.val_limit, len(val))
    per_image = []
    for i in range(count):
        s = val[i]
        pred = model(s["image"][None])[0, 0].double().numpy()
        per_image.append(metrics.depth_metrics(pred, s["depth"][0].numpy(), s["valid"][0].numpy()))
    result: dict[str, Any] = {"val": metrics.mean_metrics(per_image), "val_frames": count}
    if cfg.real_eval:
        real = realeval.evaluate({cfg.arch: model}, cfg.height, cfg.width)
        result["real"] = real
        print(realeval.format_table(real, "Middlebury Motorcycle"), flush=True)
    model.train()
    result["score"] = selection_score(result)
    return result


def selection_score(result: dict[str, Any]) -> float:
    """The best-checkpoint score of the module doc (synthetic only when real eval is off)."""
    synth = result["val"]["delta1_ms"]
    if "real" not in result:
        return synth
    real = next(v for k, v in result["real"].items() if k not in ("constant", "row_prior"))
    return 0.5 * (synth + 2.0 * (real["ordinal"] - 0.5))


# --------------------------------------------------------------------------------------------
# The loop


class Trainer:
    """One training run; rank 0 evaluates, logs and writes checkpoints."""

    def __init__(self, cfg: Config, out: Path, rank: int = 0, world: int = 1):
        self.cfg, self.out, self.rank, self.world = cfg, Path(out), rank, world
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.model = build(cfg.arch, cfg.options)
        self.net = self.model
        if world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(self.model)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr,
                                     weight_decay=cfg.weight_decay)
        self.train_set, self.val_set = make_datasets(cfg, rank)
        self.sampler = EpochSampler(len(self.train_set), cfg.batch_size, cfg.seed, rank, world)
        self.state = RunState()
        self.session_start = time.monotonic()
        self.elapsed_at_start = 0.0

    @property
    def total_steps(self) -> int:
        return self.cfg.epochs * self.sampler.batches()

    def elapsed(self) -> float:
        return self.elapsed_at_start + time.monotonic() - self.session_start

    def progress(self) -> float:
        p = self.state.step / max(1, self.total_steps)
        if self.cfg.max_minutes > 0:
            p = max(p, self.elapsed() / (60.0 * self.cfg.max_minutes))
        return min(p, 1.0)

    def set_lr(self) -> None:
        lr = self.cfg.lr * 0.5 * (1.0 + math.cos(math.pi * self.progress()))
        for group in self.opt.param_groups:
            group["lr"] = lr

    def checkpoint(self, name: str, metrics_: dict | None = None) -> None:
        if self.rank != 0:
            return
        self.state.elapsed_s = self.elapsed()
        ckpt = {
            "format": CHECKPOINT_FORMAT, "arch": self.cfg.arch, "options": self.cfg.options,
            "state_dict": self.model.state_dict(), "optimizer": self.opt.state_dict(),
            "run_state": dataclasses.asdict(self.state),
            "training": {"config": dataclasses.asdict(self.cfg), "metrics": metrics_ or {},
                         "step": self.state.step, "epoch": self.state.epoch,
                         "elapsed_s": self.state.elapsed_s, "world_size": self.world,
                         "torch": str(torch.__version__)},
        }
        save_atomic(ckpt, self.out / name)

    def resume(self, path: Path) -> None:
        ckpt = read_checkpoint(path)
        if ckpt["arch"] != self.cfg.arch:
            raise CheckpointError(path, f"holds arch '{ckpt['arch']}', this config trains "
                                        f"'{self.cfg.arch}': refusing to resume across archs")
        if ckpt["options"] != self.cfg.options:
            raise CheckpointError(path, f"options {ckpt['options']} differ from the config's "
                                        f"{self.cfg.options}")
        self.model.load_state_dict(ckpt["state_dict"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.state = RunState(**ckpt["run_state"])
        self.elapsed_at_start = self.state.elapsed_s
        logger.info("resumed %s at step %d (epoch %d, batch %d, %.1f min used)", path,
                    self.state.step, self.state.epoch, self.state.batch_in_epoch,
                    self.state.elapsed_s / 60)

    def out_of_time(self) -> bool:
        over = self.cfg.max_minutes > 0 and self.elapsed() >= 60.0 * self.cfg.max_minutes
        if self.world > 1:  # every rank stops at the same step
            flag = torch.tensor([1.0 if over else 0.0])
            dist.broadcast(flag, src=0)
            over = bool(flag.item())
        return over

    def loader(self) -> DataLoader:
        self.sampler.set_epoch(self.state.epoch, self.state.batch_in_epoch)
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(self.state.epoch)
        return DataLoader(self.train_set, batch_size=self.cfg.batch_size, sampler=self.sampler,
                          num_workers=0, drop_last=True)

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        self.set_lr()
        pred = self.net(batch["image"])
        loss = depth_loss(pred, batch["depth"], batch["valid"], self.cfg)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.opt.step()
        self.state.step += 1
        self.state.batch_in_epoch += 1
        return float(loss.detach())

    def run(self) -> dict[str, Any]:
        """Trains until the planned epochs or the time budget end; returns the last metrics."""
        from tqdm import tqdm

        last: dict[str, Any] = {}
        stopped = False
        while self.state.epoch < self.cfg.epochs and not stopped:
            bar = tqdm(total=self.sampler.batches(), initial=self.state.batch_in_epoch,
                       desc=f"epoch {self.state.epoch}", disable=self.rank != 0, unit="batch")
            losses = []
            for batch in self.loader():
                if self.out_of_time():
                    stopped = True
                    break
                losses.append(self.train_step(batch))
                bar.update()
                if self.state.step % self.cfg.log_every == 0:
                    bar.set_postfix(loss=f"{np.mean(losses[-self.cfg.log_every:]):.4f}",
                                    lr=f"{self.opt.param_groups[0]['lr']:.2e}")
                if self.cfg.eval_every and self.state.step % self.cfg.eval_every == 0:
                    last = self.evaluate_and_log(losses, "step")
                elif self.state.step % self.cfg.checkpoint_every == 0:
                    self.checkpoint("last.pt")
            bar.close()
            if not stopped:
                self.state.epoch += 1
                self.state.batch_in_epoch = 0
            last = self.evaluate_and_log(losses, "budget" if stopped else "epoch")
            if not stopped:
                self.checkpoint(f"epoch_{self.state.epoch:03d}.pt", last)
        return last

    def evaluate_and_log(self, losses: list[float], reason: str) -> dict[str, Any]:
        """Evaluates on rank 0, logs one JSON line, writes last.pt and maybe best.pt."""
        result: dict[str, Any] = {}
        if self.rank == 0:
            result = evaluate(self.model, self.val_set, self.cfg)
            result.update(reason=reason, step=self.state.step, epoch=self.state.epoch,
                          train_loss=float(np.mean(losses)) if losses else float("nan"),
                          minutes=self.elapsed() / 60)
            self.state.history.append({k: result[k] for k in ("step", "score", "train_loss")})
            with open(self.out / "log.jsonl", "a") as f:
                f.write(json.dumps(result) + "\n")
            v = result["val"]
            logger.info("step %d epoch %d loss %.4f | val abs_rel %.4f abs_rel_ms %.4f "
                        "delta1_ms %.4f ordinal %.4f | score %.4f", self.state.step,
                        self.state.epoch, result["train_loss"], v["abs_rel"], v["abs_rel_ms"],
                        v["delta1_ms"], v["ordinal"], result["score"])
            if result["score"] > self.state.best_score:
                self.state.best_score = result["score"]
                self.checkpoint("best.pt", result)
            self.checkpoint("last.pt", result)
        if self.world > 1:
            dist.barrier()
        return result


def run_training(cfg: Config, out: Path, resume: bool = False) -> dict[str, Any]:
    """Sets up (DDP when launched by torchrun), trains, returns rank 0's last metrics."""
    torch.set_num_threads(cfg.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    out.mkdir(parents=True, exist_ok=True)
    try:
        trainer = Trainer(cfg, out, rank, world)
        ckpt = out / "last.pt"
        if resume and ckpt.exists():
            trainer.resume(ckpt)
        elif resume:
            logger.warning("--resume: %s does not exist, starting from scratch", ckpt)
        return trainer.run()
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train a depth network.")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None, help="default: out/train/<config>")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = load_config(args.config)
    out = args.out or Path("out/train") / args.config.stem
    last = run_training(cfg, out, args.resume)
    if last and int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"out": str(out), "step": last.get("step"), "score": last.get("score"),
                          "val": last.get("val")}))


if __name__ == "__main__":
    main()
