"""One search stage: TuNAS's loop (Bender et al., CVPR 2020; ``tunas/mobile_search.py``).

Every step, on every replica:
1. sample an architecture from the controller (each replica its own);
2. train the SuperNet's shared weights one step on it, on a training batch of the distillation
   data with the distillation loss of ``python -m distill`` (stored soft labels, ``loss.*``);
   in the warm-up (the first ``warmup_fraction`` of steps) the step instead runs, with a
   probability falling linearly from 1 to 0, the largest widths (TuNAS's increase_filters) and
   every op choice averaged (increase_ops), each drawn separately;
3. after the warm-up, measure the sampled architecture's quality Q on held-out training samples
   (after the weight update, BN on batch statistics; Q = top-1 agreement with the teacher's
   stored label, the quality a distilled student is trained for), predict its latency T, and
   update the controller with R = Q + beta |T / T0 - 1| (nas/controller.py).

Shared-weight gradients are averaged over the replicas (DDP). A checkpoint (SuperNet,
optimizer, schedule, controller, held-out pool, step and every RNG; read back with
``weights_only=True``) is written every ``checkpoint_every`` steps and at the end; a stage
restarted with its checkpoint present resumes at the step after it, with the same controller
state. The data stream of a resumed stage is a fresh one (seeded with the step).
"""

from __future__ import annotations

import csv
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.optim import param_groups_weight_decay

from common.atomic import atomic_path
from common.norm import IMAGENET_MEAN, IMAGENET_STD
from common.schedule import warmup_cosine
from distill.config import LossConfig, OptimizerConfig, ScheduleConfig, TrainConfig
from distill.logs import keep_rows_until
from distill.losses import kd_loss, kd_params, soften
from nas.choice import Chosen, choose
from nas.config import ChoiceConfig
from nas.controller import Controller, reward
from nas.data import HeldOutPool, split_batch
from nas.paths import path_of
from nas.space import Arch
from nas.stages import StageSearch
from nas.supernet import SuperNet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageSettings:
    """How long and how one stage searches (conf/search.yaml ``nas.coarse`` / ``nas.fine``
    plus the shared ``nas`` keys)."""

    steps: int
    warmup_fraction: float
    reward_batch: int
    heldout_fraction: float
    checkpoint_every: int
    controller_lr: float
    controller_ramp: float
    baseline_momentum: float
    reward: str
    beta: float
    target_ms: float
    choice: ChoiceConfig


@dataclass(frozen=True)
class SupernetTraining:
    """How the shared weights train: ``python -m distill``'s sections (the SuperNet trains as a
    distillation run's student does)."""

    seed: int
    batch_size: int  # per replica
    loss: LossConfig
    optimizer: OptimizerConfig
    schedule: ScheduleConfig
    gradient_clip_val: float | None

    @classmethod
    def of(cls, c: TrainConfig) -> SupernetTraining:
        """The run's own sections: the search trains with the retrain's recipe."""
        return cls(
            c.seed, c.data.batch_size, c.loss, c.optimizer, c.schedule, c.trainer.gradient_clip_val
        )


@dataclass
class Context:
    """What every stage shares: the SuperNet's training, device, ranks, data and latency model."""

    training: SupernetTraining
    device: torch.device
    rank: int
    world: int
    num_classes: int
    make_loader: Callable[[int], object]  # seed offset -> an endless training loader
    latency: Callable[[Arch], float]  # predicted ms of a point
    out: Path
    tracker: object | None = None  # a W&B logger (``log_metrics(dict, step)``), rank 0 only
    step_offset: int = 0  # the tracker's step of this stage's step 0 (stages follow each other)


@dataclass
class StageResult:
    arch: Arch
    probabilities: list[list[float]]
    steps: int
    wall_s: float
    quality: float | None  # the chosen point's, through the final shared weights
    chosen: Chosen  # how the controller's distribution became ``arch`` (nas/choice.py)


def inherit(net: SuperNet, state: dict[str, torch.Tensor]) -> int:
    """Start ``net`` from another SuperNet's weights: every tensor of the same name takes the
    other's first channels (the weight sharing of a narrower choice); returns how many did."""
    own, n = net.state_dict(), 0
    for name, t in own.items():
        src = state.get(name)
        if (
            src is None
            or src.ndim != t.ndim
            or any(a > b for a, b in zip(t.shape, src.shape, strict=True))
        ):
            continue
        t.copy_(src[tuple(slice(0, k) for k in t.shape)] if t.ndim else src)
        n += 1
    return n


def distill_loss(cfg: LossConfig, params: dict, logits, soft, labels) -> torch.Tensor:
    """The offline loss of ``DistillModule`` (stored teacher probabilities, optional labels)."""
    loss = torch.zeros((), device=logits.device)
    if cfg.kd_weight > 0:
        target = soften(soft, cfg.temperature)
        loss = loss + cfg.kd_weight * kd_loss(
            cfg.kind,
            logits,
            target,
            cfg.temperature,
            labels=labels,
            standardize=cfg.standardize,
            **params,
        )
    known = labels >= 0
    if cfg.gt_weight > 0 and known.any():
        ce = F.cross_entropy(
            logits[known].float(), labels[known], label_smoothing=cfg.label_smoothing
        )
        loss = loss + cfg.gt_weight * ce
    return loss


class _Normalize:
    def __init__(self, device: torch.device) -> None:
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.to(self.mean.device).float().div_(255) - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last)


def _every_rank_has(flag: bool, world: int, device: torch.device) -> bool:
    """``flag`` on every rank (one all-reduce): the controller's update is a collective, so the
    ranks must agree on whether it runs, and each rank's held-out pool fills at its own pace."""
    if world == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def _all_reduce_grads(params: list[torch.nn.Parameter], world: int) -> None:
    """Average every gradient over the replicas (unused branches count as zero)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p)
        offset += n


@torch.no_grad()
def quality(net: SuperNet, pool: HeldOutPool, arch: Arch, normalize: _Normalize) -> float:
    """Top-1 agreement with the teacher on the held-out pool, BN on batch statistics."""
    logits = net(normalize(pool.images), path_of(arch))
    teacher = pool.soft.to(logits.device).argmax(1)
    return float((logits.argmax(1) == teacher).float().mean())


class StageLog:
    """``<out>/nas/<stage>.csv`` (other ranks: ``<stage>.rank<r>.csv``, their own samples): one
    row per step (loss, quality, latency, reward, the replicas' mean reward, baseline, the sampled
    architecture and every decision's probabilities); kept up to the resumed step."""

    def __init__(self, path: Path, stage: StageSearch, resume_step: int | None) -> None:
        self.path = path
        self.columns = [
            "step",
            "loss",
            "lr",
            "warmup",
            "all_ops",
            "largest",
            "quality",
            "latency_ms",
            "reward",
            "reward_mean",
            "baseline",
            "advantage",
            "controller_lr",
            "entropy",
            "step_s",
            "arch",
        ] + [f"p/{d.name}/{o:g}" for d in stage.decisions for o in d.options]
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and path.is_file():
            keep_rows_until(path, resume_step - 1)
        else:
            with open(path, "w", newline="") as f:
                csv.writer(f).writerow(self.columns)

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow({k: row.get(k, "") for k in self.columns})


def _checkpoint_paths(out: Path, name: str, rank: int) -> tuple[Path, Path]:
    folder = out / "checkpoints"
    return folder / f"{name}.pt", folder / f"{name}.rank{rank}.pt"


def _save(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict:
    """A stage checkpoint, read with ``weights_only=True`` (nothing is unpickled)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def run_stage(
    stage: StageSearch,
    ctx: Context,
    settings: StageSettings,
    init: dict[str, torch.Tensor] | None = None,
    on_step: Callable[[int, dict], None] | None = None,
) -> StageResult:
    """Search one stage (module docstring); resumes from its checkpoint when there is one.

    ``init`` are SuperNet weights to start from (the fine stage takes the coarse SuperNet's
    1x1 convs, 3x3 middle DWs and BNs, cut to its widths: ``inherit``); ``on_step(step, row)``
    sees every logged row.
    """
    tr, device, rank, world = ctx.training, ctx.device, ctx.rank, ctx.world
    seed = tr.seed
    torch.manual_seed(seed)  # the same initial SuperNet on every replica
    net = SuperNet(
        stage.space, ctx.num_classes, stage.start_kernels, stage.mid_kernels, stage.expansions
    )
    if init:
        inherit(net, init)
    net = net.to(device, memory_format=torch.channels_last).train()
    o = tr.optimizer
    optimizer = torch.optim.AdamW(
        param_groups_weight_decay(net, o.weight_decay), lr=o.lr, betas=tuple(o.betas), eps=o.eps
    )
    sch = tr.schedule
    warm_lr = (
        sch.warmup_steps
        if sch.warmup_steps is not None
        else int(sch.warmup_fraction * settings.steps)
    )
    scheduler = warmup_cosine(optimizer, warm_lr, settings.steps, sch.min_lr_ratio)
    warm = int(settings.warmup_fraction * settings.steps)
    global_batch = tr.batch_size * world
    controller = Controller(
        stage.sizes,
        lr=settings.controller_lr * global_batch / 256,
        steps=settings.steps,
        warmup_steps=warm,
        ramp=settings.controller_ramp,
        momentum=settings.baseline_momentum,
    )
    generator = torch.Generator().manual_seed(seed * 1000 + rank)
    rng = random.Random(f"{seed}/{rank}/{stage.name}/warmup")
    pool = HeldOutPool(settings.reward_batch)
    main_path, rank_path = _checkpoint_paths(ctx.out, stage.name, rank)
    start, wall_before = 0, 0.0
    if main_path.is_file():
        state = load_checkpoint(main_path)
        net.load_state_dict(state["supernet"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        controller.load_state(state["controller"])
        start, wall_before = int(state["step"]), float(state["wall_s"])
        mine = load_checkpoint(rank_path)
        generator.set_state(mine["generator"])
        rng.setstate(_as_random_state(mine["warmup_rng"]))
        pool.load_state(mine["pool"])
        log.info(
            "%s stage: resumed at step %d of %d from %s",
            stage.name,
            start,
            settings.steps,
            main_path,
        )
    log_name = f"{stage.name}.csv" if rank == 0 else f"{stage.name}.rank{rank}.csv"
    stage_log = StageLog(ctx.out / "nas" / log_name, stage, start if start else None)

    def save(step: int, wall: float) -> None:
        _save(
            rank_path,
            {
                "generator": generator.get_state(),
                "warmup_rng": list(_flat_state(rng)),
                "pool": pool.state(),
            },
        )
        if world > 1:
            dist.barrier()
        if rank == 0:
            _save(
                main_path,
                {
                    "stage": stage.name,
                    "step": step,
                    "steps": settings.steps,
                    "wall_s": wall,
                    "supernet": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "controller": controller.state(),
                },
            )

    loss_cfg = tr.loss
    params = kd_params(loss_cfg)
    normalize = _Normalize(device)
    shared = [p for p in net.parameters() if p.requires_grad]
    clip = tr.gradient_clip_val
    batches = iter(ctx.make_loader(start))
    started = time.perf_counter()
    for step in range(start, settings.steps):
        tick = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:  # a nominal epoch ended: the stream goes on
            batches = iter(ctx.make_loader(step))
            batch = next(batches)
        train, held = split_batch(batch, settings.heldout_fraction, device)
        pool.add(held["image"], held["soft"])
        choices = controller.sample(generator)
        arch = stage.arch(choices)
        p_warm = max(0.0, 1.0 - step / warm) if warm else 0.0
        all_ops, largest = rng.random() < p_warm, rng.random() < p_warm
        net.train()
        logits = net(normalize(train["image"]), stage.path(arch, all_ops, largest))
        loss = distill_loss(
            loss_cfg, params, logits, train["soft"].to(device), train["label"].to(device)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if world > 1:
            _all_reduce_grads(shared, world)
        if clip:
            torch.nn.utils.clip_grad_norm_(shared, clip)
        optimizer.step()
        scheduler.step()
        row = {
            "step": step,
            "loss": float(loss.detach()),
            "lr": optimizer.param_groups[0]["lr"],
            "warmup": int(step < warm),
            "all_ops": int(all_ops),
            "largest": int(largest),
            "arch": arch.describe(),
        }
        if step >= warm and _every_rank_has(len(pool) > 0, world, device):
            q = quality(net, pool, arch, normalize)
            t = ctx.latency(arch)
            r = reward(settings.reward, q, t, settings.target_ms, settings.beta)
            row.update(quality=q, latency_ms=t, reward=r)
            row.update(controller.update(choices, stage.active(choices), r, step))
        for d, probs in zip(stage.decisions, controller.probabilities(), strict=True):
            row.update(
                {f"p/{d.name}/{o:g}": round(p, 5) for o, p in zip(d.options, probs, strict=True)}
            )
        row["step_s"] = round(time.perf_counter() - tick, 4)
        stage_log.write(row)
        if ctx.tracker is not None:
            numbers = {f"{stage.name}/{k}": v for k, v in row.items() if isinstance(v, int | float)}
            ctx.tracker.log_metrics(numbers, step=ctx.step_offset + step)
        if on_step is not None:
            on_step(step, row)
        done = step + 1
        if done % settings.checkpoint_every == 0 or done == settings.steps:
            save(done, wall_before + time.perf_counter() - started)
    wall = wall_before + time.perf_counter() - started
    chosen = choose(
        controller, stage, ctx.latency, settings.target_ms, settings.choice, seed * 1000 + 999
    )
    best = chosen.arch
    q = quality(net, pool, best, normalize) if len(pool) else None
    log.info(
        "%s stage: %s, predicted %.3f ms (%s of %d candidates in the band; argmax %s, %.3f ms) "
        "(%.0f s)",
        stage.name,
        best.describe(),
        chosen.predicted_ms,
        chosen.in_band,
        chosen.candidates,
        chosen.argmax.describe(),
        chosen.argmax_ms,
        wall,
    )
    probabilities = controller.probabilities()
    return StageResult(best, probabilities, settings.steps, round(wall, 1), q, chosen)


def _flat_state(rng: random.Random) -> list[int]:
    """``random.Random`` state as a list of ints (only ``random()`` is drawn from it, so its
    Gaussian cache is empty)."""
    version, internal, _ = rng.getstate()
    return [version, *internal]


def _as_random_state(values: list[int]) -> tuple:
    return (values[0], tuple(values[1:]), None)


def supernet_weights(out: Path, name: str) -> dict[str, torch.Tensor] | None:
    """A finished stage's SuperNet weights (for the next stage to start from)."""
    path = _checkpoint_paths(out, name, 0)[0]
    return load_checkpoint(path)["supernet"] if path.is_file() else None
