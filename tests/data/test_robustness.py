"""Bad inputs are skipped, counted and named; a killed build resumes to the identical result."""

from __future__ import annotations

import io
import json
import random
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.builder import build_sets
from data.shards import read_manifest
from data.sources import ImageFolderSource
from teachers import build_model, create_teacher, save_teacher
from testkit.configs import build_cfg, variant_cfg
from tests.helpers import read_samples, write_digit_folder

from .conftest import rgb

REPO = Path(__file__).resolve().parents[2]


def _jpeg(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory) -> tuple[Path, dict[str, str], set[str]]:
    """Class folders seeded with every kind of bad input beside good images of odd formats."""
    root = tmp_path_factory.mktemp("messy")
    for c in "012":
        (root / c).mkdir()
        for i in range(3):
            Image.fromarray(rgb(40, 30, seed=i)).save(root / c / f"good{i}.jpg")
    good = {f"{c}/good{i}.jpg" for c in "012" for i in range(3)}
    # seeded: about 1 in 17 os.urandom bodies hits no valid marker, which PIL calls not an image
    garbled = random.Random(0).randbytes(3000)
    (root / "0" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + garbled)
    (root / "0" / "truncated.jpg").write_bytes(_jpeg(rgb(64, 64, 9))[:600])
    (root / "0" / "empty.jpg").write_bytes(b"")
    (root / "0" / "notes.jpg").write_text("this is not a picture")
    (root / "1" / "readme.txt").write_text("a stray file")
    Image.fromarray(rgb(40, 40, 3)).convert("CMYK").save(root / "1" / "cmyk.jpg")
    rgba = np.dstack([rgb(40, 40, 4), np.full((40, 40), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(root / "1" / "alpha.png")
    Image.fromarray(np.full((40, 40), 32768, np.uint16)).save(root / "2" / "deep.png")
    Image.fromarray(rgb(40, 40, 5)[:, :, 0]).save(root / "2" / "gray.jpg")
    Image.new("1", (12000, 9000)).save(root / "2" / "huge.png")
    (root / "zebra").mkdir()
    Image.fromarray(rgb(40, 40, 6)).save(root / "zebra" / "stripes.jpg")
    (root.parent / "classes.txt").write_text("0\n1\n2\n")
    good |= {"1/cmyk.jpg", "1/alpha.png", "2/deep.png", "2/gray.jpg"}
    bad = {
        "0/corrupt.jpg": "corrupt image",
        "0/truncated.jpg": "corrupt image",
        "0/empty.jpg": "empty file",
        "0/notes.jpg": "not an image",
        "1/readme.txt": "not an image",
        "2/huge.png": "too large",
        "zebra": "unknown class folder",
    }
    return root, bad, good


def test_every_bad_input_is_skipped_by_name_and_no_good_image_is_lost(messy_folder, tmp_path):
    root, bad, good = messy_folder
    source = ImageFolderSource(root, classes_file=root.parent / "classes.txt")
    variants = {"plain": variant_cfg(kind="plain", source="s", image_size=32, crop_pct=1.0)}
    teacher = create_teacher(
        save_teacher(
            build_model("timm:resnet10t", 3, pretrained=False),
            "timm:resnet10t",
            tmp_path / "teacher3.safetensors",
        )
    )
    reports = build_sets(
        variants, {"s": source}, teacher, tmp_path, build_cfg(progress=False, shard_size=8)
    )
    report = reports[0]
    skipped = {str(Path(ref).relative_to(root)): reason for ref, reason in report.skipped}
    for name, reason in bad.items():
        assert name in skipped, f"{name} was not reported"
        assert skipped[name].startswith(reason), (name, skipped[name])
    assert len(skipped) == len(bad), sorted(skipped)
    refs = set()
    for url in read_manifest(tmp_path / "plain").urls():
        for s in read_samples(url).values():
            refs.add(str(Path(json.loads(s["json"])["ref"]).relative_to(root)))
            if json.loads(s["json"])["ref"].endswith("deep.png"):
                pixels = np.asarray(Image.open(io.BytesIO(s["jpg"])))
                assert abs(float(pixels.mean()) - 128) < 3  # 16-bit scaled, not clipped to white
    assert refs == good
    assert report.skip_counts()["corrupt image"] == 2


def _build_cmd(root: Path, teacher_path: Path, out: Path, tmp: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "data.build",
        "dataset=folder",
        f"data_root={root}",
        f"teacher.checkpoint={teacher_path}",
        "teacher.train_if_missing=false",
        "only=[randaug]",
        "image_size=32",
        "variants.randaug.replicas=4",
        "build.shard_size=4",
        "build.num_workers=0",
        "build.progress=false",
        f"out_dir={out}",
        f"hydra.run.dir={tmp / 'hydra'}",
    ]


def _image_folder(tmp_path: Path, per_class: int) -> Path:
    """A ``dataset=folder`` root: digits JPEGs in train/ and val/, an empty unlabelled/."""
    root = tmp_path / "images"
    write_digit_folder(root / "train", per_class=per_class)
    write_digit_folder(root / "val", per_class=1, offset=40)
    (root / "unlabelled").mkdir()
    return root


def _complete_shards_only(set_dir: Path) -> None:
    """Every file named like a finished shard is a whole tar with its recorded sample count."""
    for tar_path in set_dir.glob("*.tar"):
        record = json.loads(tar_path.with_suffix(".json").read_text())
        with tarfile.open(tar_path) as tar:
            keys = {m.name.partition(".")[0] for m in tar}
        assert len(keys) == record["samples"]


@pytest.mark.slow
def test_killed_build_resumes_to_the_same_complete_set(tmp_path, teacher_path):
    root = _image_folder(tmp_path, per_class=6)
    out_a, out_b = tmp_path / "a", tmp_path / "b"

    proc = subprocess.Popen(
        _build_cmd(root, teacher_path, out_a, tmp_path),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    set_dir = out_a / "randaug"
    deadline = time.time() + 120
    while len(list(set_dir.glob("*.tar"))) < 3:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "the build never produced shards"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (set_dir / "manifest.json").exists()
    _complete_shards_only(set_dir)
    killed_with = len(list(set_dir.glob("*.tar")))

    rerun = subprocess.run(
        _build_cmd(root, teacher_path, out_a, tmp_path), cwd=REPO, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"/{killed_with}" in rerun.stdout  # the finished shards were kept, not rebuilt
    fresh = subprocess.run(
        _build_cmd(root, teacher_path, out_b, tmp_path), cwd=REPO, capture_output=True, text=True
    )
    assert fresh.returncode == 0, fresh.stderr[-2000:]

    a, b = read_manifest(set_dir), read_manifest(out_b / "randaug")
    assert a.shard_counts == b.shard_counts and a.num_samples == 240
    for name in a.shard_counts:
        assert (set_dir / name).read_bytes() == (out_b / "randaug" / name).read_bytes()
    assert not list(set_dir.glob("*.tmp"))


@pytest.mark.slow
def test_torchrun_builds_with_two_processes_each_writing_its_own_shards(tmp_path, teacher_path):
    root = _image_folder(tmp_path, per_class=3)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29517",
        "-m",
        "data.build",
        *_build_cmd(root, teacher_path, tmp_path / "out", tmp_path)[3:],
    ]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    m = read_manifest(tmp_path / "out" / "randaug")
    assert m.num_samples == 4 * 30 and len(m.shard_counts) == 30
    assert out.stdout.count("15/0") == 2  # each rank built its own 15 of the 30 shards


@pytest.mark.slow
def test_two_builds_on_one_empty_cache_both_end_with_complete_sets(tmp_path, teacher_path):
    """Two ``python -m data.build`` at once on one empty cache (the extra set's pool scoring
    included): both exit 0 and the sets are exactly what one build makes."""
    root = _image_folder(tmp_path, per_class=3)
    for p in write_digit_folder(tmp_path / "pool", per_class=2, offset=20):
        p.rename(root / "unlabelled" / f"{p.parent.name}_{p.name}")

    def cmd(out: Path, run: str) -> list[str]:
        smaller = {
            "only=[randaug]": "only=[randaug,extra]",
            "variants.randaug.replicas=4": "variants.randaug.replicas=2",
            "build.shard_size=4": "build.shard_size=8",
        }
        return [smaller.get(a, a) for a in _build_cmd(root, teacher_path, out, tmp_path / run)] + [
            "variants.extra.threshold=0.0",
            "variants.extra.replicas=2",
        ]

    procs = [
        subprocess.Popen(
            cmd(tmp_path / "out", f"run{i}"),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    alone = subprocess.run(
        cmd(tmp_path / "alone", "run2"), cwd=REPO, capture_output=True, text=True
    )
    assert alone.returncode == 0, alone.stderr[-3000:]
    for name in ("randaug", "extra"):
        a, b = read_manifest(tmp_path / "out" / name), read_manifest(tmp_path / "alone" / name)
        assert a.shard_counts == b.shard_counts and a.num_samples > 0
        for shard in a.shard_counts:
            got = (tmp_path / "out" / name / shard).read_bytes()
            assert got == (tmp_path / "alone" / name / shard).read_bytes()
        assert not list((tmp_path / "out" / name).glob("*.tmp"))
