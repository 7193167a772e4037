"""The search space over UIB networks (arXiv 2404.10518 §6.1, App. A) and its points.

A space fixes the macro layout: a stem, *prefix* stages of a fixed block type (Conv-S's pairs of
ConvBnAct, or a FusedIB, §4: "the second stage is FusedIB") whose widths are searched, then
*UIB* stages whose width, depth and blocks are searched, then the MobileNetV3 head (1x1 -> 960,
pool, 1x1 -> 1280, classifier). A UIB block chooses its start DW and middle DW, each absent, 3x3
or 5x5 (IB, ConvNext-like, ExtraDW and FFN are the four presence patterns), and its expansion.
Later blocks of a stage are skippable (depth); the first never is. A stride-2 block keeps its
middle DW, which carries the stride: every stride-2 UIB of the released models is an ExtraDW,
and the stride then has one home whatever the start DW is.

An ``Arch`` is one point; ``arch_to_spec`` turns it into the ``ModelSpec`` the students are
built from, and ``point_of`` finds the point of a spec (None with the reason when the spec is
not in the space).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Literal

from students.blocks import make_divisible
from students.specs import ConvBnActRow, FusedIBRow, ModelSpec, Row, UIBRow

StageKind = Literal["conv_pair", "fused_ib", "uib"]
PREFIX_KINDS = ("conv_pair", "fused_ib")


@dataclass(frozen=True)
class StageSpace:
    """One stage's choices: output widths; ``expansions`` of a prefix stage's block; ``depth``
    (min, max blocks) of a UIB stage (UIB expansions are the space's)."""

    kind: StageKind
    widths: tuple[int, ...]
    stride: int = 2
    expansions: tuple[float, ...] = (4.0,)
    depth: tuple[int, int] = (1, 1)


@dataclass(frozen=True)
class SearchSpace:
    """A macro layout and the choices at each position (see the module docstring)."""

    name: str
    resolution: int
    stem_widths: tuple[int, ...]
    stages: tuple[StageSpace, ...]
    expansions: tuple[float, ...] = (2.0, 3.0, 4.0, 6.0)
    kernels: tuple[int, ...] = (0, 3, 5)
    act: str = "relu"
    num_features: int = 960
    head_hidden_size: int = 1280

    def __post_init__(self) -> None:
        if not self.stages or self.stages[-1].kind != "uib":
            raise ValueError(f"space {self.name}: the last stage must be a UIB stage")
        for i, s in enumerate(self.stages):
            if s.kind not in (*PREFIX_KINDS, "uib"):
                raise ValueError(f"space {self.name}: stage {i} kind {s.kind!r} unknown")
            lo, hi = s.depth
            if s.kind == "uib" and not 1 <= lo <= hi:
                raise ValueError(f"space {self.name}: stage {i} depth must be 1 <= min <= max")
            if s.kind != "uib" and s.depth != (1, 1):
                raise ValueError(f"space {self.name}: prefix stage {i} has one block")
            if not s.widths or not s.expansions:
                raise ValueError(f"space {self.name}: stage {i} needs widths and expansions")
        if 0 in self.kernels and len(self.kernels) == 1:
            raise ValueError(f"space {self.name}: kernels need a DW size besides 0")

    def mid_kernels(self, stride: int) -> tuple[int, ...]:
        """Middle-DW choices: a stride-2 block keeps its middle DW (module docstring)."""
        return tuple(k for k in self.kernels if k) if stride == 2 else self.kernels


@dataclass(frozen=True)
class BlockChoice:
    """A block's choices: DW kernels (0 absent; UIB only) and expansion."""

    k_start: int
    k_mid: int
    expand: float


@dataclass(frozen=True)
class StageChoice:
    width: int
    blocks: tuple[BlockChoice, ...]  # a prefix stage: one entry, its expansion

    @property
    def depth(self) -> int:
        return len(self.blocks)


@dataclass(frozen=True)
class Arch:
    """One point of a space."""

    stem: int
    stages: tuple[StageChoice, ...]

    def describe(self) -> str:
        """A compact one-line form for logs: widths x depth per stage, then the blocks."""
        parts = [f"stem{self.stem}"]
        for s in self.stages:
            blocks = ",".join(f"{b.k_start}{b.k_mid}e{b.expand:g}" for b in s.blocks)
            parts.append(f"{s.width}x{s.depth}[{blocks}]")
        return " ".join(parts)


def prefix_rows(kind: str, in_chs: int, width: int, expand: float, stride: int) -> list[Row]:
    """A prefix stage's rows: Conv-S's 3x3 -> 1x1 ConvBnAct pair, or one FusedIB."""
    if kind == "conv_pair":
        mid = make_divisible(in_chs * expand)
        return [ConvBnActRow(mid, 3, stride), ConvBnActRow(width, 1)]
    return [FusedIBRow(width, expand, stride)]


def arch_to_spec(
    space: SearchSpace, arch: Arch, name: str = "searched", drop_rate: float = 0.2
) -> ModelSpec:
    """The ``ModelSpec`` of a point: prefix and UIB stages, then the 1x1 -> 960 conv stage."""
    stages, chans = [], arch.stem
    for stage_space, stage in zip(space.stages, arch.stages, strict=True):
        if stage_space.kind == "uib":
            rows = [
                UIBRow(
                    b.k_start, b.k_mid, b.expand, stage.width, stage_space.stride if j == 0 else 1
                )
                for j, b in enumerate(stage.blocks)
            ]
        else:
            b = stage.blocks[0]
            rows = prefix_rows(stage_space.kind, chans, stage.width, b.expand, stage_space.stride)
        stages.append(tuple(rows))
        chans = stage.width
    stages.append((ConvBnActRow(space.num_features, 1),))
    return ModelSpec(
        name=name,
        source=f"search space {space.name}: {arch.describe()}",
        resolution=space.resolution,
        stem=arch.stem,
        act=space.act,
        stages=tuple(stages),
        layer_scale=None,
        drop_rate=drop_rate,
        num_features=space.num_features,
        head_hidden_size=space.head_hidden_size,
    )


class NotInSpace(ValueError):
    """A spec that is not a point of a space; the message says which choice is missing."""


def point_of(space: SearchSpace, spec: ModelSpec) -> Arch:
    """The point of ``space`` whose spec is ``spec``; ``NotInSpace`` says what differs."""

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise NotInSpace(f"{spec.name} is not in space {space.name}: {what}")

    need(spec.layer_scale is None, "it has layer scale (not searched)")
    need(spec.act == space.act, f"activation {spec.act} (space: {space.act})")
    need(spec.stem in space.stem_widths, f"stem {spec.stem} not in {space.stem_widths}")
    need(len(spec.stages) == len(space.stages) + 1, "another number of stages")
    last = spec.stages[-1]
    need(last == (ConvBnActRow(space.num_features, 1),), "another final 1x1 conv stage")
    chosen, chans = [], spec.stem
    for i, (stage_space, rows) in enumerate(zip(space.stages, spec.stages, strict=False)):
        where = f"blocks.{i}"
        if stage_space.kind == "uib":
            need(all(isinstance(r, UIBRow) for r in rows), f"{where} is not all UIB")
            width = rows[0].out
            lo, hi = stage_space.depth
            need(lo <= len(rows) <= hi, f"{where} depth {len(rows)} outside {lo}..{hi}")
            blocks = []
            for j, r in enumerate(rows):
                stride = stage_space.stride if j == 0 else 1
                need(r.out == width and r.stride == stride, f"{where}.{j} width or stride")
                need(r.k_start in space.kernels, f"{where}.{j} start DW {r.k_start}")
                need(r.k_mid in space.mid_kernels(stride), f"{where}.{j} middle DW {r.k_mid}")
                need(r.expand in space.expansions, f"{where}.{j} expansion {r.expand:g}")
                blocks.append(BlockChoice(r.k_start, r.k_mid, float(r.expand)))
        else:
            width = rows[-1].out
            match = [
                e
                for e in stage_space.expansions
                if tuple(prefix_rows(stage_space.kind, chans, width, e, stage_space.stride)) == rows
            ]
            need(bool(match), f"{where} is not a {stage_space.kind} of the space")
            blocks = [BlockChoice(0, 0, float(match[0]))]
        need(width in stage_space.widths, f"{where} width {width} not in {stage_space.widths}")
        chosen.append(StageChoice(width, tuple(blocks)))
        chans = width
    return Arch(spec.stem, tuple(chosen))


def random_arch(space: SearchSpace, rng: random.Random) -> Arch:
    """A uniform sample: every choice drawn independently (depth uniform in its range)."""
    stages = []
    for s in space.stages:
        width = rng.choice(s.widths)
        if s.kind != "uib":
            stages.append(StageChoice(width, (BlockChoice(0, 0, rng.choice(s.expansions)),)))
            continue
        depth = rng.randint(*s.depth)
        blocks = tuple(
            BlockChoice(
                rng.choice(space.kernels),
                rng.choice(space.mid_kernels(s.stride if j == 0 else 1)),
                rng.choice(space.expansions),
            )
            for j in range(depth)
        )
        stages.append(StageChoice(width, blocks))
    return Arch(rng.choice(space.stem_widths), tuple(stages))


def max_arch(space: SearchSpace, block: BlockChoice) -> Arch:
    """The widest, deepest point with every UIB block ``block`` (prefix stages: their largest
    expansion): the network the SuperNet's weights are sized for."""
    stages = []
    for s in space.stages:
        if s.kind == "uib":
            blocks = tuple(block for _ in range(s.depth[1]))
        else:
            blocks = (BlockChoice(0, 0, max(s.expansions)),)
        stages.append(StageChoice(max(s.widths), blocks))
    return Arch(max(space.stem_widths), tuple(stages))


def narrowed(space: SearchSpace, arch: Arch) -> SearchSpace:
    """The space with widths, depths and prefix expansions fixed to ``arch``'s (the fine stage)."""
    stages = tuple(
        replace(
            s,
            widths=(a.width,),
            depth=(a.depth, a.depth) if s.kind == "uib" else (1, 1),
            expansions=(a.blocks[0].expand,) if s.kind != "uib" else s.expansions,
        )
        for s, a in zip(space.stages, arch.stages, strict=True)
    )
    return replace(space, stem_widths=(arch.stem,), stages=stages)
