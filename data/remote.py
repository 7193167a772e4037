"""Reading and writing set files at any location (data/urls.py): local, object storage, HTTP, pipes.

Object storage and HTTP go through obstore (the Rust ``object_store`` crate, also behind
DataFusion and Polars): one library for S3, GCS and HTTP with range reads, retries with
exponential backoff bounded in count and total time, connect and read timeouts, and credentials
read only from each service's standard environment (``AWS_*``, ``GOOGLE_*``). README "Sets in
object storage" says why it was chosen over fsspec and webdataset's ``gopen``.

- Streaming: a shard is read as one ranged GET whose body arrives in 64 KiB pieces, so the first
  sample is decoded while the rest is still on the wire. A body that fails part way (dropped
  connection, stall past the read timeout, fewer bytes than announced) is resumed from the byte
  it stopped at, with backoff, until ``retry_s`` has passed since the first failure; the resumed
  request must match the object's ETag, so a shard rewritten meanwhile is an error, never a mix.
- Settings (``Transport``) are set once per process by ``configure`` and mirrored into the
  environment, so loader workers and DDP ranks started afterwards read the same ones.
- Errors are one line (``RemoteError`` and subclasses) naming the URL; access errors name the
  credential variables that were read (never their values).
- obstore's runtime does not survive ``fork``: a child forked after the parent used it hangs on
  its first request, so loader workers reading remote sets are spawned (``uses_runtime``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from data import urls
from data.config import RemoteConfig

log = logging.getLogger(__name__)

ENV = "DISTILL_TRANSPORT"
STREAM_CHUNK = 64 * 1024  # bytes handed over at a time: the first sample does not wait for more
T = TypeVar("T")


@dataclass(frozen=True)
class Transport:
    """How remote files are fetched (conf: ``remote.*``; cache: ``data.cache_dir``/``cache_bytes``)."""

    retry_s: float = 60.0  # give up on one file this long after its first failure
    retries: int = 8  # attempts per request (obstore), and resumes per stream
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0  # a connection that sends nothing for this long is stalled
    give_up_s: float = 600.0  # a server unreachable this long stops the run (ServerGone)
    cache_dir: str | None = None  # node-local copies of remote shards (data/shard_cache.py)
    cache_bytes: int = 0  # the cache's size limit; least recently used shards go first


class RemoteError(OSError):
    """A remote file that could not be read or written; the message is one line with the URL."""


class NotFound(RemoteError, FileNotFoundError):
    pass


class AccessDenied(RemoteError, PermissionError):
    pass


class Unreachable(RemoteError, ConnectionError):
    pass


class AlreadyExists(RemoteError, FileExistsError):
    pass


class ServerGone(Unreachable):
    """A server that failed every request for ``give_up_s``: the run stops instead of skipping
    shard after shard (the readers re-raise it rather than count a skip)."""


_settings: Transport | None = None
_stores: dict[tuple, object] = {}
_outages: dict[str, list[float]] = {}  # server -> [first, last] failure of the current outage


def configure(transport: Transport | None) -> None:
    """Use ``transport`` in this process and in every process it starts from now on
    (``None``: back to the defaults)."""
    global _settings
    _settings = transport
    if transport is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = json.dumps(asdict(transport))
    _stores.clear()


def transport_from_config(
    remote: RemoteConfig, cache_dir: str | None, cache_bytes: int
) -> Transport:
    """``Transport`` from the ``remote`` section and ``data.cache_dir``/``cache_bytes`` (a build
    has no cache: None, 0)."""
    return Transport(**asdict(remote), cache_dir=cache_dir, cache_bytes=int(cache_bytes))


def settings() -> Transport:
    """This process's transport settings: ``configure``'s, inherited ones, or the defaults."""
    global _settings
    if _settings is None:
        raw = os.environ.get(ENV)
        _settings = Transport(**json.loads(raw)) if raw else Transport()
    return _settings


# -- errors -----------------------------------------------------------------------------------
_STATUS = re.compile(r"status code: (\d{3})")
_PREFIXES = ("Generic HTTP error: ", "Generic S3 error: ", "Generic GCS error: ", "HTTP error: ")


def _reason(e: BaseException) -> str:
    """The first line of a library error, without its request dump (kept short for logs)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = text.split("<?xml")[0].rstrip(": ")
    text = text.rsplit("  - ", 1)[-1]  # drop "Error performing GET <url> in N ms, after ..."
    for prefix in _PREFIXES:
        text = text.replace(prefix, "")
    return text[:200]


def translate(e: BaseException, url: str) -> RemoteError:
    """A library exception as a one-line ``RemoteError`` naming ``url``."""
    from obstore import exceptions as oe

    if isinstance(e, RemoteError):
        return e
    where, text = urls.redact(url), str(e)
    found = _STATUS.search(text)
    code = int(found.group(1)) if found else None
    if isinstance(e, oe.PermissionDeniedError | oe.UnauthenticatedError) or code in (401, 403):
        return AccessDenied(
            f"{where}: access denied (HTTP {code or 403}); credentials are read from "
            f"{urls.credential_hint(url)}"
        )
    if isinstance(e, FileNotFoundError) or code == 404:
        return NotFound(f"{where}: not found")
    if isinstance(e, oe.AlreadyExistsError | oe.PreconditionError) or code == 412:
        return AlreadyExists(f"{where}: already exists or changed meanwhile")
    if code is not None:
        return RemoteError(f"{where}: the server answered HTTP {code}")
    lowered = text.lower()
    if isinstance(e, EOFError) or "body error" in lowered:
        return RemoteError(f"{where}: the response broke off before its end ({_reason(e)})")
    if any(w in lowered for w in ("connect", "sending request", "dns", "refused", "timed out")):
        return Unreachable(f"{where}: cannot reach the server ({_reason(e)})")
    return RemoteError(f"{where}: {_reason(e)}")


# -- stores -----------------------------------------------------------------------------------
def _store(url: str) -> tuple[object, str]:
    """(obstore store for the bucket or host of ``url``, the object's key)."""
    from obstore.store import from_url

    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}"
    t = settings()
    key = (os.getpid(), base, t)
    store = _stores.get(key)
    if store is None:
        store = from_url(
            base,
            client_options={
                "allow_http": True,  # an http:// endpoint (AWS_ENDPOINT_URL) is the user's choice
                "connect_timeout": timedelta(seconds=t.connect_timeout_s),
                "read_timeout": timedelta(seconds=t.read_timeout_s),
                "timeout": timedelta(
                    days=1
                ),  # a whole shard may stream for long; stalls are read_timeout's
            },
            retry_config={
                "max_retries": t.retries,
                "retry_timeout": timedelta(seconds=t.retry_s),
                "backoff": {
                    "init_backoff": timedelta(milliseconds=100),
                    "max_backoff": timedelta(seconds=5),
                },
            },
        )
        _stores[key] = store
    return store, parts.path.lstrip("/")


def _call(url: str, fn: Callable[[object, str], T]) -> T:
    store, key = _store(url)
    try:
        out = fn(store, key)
    except Exception as e:
        error = translate(e, url)
        if isinstance(error, Unreachable):
            _note_down(url)
        raise error from e
    _outages.pop(_server(url), None)
    return out


def _note_down(url: str, first: float | None = None) -> float:
    """Record a failure to reach ``url``'s server; returns when its outage began."""
    now = time.monotonic()
    outage = _outages.setdefault(_server(url), [now if first is None else first, now])
    outage[1] = now
    return outage[0]


def server_down(url: str) -> bool:
    """Whether ``url``'s server failed to answer within the last ``retry_s`` (at least 30 s):
    the shard cache then reads its copies without asking the server each time."""
    outage = _outages.get(_server(url))
    return outage is not None and time.monotonic() - outage[1] < max(settings().retry_s, 30.0)


# -- reading ----------------------------------------------------------------------------------
class RemoteReader(io.RawIOBase):
    """A streamed remote file: ``read(n)`` returns ``n`` bytes unless the file ends; ``size`` is
    the length the server announced (the tar reader checks member sizes against it)."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url, self.pos = url, 0
        self.size: int | None = None
        self.etag: str | None = None
        self.meta: dict = {}
        self._buf = memoryview(b"")
        self._chunks = None
        self._fetch()

    def _open(self) -> None:
        import obstore

        options: dict = {}
        if self.pos:
            options["range"] = {"offset": self.pos}
            if self.etag:
                options["if_match"] = self.etag
        store, key = _store(self.url)
        result = obstore.get(store, key, options=options)
        meta = result.meta
        if not self.meta:
            self.meta = dict(meta)
        self.size, self.etag = int(meta["size"]), meta.get("e_tag") or self.etag
        self._chunks = iter(result.stream(min_chunk_size=STREAM_CHUNK))

    def _next(self) -> bool:
        if self._chunks is None:
            self._open()
            self._mark_up()
        chunk = next(self._chunks, None)
        if chunk is None:
            if self.size is not None and self.pos < self.size:
                raise EOFError(f"the body ended at byte {self.pos} of {self.size} announced")
            return False
        self._buf = memoryview(chunk)
        return True

    def _fetch(self) -> bool:
        """Next piece of the body into the buffer; False at the end. Failures are resumed."""
        t, first, attempt = settings(), None, 0
        while True:
            try:
                return self._next()
            except Exception as e:
                error = translate(e, self.url)
                if isinstance(error, NotFound | AccessDenied):
                    raise error from e
                now = time.monotonic()
                first = now if first is None else first
                attempt += 1
                if attempt > t.retries or now - first > t.retry_s:
                    raise _give_up(error, self.url, attempt, now - first) from e
                log.info("%s: %s; resuming at byte %d", urls.redact(self.url), error, self.pos)
                time.sleep(min(5.0, 0.1 * 2**attempt) * (0.5 + random.random() / 2))
                self._chunks = None

    def readable(self) -> bool:
        return True

    def _mark_up(self) -> None:
        _outages.pop(_server(self.url), None)

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = (self.size or 0) - self.pos if self.size is not None else 1 << 62
        if len(self._buf) >= n:
            out = self._buf[:n].tobytes()
            self._buf = self._buf[n:]
            self.pos += n
            return out
        parts = []
        while n > 0:
            if not self._buf and not self._fetch():
                break
            take = self._buf[:n]
            parts.append(take.tobytes())
            self._buf = self._buf[len(take) :]
            self.pos += len(take)
            n -= len(take)
        return b"".join(parts)

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._chunks, self._buf = None, memoryview(b"")
        super().close()


def _server(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _give_up(error: RemoteError, url: str, attempts: int, spent: float) -> RemoteError:
    """The error to raise after the retries: ``ServerGone`` once the server has been
    unreachable for ``give_up_s`` (counting from the first failure of this outage)."""
    text = f"{error} (gave up after {attempts} attempts in {spent:.1f} s)"
    if not isinstance(error, Unreachable):
        return type(error)(text)
    now = time.monotonic()
    since = _note_down(url, first=now - spent)
    if now - since > settings().give_up_s:
        return ServerGone(
            f"{urls.redact(_server(url))} has not answered for {now - since:.0f} s "
            f"(remote.give_up_s={settings().give_up_s:g}); last: {text}"
        )
    return type(error)(text)


def uses_runtime(url: str | Path) -> bool:
    """Whether reading ``url`` goes through obstore, whose runtime hangs in a forked child once
    the parent has used it (loader workers for such sets are spawned)."""
    return urls.scheme(url) in urls.REMOTE_SCHEMES


def open_read(url: str | Path):
    """A binary stream of one file at any location; remote shards go through the node-local
    cache when ``data.cache_dir`` is set."""
    kind = urls.scheme(url)
    if kind == "":
        return open(urls.local_path(url), "rb", buffering=1 << 20)
    if kind == "pipe":
        from webdataset.gopen import gopen

        return gopen(str(url), "rb")
    t = settings()
    if t.cache_dir and str(url).endswith(".tar"):
        from data.shard_cache import ShardCache

        return ShardCache(t.cache_dir, t.cache_bytes).open(str(url))
    return RemoteReader(str(url))


def head(url: str) -> dict:
    """Size, ETag and modification time of a remote object (``NotFound`` when absent)."""
    import obstore

    return _call(url, lambda s, k: obstore.head(s, k))


def read_bytes(url: str | Path) -> bytes:
    """The whole file (manifests, records)."""
    kind = urls.scheme(url)
    if kind == "":
        return urls.local_path(url).read_bytes()
    if kind == "pipe":
        with open_read(url) as stream:
            return stream.read()
    import obstore

    return _call(str(url), lambda s, k: obstore.get(s, k).bytes().to_bytes())


def read_json(url: str | Path):
    return json.loads(read_bytes(url))


def exists(url: str | Path) -> bool:
    """Whether a file exists (a pipe command is run: it exists when it succeeds)."""
    kind = urls.scheme(url)
    if kind == "":
        return urls.local_path(url).is_file()
    try:
        if kind == "pipe":
            read_bytes(url)
        else:
            head(str(url))
    except FileNotFoundError:
        return False
    except OSError as e:
        if kind == "pipe":
            return False
        raise translate(e, str(url)) from e
    return True


def list_names(prefix: str) -> list[str]:
    """Names of the objects directly under ``prefix`` (object storage only)."""
    import obstore

    def names(store, key):
        listing = obstore.list_with_delimiter(store, key.rstrip("/") + "/" if key else None)
        return sorted(o["path"].rsplit("/", 1)[-1] for o in listing["objects"])

    return _call(prefix, names)


def put_bytes(url: str, data: bytes, create_only: bool = False) -> None:
    """Write one object in one request (atomic on S3 and GCS); ``create_only`` raises
    ``AlreadyExists`` when it is there already (the set's lock and identity claims)."""
    import obstore

    mode = "create" if create_only else "overwrite"
    _call(url, lambda s, k: obstore.put(s, k, data, mode=mode))


def put_file(path: Path, url: str) -> None:
    """Upload a local file; large files go up in parts and appear only when complete."""
    import obstore

    _call(url, lambda s, k: obstore.put(s, k, Path(path)))


def delete(url: str) -> None:
    import obstore

    with contextlib.suppress(NotFound):
        _call(url, lambda s, k: obstore.delete(s, k))


def check_reachable(url: str) -> None:
    """Fail now, in one line naming ``url``, when its server cannot be reached or refuses us."""
    if not urls.is_remote(url) or urls.scheme(url) == "pipe":
        return
    # NotFound: the server answered; the sets lie below the root (or are not built yet)
    with contextlib.suppress(NotFound):
        head(urls.join(url, "manifest.json"))
