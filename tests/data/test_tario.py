"""The shard reader on real tar files written by Python's tarfile: names over 100 characters in
PAX records, GNU long-name records and ustar prefixes are read whole and grouped by key."""

from __future__ import annotations

import io
import tarfile

import pytest

from data.tario import members, samples

LONG_DIR = "set_" + "d" * 110  # a folder longer than a ustar name field


def _keys() -> list[str]:
    """Two keys longer than 100 characters around a short one (a long name must not leak)."""
    return ["k" * 120 + "_0", "short_1", "k" * 140 + "_2"]


def _tar(fmt: int, prefix: str = "") -> tuple[bytes, list[tuple[str, bytes]]]:
    buf, written = io.BytesIO(), []
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for i, key in enumerate(_keys()):
            for ext, payload in (("jpg", bytes([i]) * (700 + i)), ("cls", str(i).encode())):
                name = f"{prefix}{key}.{ext}"
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                written.append((name, payload))
    return buf.getvalue(), written


@pytest.mark.parametrize(
    "fmt, marker",
    [(tarfile.PAX_FORMAT, b"x"), (tarfile.GNU_FORMAT, b"L")],
    ids=["pax", "gnu"],
)
def test_long_names_are_read_whole_and_grouped_by_key(fmt, marker):
    data, written = _tar(fmt)
    assert marker in {data[i + 156 : i + 157] for i in range(0, len(data), 512)}  # really used
    assert list(members(io.BytesIO(data), "t.tar")) == written
    got = list(samples(io.BytesIO(data), "t.tar"))
    assert [s["__key__"] for s in got] == _keys()
    for i, s in enumerate(got):
        assert s["jpg"] == bytes([i]) * (700 + i) and s["cls"] == str(i).encode()
        assert s["__url__"] == "t.tar"


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
def test_long_folder_names_keep_the_key_of_the_file_name(fmt):
    data, written = _tar(fmt, prefix=f"{LONG_DIR}/")
    assert [n for n, _ in members(io.BytesIO(data))] == [n for n, _ in written]
    assert [s["__key__"] for s in samples(io.BytesIO(data))] == _keys()


def test_ustar_prefix_field_is_joined_to_the_name():
    buf = io.BytesIO()
    name = f"{LONG_DIR}/sample_1.jpg"  # > 100 characters, split into prefix + name by ustar
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    assert list(members(io.BytesIO(buf.getvalue()))) == [(name, b"abc")]
    assert list(samples(io.BytesIO(buf.getvalue()))) == [
        {"__key__": "sample_1", "__url__": "?", "jpg": b"abc"}
    ]


def test_a_tar_cut_between_two_members_is_an_error_not_a_shorter_shard():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key in ("a", "b"):
            info = tarfile.TarInfo(f"{key}.cls")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"1"))
    data = buf.getvalue()
    assert [s["__key__"] for s in samples(io.BytesIO(data), "t.tar")] == ["a", "b"]
    cut = data[: 2 * 512]  # member a whole (header + one block), then nothing
    with pytest.raises(tarfile.ReadError, match="t.tar: cut short"):
        list(samples(io.BytesIO(cut), "t.tar"))
    assert list(members(io.BytesIO(b""), "empty.tar")) == []  # an empty file is not cut
