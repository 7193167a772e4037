"""TuNAS's REINFORCE controller and reward (Bender et al., CVPR 2020, §3; google-research
``tunas/controller.py``, ``tunas/search_space_utils.py``, ``tunas/mobile_search.py``).

- One independent categorical distribution per decision, logits initialised to 0 (uniform);
  the log-probability of a sample sums the *active* decisions only (a block past the sampled
  depth decides nothing).
- Loss -stopgrad(R - b) * log p(sample). The baseline b is an exponential moving average
  (momentum 0.95, zero-debiased) of the mean reward over the replicas, each replica having
  sampled its own architecture; the replicas' gradients are averaged (DDP).
- Adam with beta1 = 0, beta2 = 0.999, eps 1e-8; no entropy term. The learning rate is 0 during
  the warm-up (the first 25% of steps: the controller is off), then grows exponentially from
  ``lr`` to ``lr * ramp`` (10x) by the last step.
- The absolute reward R = Q + beta * |T / T0 - 1| (beta -0.1); ``mnas`` R = Q (T/T0)^beta and
  ``mnas_hard`` R = Q min((T/T0)^beta, 1) are TuNAS's alternatives.
"""

from __future__ import annotations

from typing import get_args

import torch
import torch.distributed as dist
from torch import nn

from nas.config import Reward

REWARDS = get_args(Reward)


def reward(kind: str, quality: float, latency: float, target: float, beta: float) -> float:
    """The reward of an architecture of quality ``quality`` and cost ``latency`` (ms)."""
    ratio = latency / target
    if kind == "abs":
        return quality + beta * abs(ratio - 1.0)
    if kind == "mnas":
        return quality * ratio**beta
    if kind == "mnas_hard":
        return quality * min(ratio**beta, 1.0)
    raise ValueError(f"reward must be one of {REWARDS}, got {kind!r}")


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class Controller(nn.Module):
    """Independent categorical logits over decisions of ``sizes`` options (module docstring).

    Args:
        sizes: options per decision.
        lr: base learning rate (TuNAS: 3e-4 at batch 256, scaled with the batch).
        steps: search steps; ``warmup_steps`` of them with the controller off.
        ramp: the learning rate multiplier reached at the last step.
        momentum: the baseline's moving-average momentum.
    """

    def __init__(
        self,
        sizes: list[int],
        lr: float,
        steps: int,
        warmup_steps: int,
        ramp: float = 10.0,
        momentum: float = 0.95,
    ) -> None:
        super().__init__()
        if any(n < 2 for n in sizes):
            raise ValueError(f"every decision needs two options or more, got {sizes}")
        self.logits = nn.ParameterList([nn.Parameter(torch.zeros(n)) for n in sizes])
        self.base_lr, self.steps, self.warmup_steps = lr, steps, warmup_steps
        self.ramp, self.momentum = ramp, momentum
        self.register_buffer("baseline_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("baseline_weight", torch.zeros((), dtype=torch.float64))
        self.optimizer = torch.optim.Adam(
            self.logits.parameters(), lr=lr, betas=(0.0, 0.999), eps=1e-8
        )

    def sample(self, generator: torch.Generator) -> list[int]:
        """One option index per decision, drawn from the current probabilities."""
        with torch.no_grad():
            return [
                int(torch.multinomial(torch.softmax(lg, 0), 1, generator=generator))
                for lg in self.logits
            ]

    def sample_many(self, generator: torch.Generator, n: int) -> list[list[int]]:
        """``n`` independent draws (one list of option indices each), one multinomial call per
        decision rather than one per draw and decision."""
        with torch.no_grad():
            columns = [
                torch.multinomial(torch.softmax(lg, 0), n, replacement=True, generator=generator)
                for lg in self.logits
            ]
            return torch.stack(columns, 1).tolist()

    def log_probabilities(self) -> list[list[float]]:
        """Each decision's log-probabilities, as plain numbers (scoring many samples)."""
        with torch.no_grad():
            return [torch.log_softmax(lg, 0).tolist() for lg in self.logits]

    def log_prob(self, choices: list[int], active: list[bool]) -> torch.Tensor:
        terms = [
            torch.log_softmax(lg, 0)[c]
            for lg, c, on in zip(self.logits, choices, active, strict=True)
            if on
        ]
        return torch.stack(terms).sum() if terms else torch.zeros(())

    def probabilities(self) -> list[list[float]]:
        with torch.no_grad():
            return [torch.softmax(lg, 0).tolist() for lg in self.logits]

    def argmax(self) -> list[int]:
        """The most likely option of each decision: the search's result."""
        return [int(lg.argmax()) for lg in self.logits]

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return 0.0
        progress = (step - self.warmup_steps) / max(1, self.steps - 1 - self.warmup_steps)
        return self.base_lr * self.ramp ** min(1.0, progress)

    @property
    def baseline(self) -> float:
        w = float(self.baseline_weight)
        return float(self.baseline_sum) / w if w > 0 else 0.0

    def update(
        self, choices: list[int], active: list[bool], reward_value: float, step: int
    ) -> dict[str, float]:
        """One REINFORCE step on this replica's sample; with DDP every replica calls it and
        the rewards (for the baseline) and gradients are averaged across them."""
        world = _world()
        mean_reward = torch.tensor(float(reward_value), dtype=torch.float64)
        if world > 1:
            dist.all_reduce(mean_reward)
            mean_reward /= world
        m = self.momentum
        self.baseline_sum.mul_(m).add_((1 - m) * mean_reward)
        self.baseline_weight.mul_(m).add_(1 - m)  # zero-debiasing: divide by the weight so far
        advantage = reward_value - self.baseline
        self.optimizer.zero_grad(set_to_none=False)
        log_p = self.log_prob(choices, active)
        (-advantage * log_p).backward()
        if world > 1:
            for p in self.logits:
                dist.all_reduce(p.grad)
                p.grad /= world
        lr = self.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        return {
            "reward_mean": float(mean_reward),
            "baseline": self.baseline,
            "advantage": advantage,
            "log_prob": float(log_p.detach()),
            "controller_lr": lr,
            "entropy": self.entropy(),
        }

    def entropy(self) -> float:
        """Summed entropy of the decisions (nats): how undecided the controller still is."""
        with torch.no_grad():
            return float(
                sum(-(torch.softmax(lg, 0) * torch.log_softmax(lg, 0)).sum() for lg in self.logits)
            )

    def state(self) -> dict:
        """Everything that resumes the controller (tensors and plain containers only)."""
        return {"module": self.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state(self, state: dict) -> None:
        self.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
