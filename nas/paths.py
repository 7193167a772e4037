"""What the SuperNet runs in one forward: a ``NetPath`` (widths, and per block the DW kernels
to run and average, the expansion and the weight of its residual branch).

A sampled architecture is a path with one kernel per DW and weight 1 (``path_of``). TuNAS's
warm-up (Bender et al., CVPR 2020, §4; ``tunas/mobile_search.py``: ``increase_ops_probability``)
instead runs every op choice and averages them: ``averaged`` turns a point into that path, with
the DW options of the stage's searched decisions and, when depth is searched, every block up to
the maximum depth, a skippable block's residual branch weighted by the share of depth choices
that keep it (the average of the block and the zero op that depth search puts in its place).
"""

from __future__ import annotations

from dataclasses import dataclass

from nas.space import Arch, SearchSpace


@dataclass(frozen=True)
class BlockPath:
    k_start: tuple[int, ...]  # start-DW kernels run and averaged (0: the identity)
    k_mid: tuple[int, ...]
    expand: float
    weight: float = 1.0  # scale of the residual branch (skippable blocks while averaging)


@dataclass(frozen=True)
class StagePath:
    width: int
    blocks: tuple[BlockPath, ...]


@dataclass(frozen=True)
class NetPath:
    stem: int
    stages: tuple[StagePath, ...]


def path_of(arch: Arch) -> NetPath:
    """The path of one point: only its chosen branches run."""
    return NetPath(
        arch.stem,
        tuple(
            StagePath(
                s.width,
                tuple(BlockPath((b.k_start,), (b.k_mid,), b.expand) for b in s.blocks),
            )
            for s in arch.stages
        ),
    )


def averaged(
    space: SearchSpace,
    arch: Arch,
    start_options: tuple[int, ...] | None,
    mid_options: tuple[int, ...] | None,
    depth_searched: bool,
) -> NetPath:
    """``arch`` with every op choice averaged: DW kernels from the given options (None: the
    arch's own) and, with ``depth_searched``, all blocks up to each stage's maximum depth."""
    stages = []
    for s_space, s in zip(space.stages, arch.stages, strict=True):
        if s_space.kind != "uib":
            stages.append(path_of(Arch(arch.stem, (s,))).stages[0])
            continue
        lo, hi = s_space.depth
        depth = hi if depth_searched else s.depth
        blocks = []
        for j in range(depth):
            b = s.blocks[min(j, s.depth - 1)]
            stride = s_space.stride if j == 0 else 1
            k_start = start_options if start_options is not None else (b.k_start,)
            k_mid = space.mid_kernels(stride) if mid_options is not None else (b.k_mid,)
            if mid_options is not None:
                k_mid = tuple(k for k in mid_options if k in k_mid)
            keep = 1.0
            if depth_searched and j >= lo:
                keep = (hi - j) / (hi - lo + 1)  # depths j+1..hi of lo..hi keep block j
            blocks.append(BlockPath(tuple(k_start), tuple(k_mid), b.expand, keep))
        stages.append(StagePath(s.width, tuple(blocks)))
    return NetPath(arch.stem, tuple(stages))
