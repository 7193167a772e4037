"""The NAS benchmark's commands are valid Hydra overrides (a quoting slip once failed its first
command after the search had been set up)."""

from pathlib import Path

from hydra import compose, initialize_config_dir

from bench.nas_search import RETRAIN, search_command

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_search_command_composes_with_the_retrain_overrides(tmp_path):
    cmd = search_command(1, 2.0, True, tmp_path / "run")
    assert cmd[1:3] == ["-m", "nas"]
    overrides = [a for a in cmd[3:] if not a.startswith("hydra.")]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("search", overrides=overrides)
    assert list(cfg.nas.retrain_overrides) == RETRAIN
    assert cfg.nas.target.scale == 2.0
    assert cfg.nas.retrain is True
    assert cfg.seed == 1
