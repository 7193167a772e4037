"""``python -m distill +student=<name>``: the Hydra entry point (conf/train.yaml)."""

import sys

import hydra
from omegaconf import DictConfig

from distill.app import run
from distill.config import normalize_overrides


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return run(cfg)


if __name__ == "__main__":
    sys.argv[1:] = normalize_overrides(sys.argv[1:])  # student=x means +student=x
    main()
