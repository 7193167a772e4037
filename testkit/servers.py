"""Real servers on 127.0.0.1 for the remote-set tests and benchmarks, each on an ephemeral port.

- ``RangeServer``: an HTTP/1.1 file server with ``Range`` requests, ETag and Last-Modified, and
  fault switches the tests flip while it runs: a status for some paths (404, 403), a body cut
  short after N bytes (the full length still announced), a stall after N bytes, and a log of the
  requests and bytes it sent.
- ``MotoServer``: moto's standalone S3-compatible server as a subprocess. moto lives in its own
  virtual environment (``.venv-s3``, made by ``make install``): boto, which it needs, pins
  python-dateutil below 3, which the project's environment does not, and the client under test
  (obstore) must not share the server's libraries.
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIDTESTREMOTE0KEY",
    "AWS_SECRET_ACCESS_KEY": "s3cr3t-remote-test-value-never-logged",
    "AWS_REGION": "us-east-1",
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def _file(self) -> Path | None:
        rel = self.path.split("?", 1)[0].lstrip("/")
        path = (self.server.root / rel).resolve()
        if self.server.root.resolve() not in path.parents or not path.is_file():
            return None
        return path

    def _headers(self, path: Path) -> tuple[int, str, str]:
        st = path.stat()
        etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
        return st.st_size, etag, email.utils.formatdate(st.st_mtime, usegmt=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        srv = self.server
        with srv.lock:
            srv.busy += 1
        try:
            self._respond(body)
        finally:
            with srv.lock:
                srv.busy -= 1
                srv.lock.notify_all()

    def _respond(self, body: bool) -> None:
        srv = self.server
        rel = self.path.lstrip("/")
        status = srv.status_of(rel)
        with srv.lock:
            srv.requests.append((self.command, rel, self.headers.get("Range")))
        if status:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path = self._file()
        if path is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size, etag, modified = self._headers(path)
        start, end = 0, size - 1
        rng = self.headers.get("Range")
        match = self.headers.get("If-Match")
        if match and match != etag:
            self.send_response(412)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if rng:
            first, _, last = rng.removeprefix("bytes=").partition("-")
            start = int(first) if first else size - int(last)
            end = int(last) if first and last else size - 1
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            end = min(end, size - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", modified)
        self.end_headers()
        if not body:
            return
        with open(path, "rb") as f:
            f.seek(start)
            pos, left = start, end - start + 1
            while left > 0:
                data = f.read(min(left, 64 * 1024))
                cut = srv.cut_after.get(rel)
                stall = srv.stall_after.get(rel)
                limit = min(x for x in (cut, stall, pos + len(data)) if x is not None)
                if limit < pos + len(data):  # cut short or stalled from byte ``limit`` on
                    self.wfile.write(data[: max(0, limit - pos)])
                    self.wfile.flush()
                    if limit == stall:
                        srv.release.wait(srv.stall_s)
                    self.close_connection = True
                    return
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    return
                with srv.lock:
                    srv.sent[rel] = srv.sent.get(rel, 0) + len(data)
                pos += len(data)
                left -= len(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    root: Path


class RangeServer:
    """An HTTP file server over ``root`` on 127.0.0.1; ``url`` is its base URL."""

    def __init__(self, root: Path, port: int = 0) -> None:
        self.httpd = _Server(("127.0.0.1", port), _Handler)
        h = self.httpd
        h.root = Path(root)
        h.lock = threading.Condition()
        h.requests, h.sent, h.connections, h.busy = [], {}, set(), 0
        h.statuses: dict[str, int] = {}  # path (or "*") -> status to answer with
        h.cut_after: dict[str, int] = {}
        h.stall_after: dict[str, int] = {}
        h.stall_s = 60.0
        h.release = threading.Event()
        h.status_of = lambda rel: h.statuses.get(rel) or h.statuses.get("*")
        self.port = h.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # polled every 50 ms (the default 0.5 s is how long each stop() waited)
        self.thread = threading.Thread(target=h.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def __getattr__(self, name):  # the fault switches live on the server the handlers see
        return getattr(self.httpd, name)

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until no response is being written: ``sent`` then counts every byte a client has
        read (a handler counts a chunk just after writing it)."""
        with self.httpd.lock:
            if not self.httpd.lock.wait_for(lambda: self.httpd.busy == 0, timeout):
                raise TimeoutError(f"a response still being written after {timeout} s")

    def __setattr__(self, name, value) -> None:
        if name in ("httpd", "port", "url", "thread"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.httpd, name, value)

    def stop(self) -> None:
        """Stop as a killed server would: the port closes and open connections drop."""
        h = self.httpd
        h.release.set()
        h.shutdown()
        h.server_close()
        with h.lock:
            for conn in list(h.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def moto_server_command() -> list[str]:
    """moto's server from ``.venv-s3`` (``make install``), or one on PATH."""
    for candidate in (REPO / ".venv-s3" / "bin" / "moto_server", shutil.which("moto_server")):
        if candidate and Path(candidate).is_file():
            return [str(candidate)]
    raise RuntimeError(
        "moto's S3 server is not installed: run make install (it creates .venv-s3 with "
        "moto[server])"
    )


class MotoServer:
    """moto's standalone S3 server on 127.0.0.1; ``env`` points a client at it."""

    def __init__(self, log_path: Path, port: int | None = None, auth: bool = False) -> None:
        """``auth``: check signatures (moto's ``INITIAL_NO_AUTH_ACTION_COUNT=0``), so unknown
        credentials get HTTP 403."""
        self.auth = auth
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.start()

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
            if self.auth:
                env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
            self.proc = subprocess.Popen(
                [*moto_server_command(), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1)
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"moto_server exited: see {self.log_path}") from None
                time.sleep(0.2)
        raise RuntimeError(f"moto_server did not answer in 60 s: see {self.log_path}")

    @property
    def env(self) -> dict[str, str]:
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    def make_bucket(self, name: str) -> None:
        req = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        urllib.request.urlopen(req, timeout=10)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def python_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a subprocess CLI run: this worktree first on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHON"] = sys.executable
    return {**env, **(extra or {})}


def main(argv: list[str]) -> None:
    """``python -m testkit.servers http ROOT``: serve ROOT over HTTP (benchmarks run the server in
    its own process); prints the base URL, then serves until killed."""
    kind, root = argv
    if kind != "http":
        raise SystemExit("usage: python -m testkit.servers http ROOT")
    server = RangeServer(Path(root))
    print(server.url, flush=True)
    server.thread.join()


if __name__ == "__main__":
    main(sys.argv[1:])
