"""The latency table on a real runtime: a table of another runtime version is rebuilt and
says so, a missing runtime is one line with the install command, predictions are the block sum
plus the fitted constant, and a target below the smallest point is refused with its latency."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from distill.cli_checks import UsageError
from nas.config import LatencyConfig
from nas.latency import BlockKey, LatencyTable, Setup, network_blocks
from nas.space import arch_to_spec
from nas.stages import coarse_stage
from students.runtimes import MissingRuntime
from students.specs import ConvBnActRow, UIBRow

KEYS = [
    BlockKey(ConvBnActRow(16, 3, 2), 3, 32, "relu"),
    BlockKey(UIBRow(3, 5, 4.0, 24, 2), 16, 16, "relu"),
]


def _table(tmp_path, rounds=3) -> LatencyTable:
    return LatencyTable(tmp_path, Setup("onnx"), rounds=rounds)


def test_a_table_of_another_runtime_version_is_rebuilt_and_says_so(tmp_path, caplog):
    table = _table(tmp_path)
    assert table.measure_blocks(KEYS) == 2
    data = json.loads(table.path.read_text())
    assert set(data["blocks"]) == {k.text() for k in KEYS}
    data["runtime_version"] = "0.0.1"
    table.path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="nas.latency"):
        again = _table(tmp_path)
    assert again.blocks == {}
    assert "runtime_version '0.0.1'" in again.rebuilt_because
    assert "is not reused" in caplog.text and "measuring it again" in caplog.text
    assert again.measure_blocks(KEYS) == 2  # measured anew, not read back


def test_the_same_setup_reuses_the_table(tmp_path):
    _table(tmp_path).measure_blocks(KEYS)
    again = _table(tmp_path)
    assert again.rebuilt_because is None and again.measure_blocks(KEYS) == 0


def test_a_runtime_that_is_not_installed_is_one_line_with_the_install_command(
    tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(MissingRuntime) as info:
        _table(tmp_path)
    text = str(info.value)
    assert "\n" not in text and "onnxruntime" in text and "pip install -e '.[mobile]'" in text


def test_the_app_turns_a_missing_runtime_into_a_usage_error(tmp_path, monkeypatch):
    from nas.app import LatencyModel

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UsageError, match=r"nas.latency.runtime: .*pip install"):
        LatencyModel(_latency(tmp_path), 32, 10)


def _latency(tmp_path) -> LatencyConfig:
    return LatencyConfig(
        runtime="onnx",
        precision="fp32",
        threads=1,
        rounds=3,
        quantile=0.2,
        calibration_networks=2,
        cache_dir=str(tmp_path),
    )


@pytest.mark.slow  # exports and times two whole networks
def test_prediction_is_the_block_sum_plus_the_fitted_constant(tmp_path, tiny_space):
    table = _table(tmp_path)
    stage = coarse_stage(tiny_space)
    specs = [arch_to_spec(tiny_space, stage.arch([i % 2] * len(stage.decisions))) for i in range(2)]
    table.calibrate(specs, 32, 10)
    c = table.constant(32, 10)
    for spec in specs:
        blocks = sum(table.blocks[k.text()] for k in network_blocks(spec, 32, 10))
        assert table.predict(spec, 32, 10) == pytest.approx(blocks + c)
    record = table.constants[table.constant_key(32, 10)]
    assert record["networks"] == 2 and len(record["measured_ms"]) == 2


def test_a_target_below_the_smallest_architecture_is_refused(tmp_path, tiny_space):
    from nas.app import LatencyModel, check_target

    model = LatencyModel(_latency(tmp_path), 32, 10)
    stage = coarse_stage(tiny_space)
    model.table.calibrate(
        [arch_to_spec(tiny_space, stage.arch([0] * len(stage.decisions)))], 32, 10
    )
    with pytest.raises(
        UsageError, match=r"below the smallest architecture .* ms predicted"
    ) as info:
        check_target(model, tiny_space, (4.0,), 1e-6)
    assert "\n" not in str(info.value)
    least = check_target(model, tiny_space, (4.0,), 1e6)
    assert least > 0


def test_remeasure_times_cached_blocks_again_beside_the_networks(tmp_path, tiny_space, monkeypatch):
    """A block a run needs is timed in the calibration's round-robin, not read from a table an
    earlier run (another machine speed) left: a stale value does not survive ``remeasure``."""
    import nas.latency

    rounds: list[set[str]] = []  # the calls of each round-robin
    real = nas.latency.time_calls

    def spy(calls, *args, **kwargs):
        rounds.append(set(calls))
        return real(calls, *args, **kwargs)

    monkeypatch.setattr(nas.latency, "time_calls", spy)
    stage = coarse_stage(tiny_space)
    spec = arch_to_spec(tiny_space, stage.arch([0] * len(stage.decisions)))
    _table(tmp_path).measure_blocks(KEYS)
    data = json.loads((tmp_path / "onnx-fp32-1t.json").read_text())
    stale = KEYS[1].text()
    data["blocks"][stale] = 99.0  # what a much slower machine would have left
    (tmp_path / "onnx-fp32-1t.json").write_text(json.dumps(data))

    kept = _table(tmp_path)
    kept.calibrate([spec], 32, 10, blocks=KEYS, remeasure=False)
    assert kept.blocks[stale] == 99.0  # reused as cached
    again = _table(tmp_path)
    rounds.clear()
    again.calibrate([spec], 32, 10, blocks=KEYS, remeasure=True)
    assert 0 <= again.blocks[stale] < 1.0
    # one round-robin: every block (the cached ones too) beside the network end to end
    assert len(rounds) == 1
    wanted = {k.text() for k in [*KEYS, *network_blocks(spec, 32, 10)]} | {"network0"}
    assert wanted <= rounds[0]
    assert json.loads((tmp_path / "onnx-fp32-1t.json").read_text())["blocks"][stale] < 1.0
