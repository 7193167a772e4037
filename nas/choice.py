"""How a stage's controller becomes one architecture.

TuNAS takes each decision's most likely option, after ~10^5 controller steps when the
distribution has collapsed onto one network. A short search (digits: 300 steps per stage) ends
with the distribution still spread, and the per-decision argmax of spread marginals can be a
network the controller rarely sampled, far from the target: a digits search at Conv-S's latency
took the widest and deepest last stage that way and landed 71% over T0.

``in_band`` (the default) keeps the rule's intent, the controller's most probable network, under
the constraint the reward expresses: it draws ``samples`` networks from the final distribution
(plus the argmax), keeps those whose predicted latency is within ``band`` of T0 and returns the
one of highest probability (the product over the decisions it uses: a block past its stage's
depth decides nothing). With none in the band it returns the one closest to T0. With a collapsed
distribution both rules give the same network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from nas.config import ChoiceConfig
from nas.controller import Controller
from nas.space import Arch
from nas.stages import StageSearch


@dataclass(frozen=True)
class Chosen:
    arch: Arch
    predicted_ms: float
    log_prob: float
    candidates: int  # distinct networks considered
    in_band: int  # of them within the band
    argmax: Arch
    argmax_ms: float

    def record(self, rule: ChoiceConfig) -> dict:
        """What ``nas.json`` keeps of the choice."""
        return {
            "rule": rule.rule,
            "band": rule.band,
            "candidates": self.candidates,
            "in_band": self.in_band,
            "log_prob": round(self.log_prob, 4),
            "argmax_arch": self.argmax.describe(),
            "argmax_predicted_ms": round(self.argmax_ms, 4),
        }


def choose(
    controller: Controller,
    stage: StageSearch,
    latency: Callable[[Arch], float],
    target_ms: float,
    rule: ChoiceConfig,
    seed: int,
) -> Chosen:
    """The stage's result under ``rule`` (module docstring). ``seed`` draws the candidates, the
    same on every replica so that they agree on the result."""
    top = controller.argmax()
    top_arch = stage.arch(top)
    top_ms = latency(top_arch)
    tables = controller.log_probabilities()

    def log_p(choices: list[int]) -> float:
        """The network's probability: the decisions it uses (``Controller.log_prob``)."""
        on = stage.active(choices)
        return sum(t[c] for t, c, a in zip(tables, choices, on, strict=True) if a)

    def miss(ms: float) -> float:
        return abs(ms / target_ms - 1)

    if rule.rule == "argmax":
        hit = int(miss(top_ms) <= rule.band + 1e-12)
        return Chosen(top_arch, top_ms, log_p(top), 1, hit, top_arch, top_ms)
    generator = torch.Generator().manual_seed(seed)
    seen: dict[Arch, tuple[float, float]] = {top_arch: (log_p(top), top_ms)}
    for choices in controller.sample_many(generator, rule.samples):
        arch = stage.arch(choices)
        if arch not in seen:
            seen[arch] = (log_p(choices), latency(arch))
    in_band = [a for a, (_, ms) in seen.items() if miss(ms) <= rule.band + 1e-12]
    if in_band:
        best = max(in_band, key=lambda a: seen[a][0])
    else:
        best = min(seen, key=lambda a: (miss(seen[a][1]), -seen[a][0]))
    lp, ms = seen[best]
    return Chosen(best, ms, lp, len(seen), len(in_band), top_arch, top_ms)
