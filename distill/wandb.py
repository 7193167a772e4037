"""Weights & Biases, configured from Hydra, that never blocks or crashes a run.

Mode: ``WANDB_MODE`` wins (online | offline | disabled); otherwise online only when an API key
is available (``WANDB_API_KEY`` or a ~/.netrc entry), else offline (``wandb sync`` later).
``log_model`` is only honoured online. Any failure to start W&B leaves the run on CSV logs.
"""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distill.config import WandbConfig

log = logging.getLogger(__name__)


def _has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_mode(cfg: WandbConfig) -> str:
    env = os.environ.get("WANDB_MODE")
    if env:
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    if cfg.offline:
        return "offline"
    return "online" if _has_key() else "offline"


def make_wandb_logger(cfg: WandbConfig, out: Path, name: str, hparams: Mapping[str, Any]):
    """A ``WandbLogger`` (or None when disabled or when W&B cannot start); ``hparams`` is the
    run's config as plain data (W&B's run config)."""
    mode = resolve_mode(cfg)
    if mode == "disabled":
        return None
    try:
        from lightning.pytorch.loggers import WandbLogger

        logger = WandbLogger(
            project=cfg.project,
            entity=cfg.entity,
            name=cfg.name or name,
            tags=list(cfg.tags),
            save_dir=str(out),
            offline=mode == "offline",
            log_model=cfg.log_model if mode == "online" else False,
            id=cfg.id,
            settings={"init_timeout": float(cfg.init_timeout), "silent": True},
        )
        # Lightning passes anonymous=None, which W&B 0.31 answers with a deprecation warning
        logger._wandb_init.pop("anonymous", None)
        logger.log_hyperparams(dict(hparams))
        return logger
    except Exception as e:  # never let experiment tracking take a run down
        log.warning("W&B disabled for this run (%s: %s); CSV logs continue", type(e).__name__, e)
        return None


def finish() -> None:
    """Close the open W&B run so the next job of a sweep starts its own; for an offline run,
    say where it is and how to upload it."""
    try:
        import wandb

        run = wandb.run
        if run is None:
            return
        offline = bool(getattr(run.settings, "_offline", False)) or run.settings.mode == "offline"
        run_dir = Path(run.dir).parent
        wandb.finish()
        if offline:
            print(f"W&B run saved offline in {run_dir}; upload it with: wandb sync {run_dir}")
    except Exception as e:
        log.warning("wandb.finish failed: %s", e)
