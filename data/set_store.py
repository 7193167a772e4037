"""Where ``data.build`` writes one set: a local directory, or a prefix in object storage.

A remote set is built in a local staging directory, one shard at a time: each shard is uploaded
when it is sealed (the tar, then its record: a shard counts as built once both are there) and
its local copy removed; the manifest is uploaded last, so a prefix without ``manifest.json`` is
an unfinished set that no reader takes for complete, and a killed build resumes from the shards
already uploaded. Object stores make each upload appear whole or not at all.

Two builders of one set never interleave: each takes the set's lock for its (rank, world) for
the whole build, so a second ``python -m data.build`` waits for the first and then finds the set
built (the ranks of one ``torchrun`` build hold different locks and build disjoint shards).
Locally the lock is a ``filelock`` file, released by the OS if its holder dies. In object storage
it is an object created only if absent (a conditional PUT), naming its holder and rewritten by it
every ``HEARTBEAT_S``; a lock whose holder is a dead process on this host, or that has not been
rewritten for ``STALE_S``, is taken over. A builder that finds its lock taken over stops before
uploading another shard.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from data import remote, urls

log = logging.getLogger(__name__)

HEARTBEAT_S = 30.0
STALE_S = 300.0
POLL_S = 2.0


class LockError(RuntimeError):
    """A set's build lock that could not be taken, or was lost; names the lock and its holder."""


def staging_root() -> Path:
    """Local room for shards on their way to object storage (``DISTILL_STAGING`` or the temp dir)."""
    import tempfile

    return Path(os.environ.get("DISTILL_STAGING") or tempfile.gettempdir()) / "distill-staging"


class SetStore:
    """One set's files at ``<out_dir>/<name>``; ``dir`` is where its shards are written first."""

    def __init__(self, out_dir: str | Path, name: str) -> None:
        urls.check_writable(out_dir)
        self.url = urls.join(urls.check(out_dir), name)
        self.remote = urls.is_remote(self.url)
        if self.remote:
            digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
            self.dir = staging_root() / digest / name
        else:
            self.dir = urls.local_path(self.url)
        self._lock: _Lease | None = None

    def file(self, name: str) -> str:
        return urls.join(self.url, name)

    def names(self) -> set[str]:
        """Every file of the set (one listing)."""
        if self.remote:
            return set(remote.list_names(self.url))
        return {p.name for p in self.dir.iterdir()} if self.dir.is_dir() else set()

    def exists(self, name: str) -> bool:
        return remote.exists(self.file(name))

    def read_json(self, name: str) -> dict | None:
        try:
            return json.loads(remote.read_bytes(self.file(name)))
        except FileNotFoundError:
            return None

    def write_json(self, name: str, obj) -> None:
        from data.shards import write_set_json

        self.check_lock()
        write_set_json(self.file(name), obj)

    def clear(self) -> None:
        """Delete every file of the set (``overwrite=true``), the lock excepted."""
        for name in self.names():
            if name.startswith(".build-") and name.endswith(".lock"):
                continue
            if self.remote:
                remote.delete(self.file(name))
            elif (self.dir / name).is_file():
                (self.dir / name).unlink()

    def publish(self, shard: str) -> None:
        """Upload a sealed shard (tar, then its record) and drop the local tar."""
        if not self.remote:
            return
        self.check_lock()
        tar = self.dir / shard
        record = tar.with_suffix(".json")
        remote.put_file(tar, self.file(shard))
        remote.put_file(record, self.file(record.name))
        tar.unlink()

    def wait_for(self, name: str, timeout_s: float, message: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.exists(name):
            if time.monotonic() > deadline:
                raise TimeoutError(message)
            time.sleep(POLL_S)

    def check_lock(self) -> None:
        if self._lock is not None and self._lock.lost:
            raise LockError(self._lock.lost)

    @contextlib.contextmanager
    def lock(self, rank: int, world: int, wait_s: float) -> Iterator[None]:
        """Hold this set's build lock for (rank, world); wait up to ``wait_s`` for another holder."""
        name = f".build-{rank}of{world}.lock"
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.remote:
            from filelock import FileLock, Timeout

            lock = FileLock(str(self.dir / name))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                log.info("%s: another builder holds %s; waiting for it", self.url, name)
                try:
                    lock.acquire(timeout=wait_s)
                except Timeout:
                    raise LockError(
                        f"{self.dir / name} is held by another builder for more than {wait_s:.0f} s"
                        " (build.wait_s)"
                    ) from None
            try:
                yield
            finally:
                lock.release()
            return
        lease = _Lease(self.file(name))
        lease.acquire(wait_s)
        self._lock = lease
        try:
            yield
        finally:
            self._lock = None
            lease.release()


def _holder() -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "token": uuid.uuid4().hex,
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }


class _Lease:
    """A lock object in object storage, created only if absent and kept fresh by a thread."""

    def __init__(self, url: str) -> None:
        self.url, self.me = url, _holder()
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _stale(self) -> str | None:
        """Why the current lock may be taken over, or None while its holder may be alive."""
        try:
            held = json.loads(remote.read_bytes(self.url))
            meta = remote.head(self.url)
        except FileNotFoundError:
            return "released"
        if held.get("host") == socket.gethostname():
            try:
                os.kill(int(held.get("pid", -1)), 0)
            except ProcessLookupError:
                return f"its holder (pid {held.get('pid')} on this host) is gone"
            except (PermissionError, ValueError):
                pass
        age = (datetime.now(UTC) - meta["last_modified"]).total_seconds()
        if age > STALE_S:
            return f"not renewed for {age:.0f} s"
        return None

    def acquire(self, wait_s: float) -> None:
        deadline, said = time.monotonic() + wait_s, False
        body = json.dumps(self.me).encode()
        while True:
            try:
                remote.put_bytes(self.url, body, create_only=True)
                break
            except remote.AlreadyExists:
                pass
            why = self._stale()
            if why is not None:
                log.warning("%s: taking over the build lock (%s)", urls.redact(self.url), why)
                remote.delete(self.url)
                continue
            if not said:
                log.info("%s is held by another builder; waiting for it", urls.redact(self.url))
                said = True
            if time.monotonic() > deadline:
                raise LockError(
                    f"{urls.redact(self.url)} is held by another builder for more than "
                    f"{wait_s:.0f} s (build.wait_s); delete it if that builder is gone"
                )
            time.sleep(POLL_S)
        self._thread = threading.Thread(target=self._renew, daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                held = json.loads(remote.read_bytes(self.url))
            except (OSError, ValueError) as e:
                log.warning("%s: cannot renew the build lock: %s", urls.redact(self.url), e)
                continue
            if held.get("token") != self.me["token"]:
                self.lost = (
                    f"{urls.redact(self.url)}: another builder ({held.get('host')}, pid "
                    f"{held.get('pid')}) took over this set's build lock; stopped"
                )
                return
            with contextlib.suppress(OSError):
                remote.put_bytes(self.url, json.dumps(self.me).encode())

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.lost is None:
            with contextlib.suppress(OSError):
                held = json.loads(remote.read_bytes(self.url))
                if held.get("token") == self.me["token"]:
                    remote.delete(self.url)
