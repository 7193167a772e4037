"""SIGTERM (pre-emption, ``scancel``, ``kill``) ends a run non-zero, and never hangs it.

Lightning turns SIGTERM during ``fit`` into ``SIGTERMException``, a ``SystemExit`` with code 0:
a scheduler would take the stopped run for a finished one. ``fit_or_preempted`` re-raises it as
``Preempted`` (exit status 143 = 128 + SIGTERM) once ``last.ckpt`` is saved. Lightning only looks
at its SIGTERM flag between batches, so a run stuck inside a batch would ignore SIGTERM; a second
SIGTERM therefore exits at once (status 143), as does a SIGTERM outside ``fit``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger("distill")

EXIT_STATUS = 128 + signal.SIGTERM


class Preempted(SystemExit):
    """The run was stopped by SIGTERM after saving; exits with status 143."""

    def __init__(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)
        super().__init__(EXIT_STATUS)


class _Escape:
    """Our SIGTERM handler, chained behind Lightning's: counts, and exits on the second one."""

    def __init__(self) -> None:
        self.in_fit = False
        self.received = 0

    def __call__(self, signum, frame) -> None:
        self.received += 1
        if not self.in_fit:
            raise Preempted("SIGTERM received outside training: stopped")
        if self.received > 1:
            print("second SIGTERM: exiting now without waiting for the batch", file=sys.stderr)
            sys.stderr.flush()
            os._exit(EXIT_STATUS)


_escape = _Escape()


def install_sigterm_escape() -> None:
    """Install the handler (main thread only; a no-op elsewhere, e.g. inside a test thread)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _escape)


def fit_or_preempted(trainer, *args, checkpoint=None, **kwargs) -> None:
    """``trainer.fit`` that turns a SIGTERM stop into ``Preempted`` (non-zero) after the save."""
    _escape.in_fit, _escape.received = True, 0
    try:
        trainer.fit(*args, **kwargs)
    except SIGTERMException:
        where = f"; saved {checkpoint}" if checkpoint else ""
        raise Preempted(
            f"stopped by SIGTERM at step {trainer.global_step}{where}; resume with "
            f"ckpt_path=last hydra.run.dir={trainer.default_root_dir}"
        ) from None
    finally:
        _escape.in_fit = False
