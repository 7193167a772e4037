"""Sets built to and read from an S3-compatible server (moto's, a subprocess on 127.0.0.1):
shards uploaded as they are sealed, the manifest last, one builder per set at a time."""

from __future__ import annotations

import threading

import pytest

from data import remote, urls
from data.builder import build_sets
from data.datamodule import DistillDataModule
from data.set_store import SetStore, staging_root
from data.shards import read_manifest
from data.stream import shard_samples
from testkit.servers import CREDENTIALS, MotoServer
from tests.data.conftest import BUILD, variant_cfgs

VAL = {"val": variant_cfgs(0.5)["val"]}


def _objects(url: str) -> dict[str, bytes]:
    return {n: remote.read_bytes(urls.join(url, n)) for n in remote.list_names(url)}


@pytest.mark.slow  # builds a set (about 10 s on 2 busy cores)
def test_a_set_built_to_s3_is_the_local_build_uploaded_manifest_last(
    s3_bucket, sources, teacher, tmp_path
):
    local = build_sets(VAL, sources, teacher, tmp_path / "local", BUILD)[0]
    (built,) = build_sets(VAL, sources, teacher, f"{s3_bucket}/sets", BUILD)
    assert built.complete and built.built_shards == local.built_shards == 3
    got = _objects(f"{s3_bucket}/sets/val")
    for name in read_manifest(tmp_path / "local" / "val").shard_counts:
        assert got[name] == (tmp_path / "local" / "val" / name).read_bytes()
    assert "manifest.json" in got and not [n for n in got if n.endswith(".lock")]
    staged = SetStore(f"{s3_bucket}/sets", "val").dir
    assert not list(staged.glob("*.tar"))  # each shard's local copy went once uploaded
    assert staging_root() in staged.parents

    m = read_manifest(f"{s3_bucket}/sets/val")
    assert m.urls()[0] == f"{s3_bucket}/sets/val/val-000000.tar"
    keys = [s["__key__"] for url in m.urls() for s in shard_samples(url)]
    assert len(keys) == m.num_samples == 30

    again = build_sets(VAL, sources, teacher, f"{s3_bucket}/sets", BUILD)[0]
    assert again.built_shards == 0 and again.reused_shards == 3  # found complete: nothing redone


@pytest.mark.slow  # builds a set (about 10 s on 2 busy cores)
def test_a_set_without_its_manifest_is_not_read_and_missing_shards_are_named(
    s3_bucket, sources, teacher
):
    build_sets(VAL, sources, teacher, f"{s3_bucket}/sets", BUILD)
    remote.delete(f"{s3_bucket}/sets/val/val-000001.tar")
    with pytest.raises(ValueError, match=r"lists shards that are gone: \['val-000001.tar'\]"):
        read_manifest(f"{s3_bucket}/sets/val")
    remote.delete(f"{s3_bucket}/sets/val/manifest.json")
    dm = DistillDataModule(f"{s3_bucket}/sets", {"val": 1}, "val", batch_size=4, num_workers=0)
    with pytest.raises(ValueError, match=r"shard sets \['val', 'val'\] not found under s3://"):
        dm.prepare()


@pytest.mark.slow  # builds a set (about 10 s on 2 busy cores)
def test_two_builders_of_one_prefix_never_mix_their_shards(s3_bucket, sources, teacher):
    """Two builders with different configs on one prefix at once: the second waits for the first
    (the set's lock), then refuses the set built from the other config; nothing is mixed."""
    other = {"val": {**VAL["val"], "jpeg_quality": 70}}
    out, results = f"{s3_bucket}/sets", {}

    def build(name, variants):
        try:
            results[name] = build_sets(variants, sources, teacher, out, BUILD)[0]
        except ValueError as e:
            results[name] = e

    threads = [
        threading.Thread(target=build, args=("a", VAL)),
        threading.Thread(target=build, args=("b", other)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    errors = [r for r in results.values() if isinstance(r, ValueError)]
    done = [r for r in results.values() if not isinstance(r, ValueError)]
    assert len(errors) == 1 and len(done) == 1 and done[0].complete
    assert "holds shards built from a different config" in str(errors[0])
    winner = VAL if results.get("a") is done[0] else other
    alone = build_sets(winner, sources, teacher, f"{s3_bucket}/alone", BUILD)[0]
    assert alone.complete
    assert _objects(f"{out}/val").keys() == _objects(f"{s3_bucket}/alone/val").keys()
    for name in read_manifest(f"{out}/val").shard_counts:  # every shard from the one config
        assert remote.read_bytes(f"{out}/val/{name}") == remote.read_bytes(
            f"{s3_bucket}/alone/val/{name}"
        )


def test_http_locations_are_refused_as_build_outputs(sources, teacher):
    with pytest.raises(urls.UrlError, match="read only"):
        build_sets(VAL, sources, teacher, "https://example.invalid/sets", BUILD)


@pytest.mark.slow
def test_bad_credentials_are_one_line_naming_the_variables_read(
    tmp_path, monkeypatch, fast_transport
):
    server = MotoServer(tmp_path / "moto.log", auth=True)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDWRONG")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        remote.configure(fast_transport)
        with pytest.raises(remote.AccessDenied) as e:
            read_manifest("s3://sets/digits/val")
        text = str(e.value)
        assert len(text.splitlines()) == 1
        assert "s3://sets/digits/val/manifest.json: access denied (HTTP 403)" in text
        assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in text
        assert "AKIDWRONG" not in text and CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in text
    finally:
        server.stop()
