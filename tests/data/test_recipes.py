"""Recipe sets (build.store=recipe): stored once, replayed exactly, verified, bad input skipped."""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from data.builder import build_sets
from data.config import TeacherConfig
from data.datamodule import DistillDataModule
from data.recipes import VIEWS, Replayer, ReplicaPicker, group_size, pixel_hash, view_digest
from data.shards import read_manifest, shard_name, write_set_json, write_shard
from data.sources import DigitsSource
from data.stream import NoUsableSample, expand_groups, loader, train_pipeline
from data.verify import main as verify_main
from data.verify import verify
from teachers import create_teacher, soft_labels
from testkit.configs import build_cfg, variant_cfg
from tests.helpers import read_samples, save_random_teacher

FRACTIONS = {"labelled": 0.03, "pool": 0.05, "val": 0.03}
REPLICAS = {"randaug": 6, "mixup": 5, "inpaint": 2, "extra": 3}


def _variants() -> dict[str, dict]:
    common = {"image_size": 32, "raw_size": 32, "jpeg_quality": 90, "crop_scale": [0.4, 1.0]}
    return {
        "randaug": variant_cfg(**common, kind="randaug", source="labelled", seed=1),
        "mixup": variant_cfg(**common, kind="mixup", source="labelled", seed=2, group=4),
        "inpaint": variant_cfg(**common, kind="inpaint", source="labelled", seed=3),
        "extra": variant_cfg(**common, kind="extra", source="pool", seed=4, threshold=0.0),
    }


@pytest.fixture(scope="session")
def recipe_sets(tmp_path_factory):
    """Four recipe sets from real digits, labelled (top-3) by a random-init 32-px teacher."""
    root = tmp_path_factory.mktemp("recipes")
    ckpt = save_random_teacher(root / "teacher.safetensors", input_size=32)
    teacher = create_teacher(ckpt)
    sources = {s: DigitsSource(s, 32, FRACTIONS) for s in ("labelled", "pool")}
    variants = {n: {**v, "replicas": REPLICAS[n]} for n, v in _variants().items()}
    build = build_cfg(shard_size=16, batch_size=16, num_workers=0, progress=False)
    build.update(store="recipe", top_k=3)
    tcfg = TeacherConfig(
        spec="timm:resnet10t",
        checkpoint=str(ckpt),
        pretrained=True,
        train_if_missing=False,
        channels_last=False,
        autocast=None,
    )
    reports = build_sets(variants, sources, teacher, root / "shards", build, teacher_cfg=tcfg)
    return root / "shards", teacher, sources, {r.name: r for r in reports}


def _all_samples(set_dir: Path):
    for url in read_manifest(set_dir).urls():
        for key, sample in read_samples(url).items():
            yield url, {"__key__": key, "__url__": url, **sample}


@pytest.mark.slow  # recipe_sets: four sets built and labelled
@pytest.mark.parametrize("name", sorted(REPLICAS))
def test_every_stored_view_replays_bit_exactly_with_the_teachers_label(recipe_sets, name):
    root, teacher, sources, reports = recipe_sets
    m = read_manifest(root / name)
    replay = Replayer(m.data["recipe"], m.num_classes)  # checks digests: a mismatch raises
    views, stored = [], []
    images = 0
    for _, sample in _all_samples(root / name):
        records = replay.records(sample)
        assert records.shape == (group_size(sample), REPLICAS[name])
        images += records.shape[0]
        for i in range(records.shape[0]):
            for r in range(records.shape[1]):
                view, row, _ = replay.render(sample, i, r, records)
                views.append(torch.from_numpy(view).permute(2, 0, 1))
                stored.append(replay.codec.soft_label(row))
    src = sources["pool" if name == "extra" else "labelled"]
    if name != "extra":  # each source image stored once, every replica of it recorded
        assert images == len(src.items)
    assert m.num_samples == images and len(views) == images * REPLICAS[name]
    assert m.data["storage"]["mode"] == "recipe" and m.data["storage"]["views"] == len(views)
    fresh = soft_labels(teacher, torch.stack(views), top_k=3)
    assert torch.equal(torch.stack(stored).argmax(1), fresh.indices[:, 0].long())
    assert reports[name].views == len(views)


@pytest.mark.slow  # builds a second set
def test_samples_pack_8_images_and_never_more_than_a_shard_holds(recipe_sets, tmp_path):
    root, teacher, sources, _ = recipe_sets
    sizes = [group_size(s) for _, s in _all_samples(root / "randaug")]
    assert max(sizes) == 8 and sum(sizes) == read_manifest(root / "randaug").num_samples
    mixup = [group_size(s) for _, s in _all_samples(root / "mixup")]
    assert max(mixup) == 4 and sorted(mixup)[1] == 4  # partner groups; only the last is short
    ra = {**_variants()["randaug"], "replicas": 1}
    build = build_cfg(store="recipe", shard_size=3, num_workers=0, progress=False)
    build_sets({"ra": ra}, sources, teacher, tmp_path, build)
    m = read_manifest(tmp_path / "ra")
    per_shard = [sum(group_size(s) for s in read_samples(u).values()) for u in m.urls()]
    assert max(per_shard) == 3 and sum(per_shard) == len(sources["labelled"].items)


@pytest.mark.slow  # recipe_sets: four sets built and labelled
def test_pixel_sets_keep_their_identity_and_plain_sets_stay_pixels(recipe_sets, tmp_path):
    root, teacher, sources, _ = recipe_sets
    ra = {**_variants()["randaug"], "replicas": 1}
    val = variant_cfg(image_size=32, kind="plain", source="labelled", replicas=1)
    build = build_cfg(shard_size=64, num_workers=0, progress=False)
    build_sets({"ra": ra}, sources, teacher, tmp_path / "px", {**build, "store": "pixels"})
    ident = json.loads((tmp_path / "px" / "ra" / "build.json").read_text())["config"]
    assert "store" not in ident and "raw_size" not in ident["variant"]  # hash as before
    assert read_manifest(tmp_path / "px" / "ra").data["storage"]["mode"] == "pixels"
    build_sets({"val": val}, sources, teacher, tmp_path / "rc", {**build, "store": "recipe"})
    m = read_manifest(tmp_path / "rc" / "val")
    assert m.data["storage"]["mode"] == "pixels" and "recipe" not in m.data
    with pytest.raises(ValueError, match="build.store"):
        build_sets({"ra": ra}, sources, teacher, tmp_path / "x", {**build, "store": "jpeg"})


@pytest.mark.slow  # recipe_sets: four sets built and labelled
def test_verify_reports_exact_replay_and_exits_zero(recipe_sets, capsys):
    root, *_ = recipe_sets
    rc = verify_main([str(root / "mixup"), "--samples", "40", "--no-progress"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert rc == 0, last
    assert last == "verify: views=40 view_exact=1.0000 top1_agreement=1.0000 mean_kl=0"


def _copy_set(src: Path, dst: Path, change) -> Path:
    """A copy of a set with every sample passed through ``change(sample) -> sample``."""
    shutil.copytree(src, dst)
    m = read_manifest(dst)
    for index, url in enumerate(m.urls()):
        samples = [change({"__key__": k, **s}) for k, s in read_samples(url).items()]
        record = json.loads(Path(url).with_suffix(".json").read_text())
        write_shard(dst, m.data["name"], index, samples, record)
    return dst


def _edit_views(sample: dict, edit) -> dict:
    views = np.load(io.BytesIO(sample[VIEWS]), allow_pickle=False).copy()
    edit(views)
    buf = io.BytesIO()
    np.save(buf, views, allow_pickle=False)
    return {**sample, VIEWS: buf.getvalue()}


@pytest.mark.slow  # recipe_sets: four sets built and labelled
def test_verify_catches_a_wrong_label_and_a_changed_view(recipe_sets, tmp_path, capsys):
    root, *_ = recipe_sets

    def relabel(v):  # the teacher's top class moved to its second
        v["cls"][..., [0, 1]] = v["cls"][..., [1, 0]]

    def recrop(v):  # the stored box no longer the labelled one
        v["crop"][..., 2] = np.maximum(v["crop"][..., 2] - 3, 1)

    wrong = _copy_set(root / "randaug", tmp_path / "relabelled", lambda s: _edit_views(s, relabel))
    result = verify(wrong, samples=30, progress=False)
    assert result["view_exact"] == 0.0 and result["top1_agreement"] < 0.2
    assert verify_main([str(wrong), "--samples", "30", "--no-progress"]) == 1
    moved = _copy_set(root / "randaug", tmp_path / "recropped", lambda s: _edit_views(s, recrop))
    assert verify(moved, samples=30, progress=False)["view_exact"] < 0.2
    capsys.readouterr()


def _edit_images(set_dir: Path, dst: Path, images: int, edit) -> tuple[Path, set[str]]:
    """A copy of ``set_dir`` with ``edit(records)`` applied to every replica of its first
    ``images`` images (same file sizes); returns the copy and those images' stream keys."""
    done: set[str] = set()

    def change(sample: dict) -> dict:
        n = min(group_size(sample), images - len(done))
        if n <= 0:
            return sample
        done.update(f"{sample['__key__']}:{i}" for i in range(n))
        return _edit_views(sample, lambda v: edit(v[:n]))

    return _copy_set(set_dir, dst, change), done


def _skips_and_views(set_dir: Path, n_batches: int) -> tuple[list[tuple[str, str]], list[str]]:
    """(skips, keys of the good views) of ``n_batches`` batches of the training stream."""
    batches = _batches(_stream(set_dir, batch=16), n_batches)
    return [x for b in batches for x in b["skipped"]], [k for b in batches for k in b["key"]]


@pytest.mark.slow  # verifies 200 views twice and streams 12 batches
def test_verify_fails_and_training_skips_exactly_the_views_whose_digest_differs(
    recipe_sets, tmp_path, capsys
):
    """A digest mismatch fails verify (exit 1) even when every top-1 stays; training skips
    exactly the views of the changed records and no other."""
    root, *_ = recipe_sets

    def bad_digest(v):
        v["digest"] ^= 1

    changed, keys = _edit_images(root / "randaug", tmp_path / "digest", 3, bad_digest)
    result = verify(changed, samples=200, progress=False)
    assert result["top1_agreement"] == 1.0 and 0.0 < result["view_exact"] < 1.0
    assert verify_main([str(changed), "--samples", "200", "--no-progress"]) == 1
    skips, good = _skips_and_views(changed, 12)
    skipped = {where.split(".tar:", 1)[1] for where, _ in skips}
    assert skipped == keys and all("digest" in why for _, why in skips), skips[:3]
    assert not {k.replace(".", ":") for k in good} & keys
    capsys.readouterr()


@pytest.mark.slow  # verifies 300 views twice and streams 12 batches
@pytest.mark.parametrize("name", ["randaug", "mixup"])
def test_changed_probabilities_in_20_records_are_skipped_by_training_and_fail_verify(
    recipe_sets, tmp_path, name, capsys
):
    """The stored label is covered by the view's digest: halving the third probability in 20
    records (top-1 and file size unchanged) is a counted skip of exactly those views in training
    and fails verify, which used to pass it."""
    root, *_ = recipe_sets

    def lower_third(v):
        v["prob"][..., 2] = v["prob"][..., 2] / 2

    per_image = REPLICAS[name]
    images = 20 // per_image + (20 % per_image > 0)
    changed, keys = _edit_images(root / name, tmp_path / "probs", images, lower_third)
    result = verify(changed, samples=300, progress=False)
    assert result["top1_agreement"] == 1.0 and result["view_exact"] < 1.0, result
    assert verify_main([str(changed), "--samples", "300", "--no-progress"]) == 1
    skips, good = _skips_and_views(changed, 12)
    skipped = {where.split(".tar:", 1)[1] for where, _ in skips}
    assert skips and all("digest" in why for _, why in skips), skips[:3]
    assert skipped == keys and not {k.replace(".", ":") for k in good} & keys
    capsys.readouterr()


def test_verify_errors_name_the_problem(tmp_path, capsys):
    assert verify_main([str(tmp_path / "nothing")]) == 2
    assert "shard set not found" in capsys.readouterr().err


def _stream(set_dir: Path, seed: int = 0, batch: int = 8, **kw):
    m = read_manifest(set_dir)
    return train_pipeline(
        [m.urls()],
        [1.0],
        kw.pop("rank", 0),
        kw.pop("world", 1),
        batch,
        m.num_classes,
        seed,
        True,
        16,
        None,
        [m.data["name"]],
        [m.data["recipe"]],
        **kw,
    )


def _batches(stream, n: int, workers: int = 0):
    it = iter(loader(stream, workers, 0, 0))
    return [next(it) for _ in range(n)]


@pytest.mark.slow  # recipe_sets: four sets built and labelled
@pytest.mark.parametrize("workers", [0, 2])
def test_the_same_seed_replays_the_same_batches(recipe_sets, workers):
    root, *_ = recipe_sets
    a = _batches(_stream(root / "mixup", seed=3), 4, workers)
    b = _batches(_stream(root / "mixup", seed=3), 4, workers)
    c = _batches(_stream(root / "mixup", seed=4), 4, workers)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["soft"], y["soft"])
        assert x["key"] == y["key"]
    assert not all(torch.equal(x["image"], z["image"]) for x, z in zip(a, c, strict=True))
    assert all(not x["skipped"] for x in a)


@pytest.mark.slow  # recipe_sets: four sets built and labelled
def test_each_visit_of_an_image_renders_another_replica(recipe_sets):
    pick = ReplicaPicker(seed=0, rank=0, worker=0)
    assert sorted(pick("shard:key:0", 7) for _ in range(7)) == list(range(7))
    root, *_ = recipe_sets
    seen: dict[str, set[bytes]] = {}
    for batch in _batches(_stream(root / "randaug"), 30):
        for key, img in zip(batch["key"], batch["image"], strict=True):
            seen.setdefault(key, set()).add(img.flip(-1).numpy().tobytes())
            seen[key].add(img.numpy().tobytes())
    revisited = [k for k, v in seen.items() if len(v) > 2]
    assert revisited  # views of one image differ between visits, not only by the flip


@pytest.mark.slow  # recipe_sets: four sets built and labelled
def test_stream_labels_are_the_stored_labels_of_the_rendered_view(recipe_sets):
    root, teacher, *_ = recipe_sets
    batch = _batches(_stream(root / "randaug"), 1)[0]
    m = read_manifest(root / "randaug")
    by_key = {
        f"{s['__key__']}.{i}": (s, i)
        for _, s in _all_samples(root / "randaug")
        for i in range(group_size(s))
    }
    replay = Replayer(m.data["recipe"], m.num_classes)
    for key, img, soft in zip(batch["key"], batch["image"], batch["soft"], strict=True):
        sample, i = by_key[key]
        records = replay.records(sample)
        rows = [replay.render(sample, i, r, records) for r in range(records.shape[1])]
        hwc = img.permute(1, 2, 0).numpy()
        hits = [
            row
            for view, row, _ in rows
            if np.array_equal(view, hwc) or np.array_equal(view[:, ::-1], hwc)
        ]
        assert hits and torch.equal(replay.codec.soft_label(hits[0]), soft)


def _one_shard_set(src: Path, dst: Path, change=None, only_first: bool = False) -> Path:
    """The first shard of ``src`` as a set of its own; ``change`` applied to every sample (or,
    with ``only_first``, to the first sample only)."""
    m = read_manifest(src)
    dst.mkdir(parents=True)
    first = m.urls()[0]
    samples = [{"__key__": k, **s} for k, s in read_samples(first).items()]
    if change is not None:
        samples = [change(s) if (k == 0 or not only_first) else s for k, s in enumerate(samples)]
    record = json.loads(Path(first).with_suffix(".json").read_text())
    name = m.data["name"]
    write_shard(dst, name, 0, samples, record)
    n = m.shard_counts[Path(first).name]
    write_set_json(
        dst / "manifest.json", {**m.data, "num_samples": n, "shards": {shard_name(name, 0): n}}
    )
    return dst


def _set_field(field: str, value):
    return lambda s: _edit_views(s, lambda v: v.__setitem__(field, value))


@pytest.mark.parametrize(
    ("case", "set_name", "change", "reason"),
    [
        ("unknown op", "randaug", _set_field("ops", 99), "RandAugment op 99 unknown"),
        ("crop outside", "mixup", _set_field("crop", 9999), "crop box"),
        ("missing partner", "mixup", _set_field("partner", 200), "which the sample lacks"),
        (
            "missing sources",
            "randaug",
            lambda s: {k: v for k, v in s.items() if not k.endswith(".jpg")},
            "group lacks",
        ),
        (
            "undecodable sources",
            "randaug",
            lambda s: {k: b"no jpeg" if k.endswith(".jpg") else v for k, v in s.items()},
            "ImageError",
        ),
        ("class count", "mixup", _set_field("cls", 60), "class 60"),
        ("digest", "mixup", _set_field("digest", 12345), "differs from the one the teacher"),
        ("no views", "mixup", lambda s: {k: v for k, v in s.items() if k != VIEWS}, "views.npy"),
    ],
)
@pytest.mark.slow  # recipe_sets: four sets built and labelled
def test_bad_recipes_are_skips_naming_shard_and_key_and_a_dead_set_fails_fast(
    recipe_sets, tmp_path, case, set_name, change, reason
):
    root, *_ = recipe_sets
    dead = _one_shard_set(root / set_name, tmp_path / "dead", change)
    with pytest.raises(NoUsableSample) as err:
        next(iter(_stream(dead)))
    assert f"{set_name}-000000.tar" in str(err.value) and reason in str(err.value)
    # one bad sample among good ones: a counted skip naming shard and key, and the stream goes on
    one = _one_shard_set(root / set_name, tmp_path / "one", change, only_first=True)
    skipped = [x for b in _batches(_stream(one), 6) for x in b["skipped"]]
    assert skipped and all(reason in why for _, why in skipped), skipped[:3]
    assert all(f"{set_name}-000000.tar:" in where for where, _ in skipped)


@pytest.mark.slow  # recipe_sets: four sets built and labelled
def test_a_group_missing_an_image_member_names_it_and_keeps_the_images_after_it(
    recipe_sets, tmp_path
):
    root, *_ = recipe_sets
    gap = _one_shard_set(
        root / "mixup", tmp_path / "gap", lambda s: {k: v for k, v in s.items() if k != "1.jpg"}
    )
    url = read_manifest(gap).urls()[0]
    key, sample = next(iter(read_samples(url).items()))
    sample = {"__key__": key, "__url__": url, **sample}
    assert group_size(sample) == 4  # the group's classes say 4 images, the gap included
    entries = list(expand_groups([sample]))
    assert [e.get("__image__") for e in entries] == [0, None, 2, 3]
    assert entries[1]["__bad__"] == (f"{url}:{key}:1", "group lacks 1.jpg")
    skipped = [x for b in _batches(_stream(gap), 6) for x in b["skipped"]]
    assert (f"{url}:{key}:1", "group lacks 1.jpg") in [tuple(x) for x in skipped]


@pytest.mark.slow  # recipe_sets: four sets built and labelled
def test_an_unknown_op_table_or_format_is_refused_before_training(recipe_sets):
    root, *_ = recipe_sets
    spec = read_manifest(root / "randaug").data["recipe"]
    with pytest.raises(ValueError, match="op table"):
        Replayer({**spec, "ops": ["Identity", "Warp"]}, 10)
    with pytest.raises(ValueError, match="recipe format") as err:
        Replayer({**spec, "version": 1}, 10)
    assert "python -m data.build build.store=recipe overwrite=true only=[randaug]" in str(err.value)
    with pytest.raises(ValueError, match="classes"):
        Replayer(spec, 11)


@pytest.mark.slow  # recipe_sets: four sets built and labelled
def test_other_library_versions_are_warned_about(recipe_sets, tmp_path, caplog):
    root, *_ = recipe_sets
    for name in ("randaug", "mixup"):
        shutil.copytree(root / name, tmp_path / name)
    m = read_manifest(tmp_path / "randaug")
    m.data["recipe"]["versions"]["opencv-python-headless"] = "0.1.0"
    write_set_json(m.path, m.data)
    dm = DistillDataModule(tmp_path, {"randaug": 1}, "mixup", batch_size=4, num_workers=0)
    with caplog.at_level(logging.WARNING, logger="data"):
        dm.prepare()
    assert "opencv-python-headless 0.1.0 ->" in caplog.text and "data.verify" in caplog.text


@pytest.mark.slow  # recipe_sets: four sets built and labelled
def test_two_ranks_on_a_one_shard_recipe_set_both_get_batches(recipe_sets, tmp_path):
    root, *_ = recipe_sets
    one = _one_shard_set(root / "randaug", tmp_path / "one")
    for rank in (0, 1):
        batch = _batches(_stream(one, rank=rank, world=2), 2)[-1]
        assert batch["image"].shape == (8, 3, 32, 32) and not batch["skipped"]


def test_digest_covers_every_pixel_the_record_and_the_class():
    view = np.zeros((8, 8, 3), dtype=np.uint8)
    changed = view.copy()
    changed[7, 7, 2] = 1
    assert pixel_hash(view) != pixel_hash(changed)
    assert pixel_hash(view) != pixel_hash(view.reshape(4, 16, 3))  # the shape too
    row = np.zeros(1, dtype=[("crop", "<u2", (4,)), ("digest", "<u4"), ("prob", "<f2", (3,))])[0]
    digest = view_digest(pixel_hash(view), row, 3)
    assert view_digest(pixel_hash(view), row, 4) != digest
    other = row.copy()
    other["prob"][2] = 0.5
    assert view_digest(pixel_hash(view), other, 3) != digest
    other = row.copy()
    other["digest"] = 99  # the digest field itself is left out
    assert view_digest(pixel_hash(view), other, 3) == digest


@pytest.mark.slow  # recipe_sets: four sets built and labelled
def test_preview_renders_recipe_views(recipe_sets):
    from data.preview import grid

    root, *_ = recipe_sets
    img = grid(root / "mixup", n=8, columns=4)
    assert (
        img.size == (4 * 96, 2 * (96 + 26))
        and len(np.unique(np.asarray(img).reshape(-1, 3), axis=0)) > 50
    )


@pytest.mark.slow  # recipe_sets: four sets built and labelled
def test_preview_skips_a_recipe_with_a_bad_crop_box_and_names_it(recipe_sets, tmp_path):
    from data.preview import stored_views

    root, *_ = recipe_sets
    bad = _one_shard_set(root / "mixup", tmp_path / "bad", _set_field("crop", 9999), True)
    m = read_manifest(bad)
    url = m.urls()[0]
    key = next(iter(read_samples(url)))
    skipped: list[tuple[str, str]] = []
    views = list(stored_views(m, skipped))
    assert [where for where, _ in skipped] == [f"{url}:{key}:{i}" for i in range(4)]
    assert all("crop box" in why for _, why in skipped)
    assert len(views) == m.num_samples - 4  # the images of every other group shown


@pytest.mark.slow  # recipe_sets: four sets built and labelled
def test_the_same_seed_picks_the_same_views_wherever_the_set_lives(recipe_sets, tmp_path):
    root, *_ = recipe_sets
    moved = shutil.copytree(root / "randaug", tmp_path / "elsewhere" / "randaug")
    a = _batches(_stream(root / "randaug", seed=5), 3)
    b = _batches(_stream(moved, seed=5), 3)
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(a, b, strict=True))


def test_every_view_of_the_tiny_caches_recipe_set_replays_with_its_digest(tiny_cache):
    """The fast tier's replay check, on the shared cache (recipe_sets' checks run in the slow
    tier): every stored record renders and matches its digest, and the manifest counts them."""
    cache = Path(next(o.split("=", 1)[1] for o in tiny_cache if o.startswith("paths.cache=")))
    set_dir = cache / "shards" / "digits" / "randaug"
    m = read_manifest(set_dir)
    replay = Replayer(m.data["recipe"], m.num_classes)  # checks digests: a mismatch raises
    views = 0
    for _, sample in _all_samples(set_dir):
        records = replay.records(sample)
        for i in range(records.shape[0]):
            for r in range(records.shape[1]):
                view, row, _ = replay.render(sample, i, r, records)
                assert view.shape == (32, 32, 3) and replay.codec.soft_label(row).sum() > 0
                views += 1
    assert m.data["storage"]["mode"] == "recipe" and m.data["storage"]["views"] == views > 0
