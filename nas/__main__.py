"""``python -m nas +nas=digits``: the Hydra entry point (conf/search.yaml)."""

import sys

import hydra
from omegaconf import DictConfig

from nas.app import run

APPENDED_GROUPS = ("nas", "debug")


def normalize_overrides(args: list[str]) -> list[str]:
    """``nas=digits`` and ``debug=smoke`` mean ``+nas=digits``, ``+debug=smoke`` (appended
    groups, as ``python -m distill`` treats ``student=``)."""
    return [f"+{a}" if "=" in a and a.split("=", 1)[0] in APPENDED_GROUPS else a for a in args]


@hydra.main(version_base="1.3", config_path="../conf", config_name="search")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    sys.argv[1:] = normalize_overrides(sys.argv[1:])
    main()
