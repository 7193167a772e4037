"""A latency model for a real mobile runtime: per-block latencies measured on the runtime,
summed, plus a fitted constant.

TuNAS's cost model (Bender et al., CVPR 2020; ``tunas/mobile_cost_model.py``) is linear in
one-hot features of (input filters, output filters, op) per layer: an additive lookup table.
Here each distinct block (its row, input channels, input size, activation) is exported on its
own and timed in the runtime at batch 1 with the configured threads and precision; the
network's latency is the sum of its blocks (stem, every block, the pooled head) plus one
constant, fitted on a few whole random networks timed end to end (what a call costs once, not
once per block: the input copy, the session's own overhead).

Timing (this project's machines are shared): every block and network of a batch is timed in
one round-robin, in a shuffled order each round, so a burst of load hits them alike, and the
median over rounds is kept. With one thread the clock is the calling thread's CPU time
(ONNX Runtime, XNNPACK and LiteRT run a one-thread call on the caller), which other processes
cannot inflate by pre-empting it; with more threads it is wall time. A block's figure is its
median minus that of a trivial graph on the same input (the per-call overhead a whole network
pays once, which the constant holds).

The table is cached per runtime (``<cache>/latency/<runtime>-<precision>-<threads>t.json``).
It records the runtime's version, the CPU and the clock; a table measured under another one is
rebuilt, and the log says why (never silently reused).
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import logging
import os
import platform
import random
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.atomic import write_json
from students.mnv4 import MobileNetV4, build_block, row_out
from students.runtimes import MissingRuntime, get_runtime
from students.specs import ConvBnActRow, ModelSpec, Row

log = logging.getLogger(__name__)

FORMAT = "mnv4-distill/latency-table/1"
RUNTIME_PACKAGES = {"onnx": "onnxruntime", "executorch": "executorch", "litert": "ai-edge-litert"}
PRECISIONS = ("fp32", "int8")
CALIBRATION_VIEWS = 8  # int8: random views fit the scales; kernels do not depend on them


@dataclass(frozen=True)
class Setup:
    """Where latency is measured: runtime, precision and CPU threads."""

    runtime: str
    precision: str = "fp32"
    threads: int = 1

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIME_PACKAGES:
            raise ValueError(
                f"latency runtime {self.runtime!r} unknown; choose from {', '.join(RUNTIME_PACKAGES)}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"latency precision must be one of {PRECISIONS}, got {self.precision!r}"
            )
        if not (isinstance(self.threads, int) and self.threads > 0):
            raise ValueError(f"latency threads must be a positive integer, got {self.threads!r}")

    @property
    def clock(self) -> str:
        return "thread_cpu" if self.threads == 1 else "wall"

    def describe(self) -> str:
        s = "" if self.threads == 1 else "s"
        return f"{self.runtime} {self.precision}, {self.threads} thread{s}"


def check_runtime(setup: Setup) -> str:
    """The runtime's installed version; ``MissingRuntime`` (one line, the install command)
    when its package cannot be imported."""
    get_runtime(setup.runtime).check()
    try:
        return importlib.metadata.version(RUNTIME_PACKAGES[setup.runtime])
    except importlib.metadata.PackageNotFoundError as e:
        raise MissingRuntime(setup.runtime, RUNTIME_PACKAGES[setup.runtime]) from e


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# -- blocks ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeadRow:
    """The pooled head: global pool, 1x1 conv to ``hidden``, BN, act, classifier."""

    hidden: int
    classes: int


@dataclass(frozen=True)
class BlockKey:
    """One block as measured: its row, input channels and size, activation and layer scale."""

    row: Row | HeadRow
    in_chs: int
    size: int
    act: str
    layer_scale: bool = False

    def text(self) -> str:
        fields = ",".join(f"{k}={v:g}" for k, v in asdict(self.row).items())
        scale = ",ls" if self.layer_scale else ""
        return (
            f"{type(self.row).__name__}({fields})|in={self.in_chs}|{self.size}px|{self.act}{scale}"
        )


def _out_size(size: int, row: Row) -> int:
    k, s = getattr(row, "kernel", 1), getattr(row, "stride", 1)
    return (size + 2 * (k // 2) - k) // s + 1


def network_blocks(spec: ModelSpec, resolution: int, num_classes: int) -> list[BlockKey]:
    """The blocks of a student at ``resolution``: the stem, every row, then the head."""
    ls = spec.layer_scale is not None
    stem = ConvBnActRow(spec.stem, 3, 2)
    keys = [BlockKey(stem, 3, resolution, spec.act)]
    chans, size = spec.stem, _out_size(resolution, stem)
    for stage in spec.stages:
        for row in stage:
            keys.append(
                BlockKey(row, chans, size, spec.act, ls and not isinstance(row, ConvBnActRow))
            )
            chans, size = row_out(row, chans), _out_size(size, row)
    keys.append(BlockKey(HeadRow(spec.head_hidden_size, num_classes), chans, size, spec.act))
    return keys


class _Head(nn.Module):
    def __init__(self, key: BlockKey) -> None:
        super().__init__()
        row = key.row
        self.conv_head = nn.Conv2d(key.in_chs, row.hidden, 1, bias=False)
        self.norm_head = nn.BatchNorm2d(row.hidden)
        self.act = nn.ReLU() if key.act == "relu" else nn.GELU()
        self.classifier = nn.Linear(row.hidden, row.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean((2, 3), keepdim=True)
        return self.classifier(self.act(self.norm_head(self.conv_head(x))).flatten(1))


def null_text(key: BlockKey) -> str:
    """The name of the trivial graph timed beside a block (one per input shape)."""
    return f"null|in={key.in_chs}|{key.size}px"


class _Null(nn.Module):
    """A trivial graph on a block's input: what one runtime call costs beyond its work."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1.5


def block_module(key: BlockKey) -> nn.Module:
    """The eval-mode module of a key (random weights: speed does not depend on them)."""
    if isinstance(key.row, HeadRow):
        return _Head(key).eval()
    spec = ModelSpec(
        "block", "", key.size, key.in_chs, key.act, (), 1e-5 if key.layer_scale else None, 0.0
    )
    return build_block(key.row, key.in_chs, spec).eval()


# -- runtimes --------------------------------------------------------------------------------
Call = Callable[[], object]


class _Named(nn.Module):
    """A module with ``in_chans``, which the runtime adapters read for their example input."""

    def __init__(self, inner: nn.Module, in_chans: int) -> None:
        super().__init__()
        self.inner, self.in_chans = inner, in_chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class Loader:
    """Turns a module and its input into a timed call of the runtime.

    ONNX: exported by TorchScript-based ``torch.onnx.export`` (0.5 s a block here, against 5 s
    for the dynamo exporter that ``students.runtimes.onnx`` ships: both give onnxruntime the same
    kernels, and the per-block table needs hundreds of exports); int8 is that graph through
    ``students.runtimes.onnx.quantize_onnx``. ExecuTorch and LiteRT go through their
    ``students.runtimes`` adapters (a few seconds a block).
    """

    def __init__(self, setup: Setup, workdir: Path) -> None:
        self.setup, self.workdir = setup, workdir
        self._n = 0

    def __call__(self, module: nn.Module, x: torch.Tensor) -> Call:
        self._n += 1
        cal = None
        if self.setup.precision == "int8":
            cal = torch.randn(CALIBRATION_VIEWS, *x.shape[1:])
        if self.setup.runtime == "onnx":
            return self._onnx(module.eval(), x, cal)
        rt = get_runtime(self.setup.runtime)
        path = self.workdir / f"m{self._n}{rt.suffix}"
        rt.export(_Named(module.eval(), x.shape[1]), path, x.shape[-1], {}, cal)
        predict = rt.load(path, self.setup.threads)
        xn = x.numpy()
        return lambda: predict(xn)

    def _onnx(self, module: nn.Module, x: torch.Tensor, cal: torch.Tensor | None) -> Call:
        import onnxruntime as ort

        buffer = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, (x,), buffer, dynamo=False, input_names=["x"], output_names=["y"]
            )
        data = buffer.getvalue()
        if cal is not None:
            from students.runtimes.onnx import quantize_onnx

            fp32 = self.workdir / f"m{self._n}.onnx"
            out = self.workdir / f"m{self._n}.int8.onnx"
            fp32.write_bytes(data)
            quantize_onnx(fp32, out, cal, name="x")
            data = out.read_bytes()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.setup.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        feed = {"x": np.ascontiguousarray(x.numpy())}
        return lambda: session.run(None, feed)


def time_calls(
    calls: dict[str, Call], rounds: int, threads: int, seed: int = 0
) -> dict[str, list[float]]:
    """ms of every call in each round, every call once per round in a shuffled order."""
    clock = time.thread_time if threads == 1 else time.perf_counter
    names = list(calls)
    for name in names:  # warm-up: first calls allocate and pre-pack
        for _ in range(3):
            calls[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    rng = random.Random(seed)
    for _ in range(rounds):
        rng.shuffle(names)
        for n in names:
            start = clock()
            calls[n]()
            times[n].append(1000 * (clock() - start))
    return times


def quantile(samples: list[float], q: float) -> float:
    return float(np.quantile(samples, q))


# -- the table ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timing:
    """A whole network timed end to end: the table's quantile of the rounds, and the median."""

    ms: float
    median_ms: float


class LatencyTable:
    """Measured block latencies and fitted constants of one ``Setup`` (module docstring).

    Args:
        cache_dir: where ``<runtime>-<precision>-<threads>t.json`` lives.
        setup: runtime, precision, threads.
        rounds: round-robin rounds per measurement.
        quantile: which quantile of the rounds a figure is. The default 0.2 keeps the calls
            least disturbed by other jobs sharing the cores (``bench/nas_latency.py`` reports
            the model's error with it and with medians).
    """

    def __init__(
        self, cache_dir: str | os.PathLike, setup: Setup, rounds: int = 30, quantile: float = 0.2
    ) -> None:
        if not 0 <= quantile <= 1:
            raise ValueError(f"latency quantile must be in [0, 1], got {quantile}")
        self.setup, self.rounds, self.quantile = setup, rounds, quantile
        self.version = check_runtime(setup)
        self.path = Path(cache_dir) / f"{setup.runtime}-{setup.precision}-{setup.threads}t.json"
        self.header = {
            "format": FORMAT,
            "runtime": setup.runtime,
            "runtime_version": self.version,
            "precision": setup.precision,
            "threads": setup.threads,
            "clock": setup.clock,
            "quantile": quantile,
            "cpu": cpu_name(),
        }
        self.blocks: dict[str, float] = {}
        self.constants: dict[str, dict] = {}
        self.rebuilt_because: str | None = None
        self.samples: dict[str, list[float]] = {}  # this process's raw timings (benchmarks)
        self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            return
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            self.rebuilt_because = f"it could not be read ({type(e).__name__})"
        else:
            differ = [
                f"{k} {data.get(k)!r} (now {v!r})"
                for k, v in self.header.items()
                if data.get(k) != v
            ]
            if not differ:
                self.blocks = {k: float(v) for k, v in data.get("blocks", {}).items()}
                self.constants = dict(data.get("constants", {}))
                return
            self.rebuilt_because = "it was measured with " + ", ".join(differ)
        log.warning(
            "latency table %s is not reused: %s; measuring it again",
            self.path,
            self.rebuilt_because,
        )

    def save(self) -> None:
        """Write the table (temporary name, then rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            **self.header,
            "blocks": dict(sorted(self.blocks.items())),
            "constants": self.constants,
        }
        write_json(self.path, data, indent=1)

    def measure_blocks(self, keys: Iterable[BlockKey]) -> int:
        """Measure the keys not in the table yet, in one round-robin (pass every block a search
        stage can use at once: the longer the round, the colder each block's weights, as in a
        whole network), and save; returns how many were measured."""
        return self.measure(keys, [], 0, 0)[0]

    def measure(
        self,
        keys: Iterable[BlockKey],
        specs: list[ModelSpec],
        resolution: int,
        num_classes: int,
        remeasure: bool = False,
    ) -> tuple[int, list[Timing]]:
        """Blocks (those not in the table, or all with ``remeasure``) and whole networks timed
        in the same rounds, so that both see the same machine: on a shared VM its speed drifts
        by half within seconds, and a table assembled from separate measurements mixes
        speeds. Returns how many blocks were measured and the networks' timings."""
        todo = {k.text(): k for k in keys if remeasure or k.text() not in self.blocks}
        if not todo and not specs:
            return 0, []
        what = f"{len(todo)} blocks" + (f" and {len(specs)} networks" if specs else "")
        log.info("measuring %s on %s", what, self.setup.describe())
        start = time.perf_counter()
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as tmp:
            load = Loader(self.setup, Path(tmp))
            calls: dict[str, Call] = {}
            null_of: dict[str, str] = {}
            for text, key in todo.items():
                x = torch.randn(1, key.in_chs, key.size, key.size)
                calls[text] = load(block_module(key), x)
                null_of[text] = null_text(key)
                if null_of[text] not in calls:
                    calls[null_of[text]] = load(_Null(), x)
            if specs:
                x = torch.randn(1, 3, resolution, resolution)
                for i, spec in enumerate(specs):
                    model = MobileNetV4(spec, num_classes=num_classes, channels_last=False)
                    calls[f"network{i}"] = load(model, x)
            times = time_calls(calls, self.rounds, self.setup.threads, seed=1)
        self.samples.update(times)
        ms = {k: quantile(v, self.quantile) for k, v in times.items()}
        for text in todo:
            self.blocks[text] = round(ms[text] - ms[null_of[text]], 5)
        if todo:
            self.save()
        timed = [
            Timing(ms[f"network{i}"], float(np.median(times[f"network{i}"])))
            for i in range(len(specs))
        ]
        log.info("measured %s in %.0f s", what, time.perf_counter() - start)
        return len(todo), timed

    def block_sum(self, spec: ModelSpec, resolution: int, num_classes: int) -> float:
        """Sum of the spec's measured blocks (``KeyError`` naming a block not measured)."""
        total = 0.0
        for key in network_blocks(spec, resolution, num_classes):
            text = key.text()
            if text not in self.blocks:
                raise KeyError(f"block {text} not measured: call measure_blocks first")
            total += self.blocks[text]
        return total

    @staticmethod
    def constant_key(resolution: int, num_classes: int) -> str:
        return f"{resolution}px|{num_classes}classes"

    def constant(self, resolution: int, num_classes: int) -> float | None:
        entry = self.constants.get(self.constant_key(resolution, num_classes))
        return None if entry is None else float(entry["ms"])

    def predict(self, spec: ModelSpec, resolution: int, num_classes: int) -> float:
        """Predicted ms: the block sum plus the fitted constant (``KeyError`` before fitting)."""
        c = self.constant(resolution, num_classes)
        if c is None:
            raise KeyError(f"no fitted constant at {resolution} px, {num_classes} classes")
        return self.block_sum(spec, resolution, num_classes) + c

    def measure_networks(
        self, specs: list[ModelSpec], resolution: int, num_classes: int
    ) -> list[Timing]:
        """Whole students timed end to end in one round-robin."""
        return self.measure([], specs, resolution, num_classes)[1]

    def calibrate(
        self,
        calibration: list[ModelSpec],
        resolution: int,
        num_classes: int,
        also: list[ModelSpec] = (),
        blocks: Iterable[BlockKey] = (),
        remeasure: bool = False,
    ) -> list[Timing]:
        """Fit the constant: the median of (end to end - block sum) over ``calibration``
        networks. Their blocks, ``blocks`` (those a search will use) and the ``also`` networks
        (a target) are timed in the same round-robin (with ``remeasure`` every block anew, not
        only those missing), so that the constant, the blocks and the target see one machine;
        returns the ``also`` timings."""
        keys = [*blocks]
        keys += [
            k for s in [*calibration, *also] for k in network_blocks(s, resolution, num_classes)
        ]
        _, timed = self.measure(keys, [*calibration, *also], resolution, num_classes, remeasure)
        cal = timed[: len(calibration)]
        sums = [self.block_sum(s, resolution, num_classes) for s in calibration]
        c = statistics.median(t.ms - s for t, s in zip(cal, sums, strict=True))
        self.constants[self.constant_key(resolution, num_classes)] = {
            "ms": round(c, 5),
            "networks": len(calibration),
            "measured_ms": [round(t.ms, 4) for t in cal],
            "block_sum_ms": [round(s, 4) for s in sums],
        }
        self.save()
        return timed[len(calibration) :]
