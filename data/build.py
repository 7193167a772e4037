"""``python -m data.build``: the Hydra app that builds the distillation shards (conf/build.yaml).

Thin on purpose: the work is in data/builder.py, which DataLoader workers can import.
"""

from __future__ import annotations

import logging

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("data.build")


def run(cfg: DictConfig) -> list:
    """Open sources, get the teacher (training it if configured), build every selected set."""
    from data.builder import build_sets, dist_env, summary
    from data.sources import open_source
    from teachers.config import teacher_from_config

    c = OmegaConf.to_container(cfg, resolve=True)
    rank, world, local_rank = dist_env()
    variants = {n: v for n, v in c["variants"].items() if not c["only"] or n in c["only"]}
    if not variants:
        raise SystemExit(f"only={c['only']} selects none of the sets {sorted(c['variants'])}")
    unknown = {v["source"] for v in variants.values()} - set(c["sources"])
    if unknown:
        raise SystemExit(
            f"variants use sources {sorted(unknown)} not in sources {sorted(c['sources'])}"
        )
    needed = {v["source"] for v in variants.values()}
    teacher_cfg = c["teacher"]
    needed |= {teacher_cfg.get(k) for k in ("train_on", "validate_on") if teacher_cfg.get(k)}
    sources = {name: open_source(c["sources"][name]) for name in sorted(needed)}
    for name, src in sources.items():
        log.info(
            "source %s: %s, %d images, %d skipped",
            name,
            src.describe(),
            len(src.items),
            len(src.skipped.entries),
        )
    teacher = None
    if any(v.get("label", True) for v in variants.values()):
        teacher = teacher_from_config(teacher_cfg, sources)
        device = c["device"]
        if device == "auto":
            device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
        teacher.to(device)
    reports = build_sets(
        variants, sources, teacher, c["out_dir"], c["build"], rank, world, c["overwrite"]
    )
    print(summary(reports, c["out_dir"]))
    return reports


@hydra.main(version_base="1.3", config_path="../conf", config_name="build")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
