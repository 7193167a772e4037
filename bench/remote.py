"""Sets over the network vs on local disk: ``python -m bench remote``.

1. The training stream (read, decode, flip, collate; ``DistillDataModule``, 2 workers, batch 64)
   over one pixel set of 224-px JPEGs, read from local disk, from an HTTP server on loopback and
   from moto's S3-compatible server on loopback, epochs interleaved (local, http, s3, local, ...):
   images/s and the ratio to local disk (goal 0.9). No node-local cache, so every remote epoch
   streams every shard. Each server runs in its own process on the same 2 cores as the loader;
   each loader is made once and its workers persist, as in training.
2. The transports that were candidates, reading every shard of the set end to end over the same
   loopback HTTP server (MB/s, interleaved): obstore (the one used), fsspec's HTTP filesystem
   (aiohttp) and webdataset's ``gopen`` (a ``curl`` subprocess per shard).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import interleaved_medians, quick, table, write_result
from bench.data import make_jpegs, shards_of
from data import remote, urls
from data.datamodule import DistillDataModule
from testkit.servers import REPO, MotoServer, python_env

WORKERS, BATCH = 2, 64
MB = 1 << 20


def _http_server(root: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "testkit.servers", "http", str(root)],
        cwd=REPO,
        env=python_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    return proc, proc.stdout.readline().strip()


def _upload(set_dir: Path, url: str) -> None:
    for path in sorted(set_dir.iterdir()):
        remote.put_file(path, urls.join(url, path.name))


def _epoch(root: str, n: int):
    """One epoch of a loader made once: its workers persist across epochs, as in training
    (workers for remote sets are spawned, not forked: their start is not timed)."""
    dm = DistillDataModule(
        root, {"bench": 1}, "bench", batch_size=BATCH, num_workers=WORKERS, samples_per_epoch=n
    )
    dm.prepare()
    ld = dm.train_dataloader()
    return lambda: sum(len(b["label"]) for b in ld)


def _read_all(opener, shard_urls: list[str]):
    def read() -> int:
        total = 0
        for url in shard_urls:
            with opener(url) as f:
                while chunk := f.read(MB):
                    total += len(chunk)
        return total

    return read


def _transports(shard_urls: list[str], repeats: int) -> list[dict]:
    import fsspec
    from webdataset.gopen import gopen

    fs = fsspec.filesystem("http")
    candidates = {
        "obstore (data/remote.py)": _read_all(remote.open_read, shard_urls),
        "fsspec http (aiohttp)": _read_all(
            lambda u: fs.open(u, "rb", block_size=8 * MB), shard_urls
        ),
    }
    if shutil.which("curl"):
        candidates["webdataset gopen (curl)"] = _read_all(lambda u: gopen(u, "rb"), shard_urls)
    size = candidates["obstore (data/remote.py)"]()
    t = interleaved_medians(candidates, repeats)
    return [{"transport": k, "mb_per_s": round(size / MB / v, 1)} for k, v in t.items()]


def measure(n: int, repeats: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench_remote_"))
    moto = http = None
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
    }
    try:
        files = make_jpegs(tmp / "folder", n, 224)
        shards_of(files, tmp / "www" / "sets" / "bench", per_shard=max(1, n // 8))
        http, http_url = _http_server(tmp / "www")
        moto = MotoServer(tmp / "moto.log")
        os.environ.update(moto.env)
        remote.configure(remote.Transport())
        moto.make_bucket("bench")
        _upload(tmp / "www" / "sets" / "bench", "s3://bench/sets/bench")
        roots = {
            "local": str(tmp / "www" / "sets"),
            "http": f"{http_url}/sets",
            "s3": "s3://bench/sets",
        }
        epochs = {name: _epoch(root, n) for name, root in roots.items()}
        seen = {name: fn() for name, fn in epochs.items()}
        t = interleaved_medians(epochs, repeats, warmup=0)
        img_s = {k: seen[k] / v for k, v in t.items()}
        labels = {
            "http": "HTTP/1.1 on loopback (Python ThreadingHTTPServer, range requests)",
            "s3": "S3 API on loopback (moto server)",
        }
        rows = [
            {
                "server": labels[k],
                "local_img_s": round(img_s["local"], 1),
                "remote_img_s": round(img_s[k], 1),
                "ratio": round(img_s[k] / img_s["local"], 3),
            }
            for k in ("http", "s3")
        ]
        shards = [
            f"{http_url}/sets/bench/{p.name}"
            for p in sorted((tmp / "www" / "sets" / "bench").glob("*.tar"))
        ]
        set_mb = sum(p.stat().st_size for p in (tmp / "www" / "sets" / "bench").glob("*.tar")) / MB
        return {
            "images": n,
            "set_mb": round(set_mb, 1),
            "shards": len(shards),
            "workers": WORKERS,
            "batch": BATCH,
            "repeats": repeats,
            "rows": rows,
            "transports": _transports(shards, repeats),
        }
    finally:
        remote.configure(None)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if http is not None:
            http.kill()
            http.wait()
        if moto is not None:
            moto.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    q = quick()
    result = measure(n=256 if q else 1024, repeats=1 if q else 3)
    md = "## Sets over the network vs local disk (`python -m bench remote`)\n\n"
    md += (
        f"Training stream over {result['images']} 224-px JPEGs ({result['set_mb']} MB in "
        f"{result['shards']} shards), {WORKERS} workers, batch {BATCH}, no node-local cache; "
        f"median of {result['repeats']} interleaved epochs. The servers run on the same 2 cores "
        "as the loader (the machine was shared with other jobs).\n\n"
    )
    md += table(
        ["server", "local img/s", "remote img/s", "ratio (goal 0.9)"],
        [[r["server"], r["local_img_s"], r["remote_img_s"], r["ratio"]] for r in result["rows"]],
    )
    md += "\nReading every shard end to end over the loopback HTTP server, per transport:\n\n"
    md += table(
        ["transport", "MB/s"], [[r["transport"], r["mb_per_s"]] for r in result["transports"]]
    )
    write_result("remote", result, md)
    print(md)
