"""The two search stages of arXiv 2404.10518 §6.1 (Tab. 4) as sets of controller decisions.

- *Coarse*: the widths (stem, every stage, a prefix stage's expansion) and the depth of each UIB
  stage, every UIB block an IB with expansion 4 and a 3x3 middle DW.
- *Fine*: on the coarse result (its widths and depths fixed), each UIB block's start DW and
  middle DW (absent, 3x3, 5x5) and, when given more than one, its expansion (the paper: 4).

The paper does not say how stage 1 feeds stage 2; the fine stage takes the coarse stage's
result (nas/choice.py: its controller's most probable network near the target). ``StageSearch(widths=True, blocks=True)`` is the one-stage search of
the paper's Tab. 4 baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

from nas.paths import NetPath, averaged, path_of
from nas.space import Arch, BlockChoice, SearchSpace, StageChoice, narrowed, prefix_rows
from students.specs import ConvBnActRow, Row, UIBRow


@dataclass(frozen=True)
class Decision:
    name: str
    options: tuple


IB_E4_K3 = BlockChoice(0, 3, 4.0)


class StageSearch:
    """The decisions of one search stage and how a choice of options makes a point.

    Args:
        name: ``coarse``, ``fine`` (or ``one``).
        space: the space the SuperNet spans.
        widths: search widths and depths (else: the space's only ones).
        blocks: search each UIB block's DWs and expansion (else: every block ``block``).
        block: the fixed block when ``blocks`` is off.
        expansions: the UIB expansions searched when ``blocks`` is on.
    """

    def __init__(
        self,
        name: str,
        space: SearchSpace,
        widths: bool,
        blocks: bool,
        block: BlockChoice = IB_E4_K3,
        expansions: tuple[float, ...] = (4.0,),
    ) -> None:
        self.name, self.space, self.block = name, space, block
        self.search_widths, self.search_blocks = widths, blocks
        self.expansions = tuple(float(e) for e in expansions) if blocks else (block.expand,)
        missing = [e for e in self.expansions if e not in space.expansions]
        if missing:
            raise ValueError(
                f"expansions {missing} are not in space {space.name}'s {space.expansions}"
            )
        self.start_kernels = space.kernels if blocks else (block.k_start,)
        self.mid_kernels = space.kernels if blocks else (block.k_mid,)
        self.decisions: list[Decision] = []
        self._add("stem.width", space.stem_widths, widths)
        for i, s in enumerate(space.stages):
            self._add(f"stage{i}.width", s.widths, widths)
            if s.kind != "uib":
                self._add(f"stage{i}.expand", s.expansions, widths)
                continue
            self._add(f"stage{i}.depth", tuple(range(s.depth[0], s.depth[1] + 1)), widths)
            for j in range(s.depth[1]):
                p = f"stage{i}.block{j}"
                self._add(f"{p}.k_start", space.kernels, blocks)
                self._add(f"{p}.k_mid", space.mid_kernels(s.stride if j == 0 else 1), blocks)
                self._add(f"{p}.expand", self.expansions, blocks)
        self.index = {d.name: i for i, d in enumerate(self.decisions)}

    def _add(self, name: str, options: tuple, searched: bool) -> None:
        if searched and len(options) > 1:
            self.decisions.append(Decision(name, tuple(options)))

    @property
    def sizes(self) -> list[int]:
        return [len(d.options) for d in self.decisions]

    def _value(self, choices: list[int], name: str, default):
        i = self.index.get(name)
        return default if i is None else self.decisions[i].options[choices[i]]

    def arch(self, choices: list[int]) -> Arch:
        """The point of one option index per decision."""
        v = self._value
        stages = []
        for i, s in enumerate(self.space.stages):
            width = v(choices, f"stage{i}.width", max(s.widths))
            if s.kind != "uib":
                expand = v(choices, f"stage{i}.expand", max(s.expansions))
                stages.append(StageChoice(width, (BlockChoice(0, 0, float(expand)),)))
                continue
            depth = v(choices, f"stage{i}.depth", s.depth[1])
            blocks = []
            for j in range(depth):
                p = f"stage{i}.block{j}"
                blocks.append(
                    BlockChoice(
                        v(choices, f"{p}.k_start", self.block.k_start),
                        v(choices, f"{p}.k_mid", self.block.k_mid),
                        float(v(choices, f"{p}.expand", self.block.expand)),
                    )
                )
            stages.append(StageChoice(width, tuple(blocks)))
        return Arch(v(choices, "stem.width", max(self.space.stem_widths)), tuple(stages))

    def active(self, choices: list[int]) -> list[bool]:
        """Which decisions the sample used: a block past its stage's sampled depth did not."""
        depth = {}
        for i, s in enumerate(self.space.stages):
            if s.kind == "uib":
                depth[i] = self._value(choices, f"stage{i}.depth", s.depth[1])
        out = []
        for d in self.decisions:
            parts = d.name.split(".")
            if len(parts) == 3 and parts[1].startswith("block"):
                stage, block = int(parts[0][5:]), int(parts[1][5:])
                out.append(block < depth[stage])
            else:
                out.append(True)
        return out

    def block_options(self, stride: int) -> list[BlockChoice]:
        """Every choice of one UIB block of this stage at ``stride``."""
        if not self.search_blocks:
            return [self.block]
        return [
            BlockChoice(a, b, e)
            for a in self.space.kernels
            for b in self.space.mid_kernels(stride)
            for e in self.expansions
        ]

    def sampled_rows(self) -> list[tuple[Row, int, int]]:
        """Every (row, input channels, input size) a sample of this stage can contain, the
        stem and the final 1x1 conv included: what the latency table must hold."""
        space, out = self.space, []
        size, widths = space.resolution, space.stem_widths
        for w in widths:
            out.append((ConvBnActRow(w, 3, 2), 3, size))
        size = (size + 1) // 2
        for s in space.stages:
            after = (size + 1) // 2 if s.stride == 2 else size
            for w_in in widths:
                for w in s.widths:
                    if s.kind != "uib":
                        for e in s.expansions:
                            rows, chans, at = prefix_rows(s.kind, w_in, w, e, s.stride), w_in, size
                            for row in rows:
                                out.append((row, chans, at))
                                chans, at = row.out, (at + 1) // 2 if row.stride == 2 else at
                        continue
                    for b in self.block_options(s.stride):
                        out.append((UIBRow(b.k_start, b.k_mid, b.expand, w, s.stride), w_in, size))
            if s.kind == "uib" and s.depth[1] > 1:
                for w in s.widths:
                    for b in self.block_options(1):
                        out.append((UIBRow(b.k_start, b.k_mid, b.expand, w, 1), w, after))
            widths, size = s.widths, after
        for w in widths:
            out.append((ConvBnActRow(space.num_features, 1), w, size))
        return out

    def largest(self, arch: Arch) -> Arch:
        """``arch`` with the largest widths and expansions (TuNAS's increase_filters)."""
        stages = []
        for s, a in zip(self.space.stages, arch.stages, strict=True):
            if s.kind != "uib":
                stages.append(StageChoice(max(s.widths), (BlockChoice(0, 0, max(s.expansions)),)))
                continue
            blocks = tuple(BlockChoice(b.k_start, b.k_mid, max(self.expansions)) for b in a.blocks)
            stages.append(StageChoice(max(s.widths), blocks))
        return Arch(max(self.space.stem_widths), tuple(stages))

    def path(self, arch: Arch, all_ops: bool = False, largest: bool = False) -> NetPath:
        """What the SuperNet runs for ``arch``; in the warm-up, with ``largest`` the widths are
        forced to the largest and with ``all_ops`` every op choice runs, averaged."""
        if largest:
            arch = self.largest(arch)
        if not all_ops:
            return path_of(arch)
        depth = self.search_widths and any(
            s.kind == "uib" and s.depth[0] < s.depth[1] for s in self.space.stages
        )
        kernels = self.space.kernels if self.search_blocks else None
        return averaged(self.space, arch, kernels, kernels, depth)


def coarse_stage(space: SearchSpace, block: BlockChoice = IB_E4_K3) -> StageSearch:
    """Stage 1: widths and depths, every block ``block`` (IB, expansion 4, 3x3)."""
    return StageSearch("coarse", space, widths=True, blocks=False, block=block)


def fine_stage(space: SearchSpace, coarse: Arch, expansions: tuple[float, ...]) -> StageSearch:
    """Stage 2: the DWs (and expansions) of every block of the coarse result."""
    return StageSearch(
        "fine", narrowed(space, coarse), widths=False, blocks=True, expansions=expansions
    )
