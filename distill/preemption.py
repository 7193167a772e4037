"""SIGTERM (pre-emption, ``scancel``, ``kill``) ends a run non-zero, and never hangs it.

Lightning turns SIGTERM during ``fit`` into ``SIGTERMException``, a ``SystemExit`` with code 0:
a scheduler would take the stopped run for a finished one. ``fit_or_preempted`` re-raises it as
``Preempted`` (exit status 143 = 128 + SIGTERM) once ``last.ckpt`` is saved. Lightning only looks
at its SIGTERM flag between batches, so a run stuck inside a batch would ignore SIGTERM; a second
SIGTERM therefore exits at once (status 143), as does a SIGTERM outside ``fit``.

A SIGTERM to the whole process group (``scancel``, ``kill -TERM -<pgid>``) also kills the
DataLoader workers. torch's SIGCHLD handler would then raise "DataLoader worker ... is killed by
signal" wherever the main process happens to be, even halfway through an optimizer step, so the
run failed (status 1) with a half-applied step and no ``last.ckpt`` of it. During ``fit`` that
error is therefore held back once a SIGTERM arrived (or when the worker itself died of SIGTERM,
whose group signal may be handled here a moment later): Lightning stops at the end of the batch,
as for any SIGTERM, or the next fetch reports the dead worker; ``stopped_by_sigterm`` takes either
for pre-emption. A worker that dies otherwise (a crash, the OOM killer) still fails the run.

Under DDP, Lightning's own SIGTERM handler (2.6) runs a ``broadcast`` inside the signal handler.
The signal can land while the rank is inside another collective (DDP's gradient all-reduce in
``backward``), and a rank signalled twice (by a group signal and by rank 0 forwarding it to its
children) broadcasts twice: the ranks' collectives no longer pair and the run hangs. Here the
handler only sets the flag (and forwards the signal once); Lightning's per-step broadcast of
rank 0's flag then stops every rank at the same step. SIGTERMs within ``SAME_SIGNAL_S`` of the
first count as one (the group signal and its forward), so the escape is for a later one.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

EXIT_STATUS = 128 + signal.SIGTERM
SAME_SIGNAL_S = 2.0


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
        self.first_at = 0.0
        self.held_back: RuntimeError | None = None  # a worker's SIGTERM death, not raised yet

    def __call__(self, signum, frame) -> None:
        now = time.monotonic()
        if self.received and now - self.first_at < SAME_SIGNAL_S:
            return  # the same stop, delivered twice (process group, then rank 0's forward)
        self.received += 1
        self.first_at = self.first_at or now
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


def _worker_death(exception: BaseException) -> bool:
    """torch's error for a dead DataLoader worker: "DataLoader worker (pid N) is killed by
    signal: ..." (its SIGCHLD handler) or "DataLoader worker (pid(s) N) exited unexpectedly"."""
    return isinstance(exception, RuntimeError) and str(exception).startswith(
        "DataLoader worker (pid"
    )


def _killed_by_sigterm(exception: BaseException) -> bool:
    name = signal.strsignal(signal.SIGTERM)  # "Terminated", as torch's message words it
    return _worker_death(exception) and f"killed by signal: {name}" in str(exception)


def stopped_by_sigterm(exception: BaseException, trainer=None) -> bool:
    """Whether ``exception`` ends ``fit`` for a SIGTERM: Lightning's stop, or a loader worker's
    death after the SIGTERM to the process group had reached this process too."""
    if isinstance(exception, SIGTERMException):
        return True
    return _received(trainer) and _worker_death(exception)


def _received(trainer) -> bool:
    """A SIGTERM reached this process during ``fit`` (our count, or Lightning's flag)."""
    return _escape.received > 0 or bool(getattr(trainer, "received_sigterm", False))


def _guard_worker_deaths(trainer) -> Callable | None:
    """Wrap torch's SIGCHLD handler so a worker's death by SIGTERM is not raised mid-step.

    Installs torch's handler first (it is otherwise set lazily by the first loader with workers,
    above ours); returns the handler to restore, None where signals cannot be set.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    from torch.utils.data._utils import signal_handling

    signal_handling._set_SIGCHLD_handler()
    torch_handler = signal.getsignal(signal.SIGCHLD)
    if not callable(torch_handler):
        return None

    def on_child_exit(signum, frame) -> None:
        if _received(trainer):
            return  # Lightning stops at the end of the batch; the save needs no data
        try:
            torch_handler(signum, frame)
        except RuntimeError as e:
            if not _killed_by_sigterm(e):
                raise
            _escape.held_back = e  # our SIGTERM may be a moment behind; else the fetch fails

    signal.signal(signal.SIGCHLD, on_child_exit)
    return torch_handler


def _flag_only_sigterm_notifier(trainer) -> None:
    """Replace Lightning's SIGTERM notifier (a ``broadcast`` inside the handler: see the module
    docstring) by one that forwards the signal to the launcher's children once and sets the flag
    that Lightning's training loop broadcasts from rank 0 before every step."""
    connector = getattr(trainer, "_signal_connector", None)
    if connector is None or not hasattr(connector, "_sigterm_notifier_fn"):
        return

    def notify(signum, frame) -> None:
        log.info("rank %d received SIGTERM", trainer.global_rank)
        if not connector.received_sigterm:
            launcher = trainer.strategy.launcher
            if launcher is not None:
                launcher.kill(signum)
        connector.received_sigterm = True

    connector._sigterm_notifier_fn = notify  # read when fit registers the handlers


def fit_or_preempted(trainer, *args, checkpoint=None, **kwargs) -> None:
    """``trainer.fit`` that turns a SIGTERM stop into ``Preempted`` (non-zero) after the save."""
    _escape.in_fit, _escape.received, _escape.first_at, _escape.held_back = True, 0, 0.0, None
    _flag_only_sigterm_notifier(trainer)
    restore = _guard_worker_deaths(trainer)
    try:
        trainer.fit(*args, **kwargs)
    except (SIGTERMException, RuntimeError) as e:
        if not stopped_by_sigterm(e, trainer):
            if _escape.held_back is not None and _worker_death(e):
                e.add_note(f"earlier, without a SIGTERM to this process: {_escape.held_back}")
            raise
        where = f"; saved {checkpoint}" if checkpoint else ""
        raise Preempted(
            f"stopped by SIGTERM at step {trainer.global_step}{where}; resume with "
            f"ckpt_path=last hydra.run.dir={trainer.default_root_dir}"
        ) from None
    finally:
        _escape.in_fit = False
        if restore is not None:
            signal.signal(signal.SIGCHLD, restore)
