"""The search loop on real digits shards: a killed stage resumes at its step with the same
controller state (and samples what the uninterrupted run sampled next)."""

from __future__ import annotations

import contextlib
import csv

import pytest
import torch
from hydra import compose, initialize_config_dir

from distill.config import TrainConfig
from nas.app import make_loader_factory, space_from_config
from nas.config import ChoiceConfig, search_config
from nas.search import Context, StageSettings, SupernetTraining, load_checkpoint, run_stage
from nas.space import arch_to_spec
from nas.stages import coarse_stage
from tests.helpers import CONF


class Killed(Exception):
    """Stands for the process dying between two steps."""


def _config(overrides: list[str], out) -> TrainConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "search",
            overrides=["+nas=digits", "+debug=smoke", *overrides, f"paths.output_dir={out}"],
        )
    return search_config(cfg)


def _run(c: TrainConfig, out, kill_at: int | None = None) -> list[dict]:
    space = space_from_config(c.nas.space, 32)
    stage = coarse_stage(space)
    # a latency that grows with the parameter count stands in for the runtime's table here
    ctx = Context(
        SupernetTraining.of(c),
        torch.device("cpu"),
        0,
        1,
        10,
        make_loader_factory(c.data, c.seed, 0, 1, torch.device("cpu")),
        lambda arch: sum(1 for s in arch_to_spec(space, arch).stages for _ in s) * 0.1,
        out,
    )
    settings = StageSettings(
        6, 0.25, 16, 0.2, 2, 0.05, 10.0, 0.95, "abs", -0.1, 1.0, ChoiceConfig("in_band", 0.1, 64)
    )
    rows = []

    def on_step(step: int, row: dict) -> None:
        rows.append(row)
        if step == kill_at:
            raise Killed

    with contextlib.suppress(Killed):
        run_stage(stage, ctx, settings, on_step=on_step)
    return rows


def _decision_names(row: dict) -> list[list[str]]:
    """The p/<decision>/<option> columns of a row, grouped by decision in order."""
    groups: dict[str, list[str]] = {}
    for k in row:
        if k.startswith("p/"):
            groups.setdefault(k.split("/")[1], []).append(k)
    return list(groups.values())


@pytest.mark.slow  # three short searches on real shards (about a minute on 2 cores)
def test_a_killed_search_resumes_at_its_step_with_the_same_controller_state(tiny_cache, tmp_path):
    overrides = [*tiny_cache, "data.shuffle_buffer=32", "data.num_workers=0"]
    whole = _run(_config(overrides, tmp_path / "a"), tmp_path / "a")
    out = tmp_path / "b"
    c = _config(overrides, out)
    before = _run(c, out, kill_at=4)  # the checkpoint of step 4 (after steps 0-3) is the last
    saved = load_checkpoint(out / "checkpoints" / "coarse.pt")
    assert saved["step"] == 4
    module = saved["controller"]["module"]
    logits = [t for k, t in module.items() if k.startswith("logits.")]
    assert any(torch.count_nonzero(t) for t in logits)  # the controller has learnt something
    for logit, name in zip(logits, _decision_names(whole[3]), strict=True):
        saved_probs = torch.softmax(logit, 0).tolist()
        logged = [float(whole[3][k]) for k in name]
        assert saved_probs == pytest.approx(logged, abs=1e-5)  # the state after step 3
    after = _run(c, out)
    assert [r["step"] for r in after] == [4, 5]
    m, total, weight = 0.95, float(module["baseline_sum"]), float(module["baseline_weight"])
    expected = (m * total + (1 - m) * after[0]["reward"]) / (m * weight + (1 - m))
    assert after[0]["baseline"] == pytest.approx(expected)  # continued from the saved baseline
    assert after[0]["arch"] == whole[4]["arch"] == before[4]["arch"]
    for a, b in zip(before[:4], whole[:4], strict=True):
        assert a["arch"] == b["arch"] and a["loss"] == pytest.approx(b["loss"])
    probs = [k for k in whole[3] if k.startswith("p/")]
    assert all(after[0][k] != "" for k in probs)
    with open(out / "nas" / "coarse.csv", newline="") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == [0, 1, 2, 3, 4, 5]  # the killed step 4 written once, by the resumed run
    final = load_checkpoint(out / "checkpoints" / "coarse.pt")
    assert final["step"] == 6
