"""Where a shard set lives, as a string: a local path or a URL (no I/O here).

Accepted: local paths, ``file://`` (the same as a path), ``s3://bucket/prefix``,
``gs://bucket/prefix``, ``http(s)://host/prefix`` (read only) and webdataset's ``pipe:COMMAND``
(read only: the file's path below the root is appended to the command with a ``/`` and the
command's standard output is read, e.g. ``pipe:curl -sf https://host/sets/digits``). Paths in a
set are joined as strings, never through ``pathlib`` (which turns ``s3://b`` into ``s3:/b``).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

OBJECT_SCHEMES = ("s3", "gs")
HTTP_SCHEMES = ("http", "https")
REMOTE_SCHEMES = (*OBJECT_SCHEMES, *HTTP_SCHEMES)


class UrlError(ValueError):
    """A set location that cannot be used; the message names it and what is expected."""


def scheme(url: str | Path) -> str:
    """``s3``, ``gs``, ``http``, ``https``, ``pipe`` or ``""`` for a local path (and file://)."""
    text = str(url)
    if text.startswith("pipe:"):
        return "pipe"
    head, sep, _ = text.partition("://")
    if not sep or head == "file":
        return ""
    if head not in REMOTE_SCHEMES:
        raise UrlError(
            f"{text}: unknown scheme {head}://; use a local path, file://, s3://, gs://, "
            "http(s):// or pipe:COMMAND"
        )
    return head


def is_remote(url: str | Path) -> bool:
    """Anything that is not a local file: object storage, HTTP or a pipe."""
    return scheme(url) != ""


def local_path(url: str | Path) -> Path:
    """The local path of a path or ``file://`` URL."""
    text = str(url)
    return Path(text[len("file://") :] if text.startswith("file://") else text)


def check(url: str | Path) -> str:
    """``url`` as a normalised string; refuses credentials written into it (they would reach
    configs, logs and ``results.json``: each library reads them from its environment)."""
    text = str(url)
    kind = scheme(text)
    if kind in REMOTE_SCHEMES:
        parts = urlsplit(text)
        if parts.username or parts.password:
            raise UrlError(
                f"{redact(text)}: credentials in a URL are refused; "
                f"set {credential_hint(text)} in the environment instead"
            )
        if not parts.netloc:
            raise UrlError(f"{text}: no bucket or host after {kind}://")
        return text.rstrip("/")
    if kind == "pipe":
        return text
    return str(local_path(text))


def join(base: str | Path, *parts: str) -> str:
    """``base/part/...`` for every kind of location (a pipe command gets the path appended)."""
    if not is_remote(base):
        return str(local_path(base).joinpath(*parts))
    text = str(base).rstrip("/")
    return "/".join([text, *(p.strip("/") for p in parts if p)])


def name(url: str | Path) -> str:
    """The last component: a shard's or a set's file name."""
    if not is_remote(url):
        return local_path(url).name
    return str(url).rstrip("/").rsplit("/", 1)[-1]


def parent(url: str | Path) -> str:
    if not is_remote(url):
        return str(local_path(url).parent)
    return str(url).rstrip("/").rsplit("/", 1)[0]


def redact(url: str | Path) -> str:
    """``url`` without user information or query string, for messages."""
    text = str(url)
    if scheme(text) not in REMOTE_SCHEMES:
        return text
    parts = urlsplit(text)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def credential_hint(url: str | Path) -> str:
    """Which environment variables the transport reads credentials from, for this URL."""
    kind = scheme(url)
    if kind == "s3":
        return "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN, AWS_ENDPOINT_URL)"
    if kind == "gs":
        return "GOOGLE_APPLICATION_CREDENTIALS (or GOOGLE_SERVICE_ACCOUNT)"
    return "no credential variable (HTTP URLs are read without credentials)"


def check_writable(url: str | Path) -> None:
    """Sets are written to local paths, ``s3://`` and ``gs://``; HTTP and pipes are read only."""
    kind = scheme(url)
    if kind in (*HTTP_SCHEMES, "pipe"):
        raise UrlError(
            f"{redact(url)}: {kind} locations are read only; build to a local path, s3:// or gs:// "
            "(and serve that over HTTP)"
        )
