"""Sets at any URL, read over real servers on 127.0.0.1 (testkit/servers.py): streaming, faults
(stall, cut short, 404, 403, 5xx, server gone), the node-local cache, and the tar reader's size
checks."""

from __future__ import annotations

import io
import tarfile
import threading
from pathlib import Path

import pytest

from data import remote, urls
from data.shard_cache import ShardCache
from data.shards import ManifestError, read_manifest
from data.stream import record_counts, shard_samples, train_pipeline, val_pipeline
from data.tario import samples
from tests.helpers import read_samples, write_set


def _finishes(fn, limit_s: float = 60.0):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it has not returned."""
    out: dict = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as e:  # handed to the test
            out["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(limit_s)
    assert not t.is_alive(), f"still running after {limit_s} s: it hangs"
    if "error" in out:
        raise out["error"]
    return out["value"]


def _bad(entries: list[dict]) -> list[tuple[str, str]]:
    return [tuple(s["__bad__"]) for s in entries if "__bad__" in s]


# -- locations --------------------------------------------------------------------------------
def test_locations_join_by_kind_and_refuse_credentials_and_writes_where_they_cannot_go():
    assert urls.join("s3://b/sets/", "randaug", "x.tar") == "s3://b/sets/randaug/x.tar"
    assert (
        urls.join("pipe:curl -sf http://h/sets", "val/m.json")
        == "pipe:curl -sf http://h/sets/val/m.json"
    )
    assert urls.join("file:///data/sets", "val") == "/data/sets/val"
    assert urls.name("gs://b/p/val-000001.tar") == "val-000001.tar"
    assert urls.parent("http://h:8/a/b/manifest.json") == "http://h:8/a/b"
    with pytest.raises(urls.UrlError, match="AWS_ACCESS_KEY_ID") as e:
        urls.check("s3://AKID:topsecret@bucket/sets")
    assert "topsecret" not in str(e.value)
    with pytest.raises(urls.UrlError, match="read only"):
        urls.check_writable("https://host/sets")
    with pytest.raises(urls.UrlError, match="unknown scheme ftp://"):
        urls.check("ftp://host/sets")


# -- the tar reader's size check --------------------------------------------------------------
def _tar_claiming(path: Path, claim: int, base256: bool) -> None:
    """A small tar whose first member's header claims ``claim`` bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in ("a.jpg", "a.cls"):
            info = tarfile.TarInfo(name)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"abcd"))
    data = bytearray(buf.getvalue())
    if base256:  # the GNU form tar uses for sizes past 8 GB
        data[124:136] = b"\x80" + claim.to_bytes(11, "big")
    else:  # all 12 bytes octal digits, no terminator: up to 64 GB - 1
        data[124:136] = f"{claim:012o}".encode()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("claim,base256", [((64 << 30) - 1, False), (64 << 30, True)])
def test_a_member_claiming_more_than_the_shard_holds_is_a_read_error_naming_it(
    tmp_path, claim, base256
):
    shard = tmp_path / "bad-000000.tar"
    _tar_claiming(shard, claim, base256)
    with open(shard, "rb") as stream, pytest.raises(tarfile.ReadError) as e:
        list(samples(stream, str(shard)))
    assert str(shard) in str(e.value) and f"claims {claim} bytes" in str(e.value)
    (bad,) = _bad(list(shard_samples(str(shard))))
    assert bad[0] == "shard" and "ReadError" in bad[1] and "claims" in bad[1]


def test_a_stream_of_unknown_length_is_read_in_pieces_not_in_one_claimed_allocation(tmp_path):
    shard = tmp_path / "bad-000000.tar"
    _tar_claiming(shard, 64 << 30, base256=True)
    (bad,) = _bad(list(shard_samples(f"pipe:cat {shard}")))  # a pipe: no length known
    assert "truncated member" in bad[1] and "MemoryError" not in bad[1]


def test_a_remote_member_claim_is_checked_against_the_announced_length(
    http_server, fast_transport, tmp_path
):
    _tar_claiming(tmp_path / "www" / "bad-000000.tar", 64 << 30, base256=True)
    (bad,) = _bad(list(shard_samples(f"{http_server.url}/bad-000000.tar")))
    assert "claims" in bad[1] and f"{http_server.url}/bad-000000.tar" in bad[1]


# -- reading over HTTP ------------------------------------------------------------------------
def test_a_set_over_http_reads_exactly_as_on_disk_and_through_a_pipe(http_server, tmp_path):
    local = write_set(tmp_path / "www" / "sets", "val", [7, 6])
    for root in (f"{http_server.url}/sets", f"pipe:cat {tmp_path / 'www' / 'sets'}"):
        m = read_manifest(urls.join(root, "val"))
        assert m.shard_counts == read_manifest(local).shard_counts
        assert record_counts(m.urls()) == [7, 6]
        for url, disk in zip(m.urls(), read_manifest(local).urls(), strict=True):
            got = {
                s["__key__"]: {k: v for k, v in s.items() if not k.startswith("__")}
                for s in shard_samples(url)
            }
            assert got == read_samples(disk)
    ranges = [r for method, _, r in http_server.requests if method == "GET"]
    assert ranges and all(r is None for r in ranges)  # one streamed GET per file, no re-reads


def test_first_sample_arrives_before_the_shard_is_downloaded(http_server, fast_transport, tmp_path):
    set_dir = write_set(tmp_path / "www", "big", [300], size=32)
    shard = "big/big-000000.tar"
    size = (tmp_path / "www" / shard).stat().st_size
    assert size > 400_000
    http_server.stall_after[shard] = 200_000  # nothing past this until released
    http_server.stall_s = 30
    it = shard_samples(f"{http_server.url}/{shard}")
    first = _finishes(lambda: next(it))
    assert first["__key__"] == "big_00000" and "jpg" in first
    assert http_server.sent.get(shard, 0) <= 200_000 < size
    http_server.stall_after.clear()
    http_server.release.set()
    assert set_dir.is_dir()


def test_a_stalled_connection_times_out_and_the_shard_is_a_skip_naming_the_url(
    http_server, fast_transport, tmp_path
):
    write_set(tmp_path / "www", "val", [200], size=32)
    shard = "val/val-000000.tar"
    http_server.stall_after[shard] = 150_000
    http_server.stall_s = 30
    got = _finishes(lambda: list(shard_samples(f"{http_server.url}/{shard}")))
    good = [s for s in got if "__bad__" not in s]
    (bad,) = _bad(got)
    assert 0 < len(good) < 200  # the samples before the stall were kept
    assert bad[0] == "shard" and f"{http_server.url}/{shard}" in bad[1]
    assert "gave up after" in bad[1]


def test_transient_server_errors_are_retried_and_the_read_completes(http_server, tmp_path):
    write_set(tmp_path / "www", "val", [9])
    shard = "val/val-000000.tar"
    calls = {"n": 0}

    def flaky(rel):
        if rel == shard:
            calls["n"] += 1
            return 503 if calls["n"] <= 2 else None
        return None

    http_server.status_of = flaky
    remote.configure(remote.Transport(retry_s=20, retries=5, read_timeout_s=2))
    try:
        got = list(shard_samples(f"{http_server.url}/{shard}"))
    finally:
        remote.configure(None)
    assert not _bad(got) and len(got) == 9 and calls["n"] == 3


def test_a_response_cut_short_is_resumed_then_a_counted_skip(http_server, fast_transport, tmp_path):
    write_set(tmp_path / "www" / "sets", "val", [40, 100], size=32)
    cut = "sets/val/val-000001.tar"
    http_server.cut_after[cut] = 150_000  # announces the whole length, sends 150 KB, closes
    pipe = val_pipeline(read_manifest(f"{http_server.url}/sets/val").urls(), 0, 1, 8, 10, True)
    batches = _finishes(lambda: list(pipe))
    skipped = [x for b in batches for x in b["skipped"]]
    seen = sum(len(b["label"]) for b in batches)
    (where, why) = skipped[0]
    assert len(skipped) == 1 and where == "shard" and cut in why and "broke off" in why
    assert 40 < seen < 140  # the whole first shard and the part of the second that arrived
    resumes = [r for m, p, r in http_server.requests if p == cut and m == "GET" and r]
    assert resumes  # it was resumed from where it broke off before giving up


def test_a_shard_missing_on_the_server_is_a_counted_skip_naming_it(
    http_server, fast_transport, tmp_path
):
    write_set(tmp_path / "www" / "sets", "val", [5, 5, 5])
    (tmp_path / "www" / "sets" / "val" / "val-000001.tar").unlink()
    m = read_manifest(f"{http_server.url}/sets/val")  # HTTP cannot list: found when read
    batches = list(val_pipeline(m.urls(), 0, 1, 4, 10, True))
    skipped = [x for b in batches for x in b["skipped"]]
    assert sum(len(b["label"]) for b in batches) == 10
    assert skipped == [("shard", f"NotFound: {http_server.url}/sets/val/val-000001.tar: not found")]


def test_a_set_forbidden_to_us_is_one_line_naming_the_credential_source(
    http_server, fast_transport, tmp_path
):
    write_set(tmp_path / "www" / "sets", "val", [5])
    http_server.statuses["*"] = 403
    with pytest.raises(remote.AccessDenied) as e:
        read_manifest(f"{http_server.url}/sets/val")
    assert len(str(e.value).splitlines()) == 1
    assert f"{http_server.url}/sets/val/manifest.json: access denied (HTTP 403)" in str(e.value)


def test_a_set_that_is_not_there_says_how_to_build_it(http_server, fast_transport):
    with pytest.raises(ManifestError, match="has no manifest.json.*python -m data.build"):
        read_manifest(f"{http_server.url}/sets/val")


def test_a_server_gone_is_unreachable_within_the_retry_budget(
    http_server, fast_transport, tmp_path
):
    write_set(tmp_path / "www", "val", [5])
    url = f"{http_server.url}/val/val-000000.tar"
    http_server.stop()
    (bad,) = _finishes(lambda: _bad(list(shard_samples(url))))
    assert bad[0] == "shard" and "Unreachable" in bad[1] and url in bad[1]


@pytest.mark.slow  # waits out remote.give_up_s
def test_a_server_gone_for_longer_than_give_up_s_stops_the_reader(
    http_server, fast_transport, tmp_path
):
    write_set(tmp_path / "www", "val", [5, 5])
    shards = [f"{http_server.url}/val/val-00000{i}.tar" for i in (0, 1)]
    http_server.stop()

    def read_until_stopped():
        skips = []
        for i in range(100):
            skips += _bad(list(shard_samples(shards[i % 2])))
        return skips

    with pytest.raises(
        remote.ServerGone, match=r"has not answered for \d+ s \(remote.give_up_s=2.5\)"
    ):
        _finishes(read_until_stopped)


# -- the node-local cache ---------------------------------------------------------------------
def test_the_second_read_of_a_shard_comes_from_the_cache(http_server, tmp_path):
    write_set(tmp_path / "www", "val", [30, 30, 30], size=32)
    names = [f"val/val-00000{i}.tar" for i in range(3)]
    limit = 2 * max((tmp_path / "www" / n).stat().st_size for n in names) + 10  # two shards
    remote.configure(remote.Transport(cache_dir=str(tmp_path / "cache"), cache_bytes=limit))
    try:
        first = [list(shard_samples(f"{http_server.url}/{n}")) for n in names[:2]]
        http_server.settle()  # the last chunk read is counted once its handler returns
        sent = dict(http_server.sent)
        again = [list(shard_samples(f"{http_server.url}/{n}")) for n in names[:2]]
        assert http_server.sent == sent  # no byte of a shard sent twice
        assert [[s["__key__"] for s in x] for x in again] == [
            [s["__key__"] for s in x] for x in first
        ]
        heads = [p for m, p, _ in http_server.requests if m == "HEAD"]
        assert sorted(heads) == sorted(names[:2])  # checked unchanged, then read locally

        list(shard_samples(f"{http_server.url}/{names[2]}"))  # over the limit: LRU goes
        cached = sorted((tmp_path / "cache").glob("*.tar"))
        assert len(cached) == 2 and sum(p.stat().st_size for p in cached) <= limit
        assert not list((tmp_path / "cache").glob(".*.part"))

        http_server.stop()  # the server goes away: cached shards still read (with a warning)
        remote.configure(
            remote.Transport(
                cache_dir=str(tmp_path / "cache"), cache_bytes=10**9, retry_s=0.5, retries=1
            )
        )
        assert [s["__key__"] for s in shard_samples(f"{http_server.url}/{names[2]}")] == [
            f"val_{i:05d}" for i in range(60, 90)
        ]
    finally:
        remote.configure(None)


def test_a_shard_not_read_to_its_end_is_not_cached(http_server, tmp_path):
    write_set(tmp_path / "www", "val", [30], size=32)
    cache = ShardCache(tmp_path / "cache", 10**9)
    with cache.open(f"{http_server.url}/val/val-000000.tar") as stream:
        stream.read(1000)
    assert not list((tmp_path / "cache").iterdir())


@pytest.mark.slow  # about 20 s: retries against the dead server
def test_server_killed_mid_epoch_cached_shards_carry_the_epoch_and_the_rest_are_skips(
    http_server, tmp_path
):
    """The node-local cache holds 5 of the 6 shards; the server dies mid-epoch: the training
    stream keeps giving full batches from the cached shards, and each read of the missing one is
    a counted skip naming its URL and the error, after bounded retries."""
    write_set(tmp_path / "www" / "sets", "tr", [16] * 6, size=32)
    sizes = sorted(p.stat().st_size for p in (tmp_path / "www" / "sets" / "tr").glob("*.tar"))
    remote.configure(
        remote.Transport(
            retry_s=1.0,
            retries=2,
            connect_timeout_s=0.5,
            read_timeout_s=0.5,
            give_up_s=600,
            cache_dir=str(tmp_path / "cache"),
            cache_bytes=sum(sizes[:5]),  # room for five shards
        )
    )
    try:
        m = read_manifest(f"{http_server.url}/sets/tr")
        it = iter(train_pipeline([m.urls()], [1.0], 0, 1, 8, 10, seed=0, shuffle=8))
        before = [next(it) for _ in range(24)]
        assert not [x for b in before for x in b["skipped"]]
        assert len(list((tmp_path / "cache").glob("*.tar"))) == 5
        http_server.stop()
        after = _finishes(lambda: [next(it) for _ in range(48)], limit_s=300)
    finally:
        remote.configure(None)
    assert all(len(b["label"]) == 8 for b in after)  # the epoch goes on, batches full
    skips = [x for b in after for x in b["skipped"]]
    assert skips and all(
        where == "shard"
        and why.startswith(("Unreachable: ", "RemoteError: "))
        and f"{http_server.url}/sets/tr/tr-00000" in why
        for where, why in skips
    )
    assert len({why.split(": ")[1] for _, why in skips}) == 1  # always the one uncached shard
