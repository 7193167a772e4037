"""What the live teacher cost a run: the share of samples it labelled and of the step time.

Offline distillation exists to avoid running the teacher in the loop; online runs it on every
sample; hybrid on the live sets' samples only. ``TeacherCost`` counts the training samples and
those the teacher labelled, and times the teacher's forwards and the whole training steps. On
CUDA the spans are timed with CUDA events (read once they completed), so measuring never stalls
the device; on the CPU with ``time.perf_counter``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

PENDING_LIMIT = 256  # CUDA spans kept before the completed ones are read


class _Spans:
    """Seconds summed over timed spans (CPU clock or CUDA events)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._pending: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._open: float | torch.cuda.Event | None = None

    def start(self, device: torch.device) -> None:
        if device.type == "cuda":
            self._open = torch.cuda.Event(enable_timing=True)
            self._open.record()
        else:
            self._open = time.perf_counter()

    def stop(self) -> None:
        begin, self._open = self._open, None
        if begin is None:
            return
        if isinstance(begin, float):
            self.seconds += time.perf_counter() - begin
            return
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        self._pending.append((begin, end))
        if len(self._pending) > PENDING_LIMIT:
            self._read(wait=False)

    def _read(self, wait: bool) -> None:
        left = []
        for begin, end in self._pending:
            if wait or end.query():
                end.synchronize()
                self.seconds += begin.elapsed_time(end) / 1000
            else:
                left.append((begin, end))
        self._pending = left

    def total(self) -> float:
        self._read(wait=True)
        return self.seconds


class TeacherCost:
    """Training samples, teacher-labelled samples, teacher seconds and step seconds."""

    def __init__(self) -> None:
        self.samples = 0
        self.forwards = 0
        self._teacher, self._steps = _Spans(), _Spans()

    def teacher(self, fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor):
        """``fn(images)`` (a teacher forward), counted and timed."""
        self._teacher.start(images.device)
        out = fn(images)
        self._teacher.stop()
        self.forwards += images.shape[0]
        return out

    def step_started(self, device: torch.device) -> None:
        self._steps.start(device)

    def step_ended(self, samples: int) -> None:
        self._steps.stop()
        self.samples += samples

    def state(self) -> dict:
        """Plain numbers (this rank's), for checkpoints and for summing across ranks."""
        return {
            "samples": self.samples,
            "forwards": self.forwards,
            "teacher_s": self._teacher.total(),
            "step_s": self._steps.total(),
        }

    def load(self, state: dict) -> None:
        self.samples, self.forwards = int(state["samples"]), int(state["forwards"])
        self._teacher.seconds, self._steps.seconds = state["teacher_s"], state["step_s"]


def cost_summary(state: dict) -> dict:
    """``teacher_forward_share`` (labelled / trained samples: 0 offline, 1 online) and
    ``teacher_time_share`` (teacher seconds / training-step seconds) with their counts."""
    samples, step_s = state["samples"], state["step_s"]
    return {
        "teacher_forward_share": round(state["forwards"] / samples, 4) if samples else None,
        "teacher_time_share": round(state["teacher_s"] / step_s, 4) if step_s else None,
        "teacher_forwards": int(state["forwards"]),
        "samples_trained": int(samples),
        "teacher_s": round(state["teacher_s"], 2),
        "step_s": round(step_s, 2),
    }
