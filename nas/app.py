"""``run(cfg)``: the search, top to bottom.

1. ``start``: check the command line (a preset, known keys, values) and the runtime;
2. build the distillation data if missing (``python -m distill``'s own step);
3. the latency model: time every block the search can use, the calibration networks and the
   target student in one round-robin, fit the constant, take T0 in the model's units, refuse a
   target below the smallest architecture of the space;
4. the coarse stage, then the fine stage on its result (``nas.stages=one``: one stage of both);
5. write ``searched.yaml`` (a spec file: ``python -m distill student=searched
   student.spec_file=...``) and ``nas.json``, the chosen architecture timed end to end beside
   the target student, and the report (``report.html``, ``report.png``);
6. with ``nas.retrain=true``, distil the searched student standalone and export it.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf

import students
from distill.app import prepare_data
from distill.cli_checks import UsageError
from distill.config import DataConfig, TrainConfig, TrainerConfig
from distill.factories import make_datamodule as distill_datamodule
from distill.results import write_json
from nas.config import (
    CoarseConfig,
    FineConfig,
    LatencyConfig,
    NasConfig,
    SpaceConfig,
    TargetConfig,
    search_config,
)
from nas.latency import BlockKey, HeadRow, LatencyTable, Setup, network_blocks
from nas.search import Context, StageSettings, SupernetTraining, run_stage, supernet_weights
from nas.space import (
    Arch,
    BlockChoice,
    SearchSpace,
    StageChoice,
    StageSpace,
    arch_to_spec,
    random_arch,
)
from nas.stages import StageSearch, coarse_stage, fine_stage
from students.runtimes import MissingRuntime

log = logging.getLogger(__name__)

PRESETS_HINT = "python -m nas +nas=digits (or +nas=imagenet)"


# -- 1. start ----------------------------------------------------------------------------------
def space_from_config(s: SpaceConfig, resolution: int) -> SearchSpace:
    """``nas.space`` as a ``SearchSpace``; a bad value is a one-line error naming the key."""
    try:
        return SearchSpace(
            name=s.name,
            resolution=resolution,
            stem_widths=tuple(s.stem_widths),
            stages=tuple(
                StageSpace(
                    st.kind,
                    tuple(st.widths),
                    st.stride,
                    tuple(float(e) for e in st.expansions),
                    tuple(st.depth),
                )
                for st in s.stages
            ),
            expansions=tuple(float(e) for e in s.expansions),
            kernels=tuple(s.kernels),
            act=s.act,
        )
    except (ValueError, TypeError) as e:
        raise UsageError(f"nas.space: {e}") from None


def start(cfg: DictConfig) -> TrainConfig:
    """Check the command line and values (the one conversion: ``nas.config.search_config``),
    seed; the typed config, whose ``nas`` is a ``NasConfig``."""
    from distill.config import check_schema
    from distill.quiet import quiet_libraries

    if OmegaConf.is_missing(cfg.nas, "space"):
        raise UsageError(f"choose a preset: {PRESETS_HINT}")
    try:
        check_schema(cfg)
        c = search_config(cfg)
    except ValueError as e:
        raise UsageError(str(e)) from None
    quiet_libraries()
    out = Path(c.paths.output_dir)
    if c.nas.resume and not (out / "checkpoints").is_dir():
        raise UsageError(
            f"nas.resume=true needs the old run's folder: hydra.run.dir=<run dir> ({out} has no "
            "checkpoints/)"
        )
    out.mkdir(parents=True, exist_ok=True)
    if not c.nas.resume and (out / "checkpoints").is_dir():
        raise UsageError(f"{out} holds a search already: pass nas.resume=true to continue it")
    torch.manual_seed(c.seed)
    torch.set_float32_matmul_precision(c.matmul_precision)
    return c


def distributed(trainer: TrainerConfig) -> tuple[int, int, torch.device]:
    """(rank, world, device): torchrun's environment, one process per device."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    accel = trainer.accelerator
    cuda = torch.cuda.is_available() and accel in ("auto", "gpu", "cuda")
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if world > 1 and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo")
    return rank, world, device


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


# -- 3. the latency model --------------------------------------------------------------------
class LatencyModel:
    """The latency table of the run's setup at its resolution and class count."""

    def __init__(self, lat: LatencyConfig, resolution: int, num_classes: int) -> None:
        try:
            self.setup = Setup(lat.runtime, lat.precision, lat.threads)
            self.table = LatencyTable(lat.cache_dir, self.setup, lat.rounds, lat.quantile)
        except MissingRuntime as e:
            raise UsageError(f"nas.latency.runtime: {e}") from None
        except ValueError as e:
            raise UsageError(f"nas.latency: {e}") from None
        self.resolution, self.num_classes = resolution, num_classes
        self._cache: dict[Arch, float] = {}

    def stage_blocks(self, stage: StageSearch) -> list[BlockKey]:
        """Every block the stage can sample, the head included."""
        act = stage.space.act
        keys = [BlockKey(row, c_in, size, act) for row, c_in, size in stage.sampled_rows()]
        head = BlockKey(
            HeadRow(stage.space.head_hidden_size, self.num_classes),
            stage.space.num_features,
            keys[-1].size,
            act,
        )
        return [*keys, head]

    def measure_stage(self, stage: StageSearch) -> int:
        """Measure the blocks of the stage the table lacks, in one round-robin."""
        return self.table.measure_blocks(self.stage_blocks(stage))

    def predict(self, space: SearchSpace, arch: Arch) -> float:
        if arch not in self._cache:
            spec = arch_to_spec(space, arch)
            self._cache[arch] = self.table.predict(spec, self.resolution, self.num_classes)
        return self._cache[arch]


def smallest_arch(space: SearchSpace, expansions: tuple[float, ...]) -> Arch:
    """The cheapest point the two stages can reach: narrowest, shallowest, every block an FFN
    (a stride-2 block: its smallest middle DW) at the smallest expansion."""
    stages = []
    for s in space.stages:
        if s.kind != "uib":
            stages.append(StageChoice(min(s.widths), (BlockChoice(0, 0, min(s.expansions)),)))
            continue
        blocks = tuple(
            BlockChoice(0, min(space.mid_kernels(s.stride if j == 0 else 1)), min(expansions))
            for j in range(s.depth[0])
        )
        stages.append(StageChoice(min(s.widths), blocks))
    return Arch(min(space.stem_widths), tuple(stages))


def coarse_block(cn: CoarseConfig) -> BlockChoice:
    """The coarse stage's every UIB block: an IB of ``nas.coarse``'s expansion and kernel."""
    return BlockChoice(0, int(cn.kernel), float(cn.expansion))


def fine_expansions(fn: FineConfig) -> tuple[float, ...]:
    """The expansions the fine stage searches per block."""
    return tuple(float(e) for e in fn.expansions)


def one_stage(space: SearchSpace, expansions: tuple[float, ...]) -> StageSearch:
    """``nas.stages=one``: widths, depths and every block's choices at once (Tab. 4's
    baseline); its blocks are every block either of the two stages can sample."""
    return StageSearch("one", space, widths=True, blocks=True, expansions=expansions)


def search_blocks(model: LatencyModel, space: SearchSpace, n: NasConfig) -> list[BlockKey]:
    """Every block either stage can sample, whatever the coarse result (the one-stage search
    of the same choices spans them all), and those of the smallest point."""
    expansions = fine_expansions(n.fine)
    one = one_stage(space, expansions)
    small = arch_to_spec(space, smallest_arch(space, expansions))
    coarse = coarse_stage(space, coarse_block(n.coarse))
    keys = model.stage_blocks(one) + model.stage_blocks(coarse)
    return keys + network_blocks(small, model.resolution, model.num_classes)


def target_ms(
    n: NasConfig, seed: int, model: LatencyModel, space: SearchSpace, rank: int, world: int
) -> dict:
    """Fit the latency constant on random points, with every block the search can use and the
    target student timed in the same round-robin (rank 0; the others read the table it saved):
    T0 and how it was obtained (``nas.json``'s ``target``).

    A student's T0 is ``scale`` x the model's prediction of that student, not its measured time:
    the search steers by predictions, and a target in the model's own units carries none of the
    error of a constant fitted on a few networks (the measured time is recorded beside it)."""
    t, lat = n.target, n.latency
    rng = random.Random(f"{seed}/calibration")
    calibration = [
        arch_to_spec(space, random_arch(space, rng)) for _ in range(lat.calibration_networks)
    ]
    also = [] if t.ms is not None else [students.get_spec(t.student)]
    info: dict = {}
    if rank == 0:
        timed = model.table.calibrate(
            calibration,
            model.resolution,
            model.num_classes,
            also,
            blocks=search_blocks(model, space, n),
            remeasure=lat.remeasure,
        )
        if also:
            predicted = model.table.predict(also[0], model.resolution, model.num_classes)
            info = {
                "student": t.student,
                "student_ms": round(timed[0].ms, 4),
                "student_predicted_ms": round(predicted, 4),
                "scale": t.scale,
            }
        (model.table.path.parent).mkdir(parents=True, exist_ok=True)
    _barrier(world)
    if rank != 0:
        model.table = LatencyTable(model.table.path.parent, model.setup, lat.rounds, lat.quantile)
    if world > 1:
        box = [info]
        dist.broadcast_object_list(box, src=0)
        info = box[0]
    ms = t.ms if t.ms is not None else t.scale * info["student_predicted_ms"]
    return {"ms": float(ms), **info}


def check_target(model: LatencyModel, space: SearchSpace, expansions: tuple, t0: float) -> float:
    """Refuse a target no point of the space can reach; returns the smallest predicted ms."""
    small = smallest_arch(space, expansions)
    spec = arch_to_spec(space, small)
    model.table.measure_blocks(network_blocks(spec, model.resolution, model.num_classes))
    least = model.table.predict(spec, model.resolution, model.num_classes)
    if t0 < least:
        raise UsageError(
            f"latency target {t0:.3f} ms is below the smallest architecture of space {space.name}: "
            f"{least:.3f} ms predicted on {model.setup.describe()} at {model.resolution} px "
            f"({small.describe()}); raise nas.target.scale or nas.target.ms"
        )
    return least


def stage_settings(n: NasConfig, stage: CoarseConfig | FineConfig, t0: float) -> StageSettings:
    """One stage's length (``nas.coarse`` / ``nas.fine``) with the keys the stages share."""
    ctl = n.controller
    return StageSettings(
        steps=stage.steps,
        warmup_fraction=stage.warmup_fraction,
        reward_batch=n.reward_batch,
        heldout_fraction=n.heldout_fraction,
        checkpoint_every=n.checkpoint_every,
        controller_lr=ctl.lr,
        controller_ramp=ctl.ramp,
        baseline_momentum=ctl.baseline_momentum,
        reward=ctl.reward,
        beta=ctl.beta,
        target_ms=t0,
        choice=n.choice,
    )


def make_loader_factory(
    d: DataConfig, seed: int, rank: int, world: int, device: torch.device
) -> Callable[[int], Iterable]:
    """Seed offset -> an endless loader of the run's training mix (the search's data)."""
    from nas.data import SearchDataModule

    def make(offset: int) -> Iterable:
        base = distill_datamodule(d, seed, d.train_sets, "offline", d.samples_per_epoch)
        dm = SearchDataModule(
            base.root,
            base.train_sets,
            base.val_set,
            batch_size=d.batch_size,
            num_workers=d.num_workers,
            samples_per_epoch=d.samples_per_epoch,
            flip=d.flip,
            seed=seed + offset,
            shuffle_buffer=d.shuffle_buffer,
            recipe_check=d.recipe_check,
            decode=d.decode,
            rank=rank,
            world=world,
            device=device,
        )
        return dm.train_dataloader()

    return make


def run(cfg: DictConfig) -> dict:
    """The whole search (module docstring); returns what ``nas.json`` holds."""
    wall_start = time.perf_counter()
    c = start(cfg)  # 1.
    n: NasConfig = c.nas
    out = Path(c.paths.output_dir)
    rank, world, device = distributed(c.trainer)
    if rank == 0:
        prepare_data(c)  # 2.
    _barrier(world)
    d = c.data
    dm = distill_datamodule(d, c.seed, d.train_sets, "offline", d.samples_per_epoch)
    dm.prepare()
    resolution = n.resolution or dm.image_size
    space = space_from_config(n.space, resolution)
    model = LatencyModel(n.latency, resolution, dm.num_classes)  # 3.
    target = target_ms(n, c.seed, model, space, rank, world)
    t0 = target["ms"]
    expansions = fine_expansions(n.fine)
    least = check_target(model, space, expansions, t0)
    log.info(
        "target T0 %.3f ms on %s at %d px (smallest point of the space: %.3f ms)",
        t0,
        model.setup.describe(),
        resolution,
        least,
    )
    ctx = Context(
        SupernetTraining.of(c),
        device,
        rank,
        world,
        dm.num_classes,
        make_loader_factory(d, c.seed, rank, world, device),
        lambda arch: model.predict(space, arch),
        out,
    )
    ctx.tracker = wandb_tracker(c, out) if rank == 0 else None
    results = {}
    if n.stages == "one":  # 4.
        one = one_stage(space, expansions)
        chosen = _search(one, ctx, model, stage_settings(n, n.coarse, t0), results, rank, world)
    else:
        coarse = coarse_stage(space, coarse_block(n.coarse))
        best = _search(coarse, ctx, model, stage_settings(n, n.coarse, t0), results, rank, world)
        fine = fine_stage(space, best, expansions)
        init = supernet_weights(out, "coarse")
        chosen = _search(
            fine, ctx, model, stage_settings(n, n.fine, t0), results, rank, world, init
        )
    if rank != 0:
        return {}
    summary = finish(c, out, space, chosen, model, target, results, least, wall_start)  # 5.
    if n.retrain:  # 6.
        summary["retrain"] = retrain(out, summary, n.retrain_overrides)
        summary["total_wall_s"] = round(time.perf_counter() - wall_start, 1)
        write_json(out / "nas.json", summary)
    print(format_summary(summary))
    return summary


def wandb_tracker(c: TrainConfig, out: Path):
    """W&B when ``logger=wandb`` (the distillation runs' settings: offline without a key, never
    fatal); every stage row's numbers go there as ``<stage>/<column>``, the run's config (plain
    data) as its W&B config."""
    wcfg = c.logger.wandb
    if wcfg is None or not wcfg.enabled:
        return None
    from distill.wandb import make_wandb_logger

    name = c.run_name or f"nas-{c.nas.space.name}"
    wandb = replace(wcfg, tags=["nas", *wcfg.tags])
    return make_wandb_logger(wandb, out, name, asdict(c))


def _search(stage, ctx, model, settings, results, rank, world, init=None) -> Arch:
    if rank == 0:
        measured = model.measure_stage(stage)
        log.info(
            "%s stage: %d decisions, %d new blocks measured",
            stage.name,
            len(stage.decisions),
            measured,
        )
    _barrier(world)
    if rank != 0:
        model.table = LatencyTable(
            model.table.path.parent, model.setup, model.table.rounds, model.table.quantile
        )
    result = run_stage(stage, ctx, settings, init)
    results[stage.name] = {
        "arch": result.arch.describe(),
        "predicted_ms": round(model.predict(stage.space, result.arch), 4),
        "quality": None if result.quality is None else round(result.quality, 4),
        "choice": result.chosen.record(settings.choice),
        "steps": result.steps,
        "wall_s": result.wall_s,
        "decisions": {
            d.name: {f"{o:g}": round(p, 4) for o, p in zip(d.options, probs, strict=True)}
            for d, probs in zip(stage.decisions, result.probabilities, strict=True)
        },
    }
    return result.arch


def finish(
    c: TrainConfig,
    out: Path,
    space: SearchSpace,
    chosen: Arch,
    model: LatencyModel,
    target: dict,
    results: dict,
    least: float,
    wall_start: float,
) -> dict:
    """Write searched.yaml and nas.json; time the chosen student beside the target's."""
    from nas.report import write_report

    spec = arch_to_spec(space, chosen, c.student.name, c.student.drop_rate or 0.2)
    spec = replace(spec, source=f"python -m nas, run {out.name}: {chosen.describe()}")
    spec_path = students.save_spec_file(
        spec,
        out / "searched.yaml",
        header=(
            f"Found by python -m nas in {out} (space {space.name}, {model.setup.describe()}, "
            f"{model.resolution} px, target {target['ms']:.3f} ms).\n"
            f"python -m distill student=searched student.spec_file={out / 'searched.yaml'}"
        ),
    )
    t: TargetConfig = c.nas.target
    by_student = t.ms is None
    specs = [spec] + ([students.get_spec(t.student)] if by_student else [])
    timed = model.table.measure_networks(specs, model.resolution, model.num_classes)
    # a student-defined target is timed again beside the chosen student: the machine's load
    # moves both alike, so the comparison holds even when T0 itself drifted since the start
    target_now = t.scale * timed[1].ms if by_student else target["ms"]
    predicted = model.table.predict(spec, model.resolution, model.num_classes)
    measured = timed[0].ms
    summary = {
        "runtime": model.setup.runtime,
        "runtime_version": model.table.version,
        "precision": model.setup.precision,
        "threads": model.setup.threads,
        "resolution": model.resolution,
        "target_ms": round(target["ms"], 4),
        "target": target,
        "predicted_ms": round(predicted, 4),
        "measured_ms": round(measured, 4),
        "measured_median_ms": round(timed[0].median_ms, 4),
        "measured_vs_target_pct": round(100 * (measured / target_now - 1), 2),
        "target_now_ms": round(target_now, 4),
        "measured_vs_initial_target_pct": round(100 * (measured / target["ms"] - 1), 2),
        "smallest_predicted_ms": round(least, 4),
        "latency_constant_ms": model.table.constant(model.resolution, model.num_classes),
        "latency_table": str(model.table.path),
        "arch": chosen.describe(),
        "space": space.name,
        "stages": results,
        "spec_file": str(spec_path),
        "num_classes": model.num_classes,
        "seed": c.seed,
        "nas": asdict(c.nas),
        "params": sum(
            p.numel()
            for p in students.MobileNetV4(spec, num_classes=model.num_classes).parameters()
        ),
        "output_dir": str(out),
        "total_wall_s": round(time.perf_counter() - wall_start, 1),
    }
    write_json(out / "nas.json", summary)
    summary["report"] = str(write_report(out, summary))
    write_json(out / "nas.json", summary)
    return summary


def retrain(out: Path, summary: dict, overrides: list[str]) -> dict:
    """``python -m distill student=searched student.spec_file=<searched.yaml>`` in
    ``<run>/retrain``, with this command's data overrides: distilled and exported like any
    student; returns its results (or the error)."""
    from hydra.core.hydra_config import HydraConfig

    task = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    passthrough = [a for a in task if not a.lstrip("+~").startswith(("nas", "hydra", "student"))]
    cmd = [
        sys.executable,
        "-m",
        "distill",
        "student=searched",
        f"student.spec_file={summary['spec_file']}",
        f"hydra.run.dir={out / 'retrain'}",
        *passthrough,
        *overrides,
    ]
    log.info("retraining: %s", " ".join(cmd))
    start = time.perf_counter()
    done = subprocess.run(cmd, check=False)
    results_path = out / "retrain" / "results.json"
    if done.returncode != 0 or not results_path.is_file():
        return {"error": f"python -m distill exited with status {done.returncode}", "command": cmd}
    results = json.loads(results_path.read_text())
    return {
        "command": cmd,
        "wall_s": round(time.perf_counter() - start, 1),
        "student_metrics": results.get("student_metrics"),
        "exports": results.get("exports"),
        "output_dir": str(out / "retrain"),
    }


def format_summary(s: dict) -> str:
    lines = [
        f"== search summary: space {s['space']}, {s['runtime']} {s['precision']} {s['threads']} thread(s), {s['resolution']} px",
        f"  architecture      {s['arch']}",
        f"  target T0         {s['target_ms']:.3f} ms",
        f"  predicted         {s['predicted_ms']:.3f} ms",
        f"  measured          {s['measured_ms']:.3f} ms ({s['measured_vs_target_pct']:+.1f}% of T0 timed beside it: {s['target_now_ms']:.3f} ms)",
        f"  spec file         {s['spec_file']}",
        f"  report            {s.get('report')}",
        f"  wall time         {s['total_wall_s']:.0f} s (search and retrain)",
    ]
    r = s.get("retrain")
    if r:
        top1 = (r.get("student_metrics") or {}).get("val/top1")
        lines.append(
            f"  retrained         {'val top-1 %.1f%%' % (100 * top1) if top1 is not None else r.get('error')} ({r.get('output_dir', '')})"
        )
    return "\n".join(lines)
