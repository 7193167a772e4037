"""Building shard sets from real JPEG folders: contents, labels, manifests, balance."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from common.images import decode_jpeg
from data.builder import build_sets
from data.extra import balance
from data.labels import decode_soft_label
from data.shards import read_manifest
from data.sources import ImageFolderSource, SourceError
from tests.helpers import read_samples

from .conftest import BUILD, SIZE, variant_cfgs


@pytest.mark.slow  # built: five variant sets labelled by a teacher
@pytest.mark.parametrize("name", ["randaug", "mixup", "inpaint", "extra", "val"])
def test_variant_shards_decode_and_carry_the_teachers_label_of_the_stored_image(
    name, built, teacher
):
    out, reports, _ = built
    manifest = read_manifest(out / name)
    assert reports[name].complete and not reports[name].skipped
    total = 0
    for url in manifest.urls():
        samples = read_samples(url)
        assert len(samples) == manifest.shard_counts[url.rsplit("/", 1)[1]]
        total += len(samples)
        images = torch.stack([decode_jpeg(s["jpg"]) for s in samples.values()])
        assert images.shape[1:] == (3, SIZE, SIZE)
        stored = torch.stack([decode_soft_label(s["soft.npy"], 10) for s in samples.values()])
        torch.testing.assert_close(stored, teacher.probs(images), atol=2e-3, rtol=0)
        for key, s in samples.items():
            meta = json.loads(s["json"])
            assert meta["variant"] == name and "seed" in meta["params"]
            if name != "extra":
                assert int(s["cls"]) == meta["label"]
            assert "." not in key
    assert total == manifest.num_samples == reports[name].written


@pytest.mark.slow  # built: five variant sets labelled by a teacher
def test_manifest_counts_match_the_planned_units(built, sources):
    out, _, _ = built
    assert read_manifest(out / "randaug").num_samples == 2 * len(sources["train"].items)
    assert read_manifest(out / "mixup").num_samples == len(sources["train"].items)
    assert read_manifest(out / "val").num_samples == len(sources["val"].items)
    m = read_manifest(out / "randaug")
    assert m.classes == [str(i) for i in range(10)] and m.data["teacher"] == "timm:resnet10t"


@pytest.mark.slow  # built: five variant sets labelled by a teacher
def test_mixup_mixes_with_a_dominant_weight(built):
    out, _, _ = built
    for url in read_manifest(out / "mixup").urls():
        for s in read_samples(url).values():
            params = json.loads(s["json"])["params"]
            assert 0.5 <= params["mix_weight"] <= 1.0 and params["partner"]


@pytest.mark.slow  # built: five variant sets labelled by a teacher
def test_inpaint_records_the_mask(built):
    out, _, _ = built
    for url in read_manifest(out / "inpaint").urls():
        for s in read_samples(url).values():
            mask = json.loads(s["json"])["params"]["mask"]
            assert mask["area"] >= 0.1 and mask["shapes"]


@pytest.mark.slow  # built: five variant sets labelled by a teacher
def test_extra_set_is_class_balanced_and_drops_images_under_the_threshold(
    built, pool_scores, sources
):
    out, reports, threshold = built
    sel = reports["extra"].balance
    probs, classes = pool_scores
    kept_items = {i for i, _, _ in sel.entries}
    assert kept_items == {i for i in range(len(probs)) if probs[i] > threshold}
    assert len(set(sel.after.values())) == 1  # every class with an image: the same count
    per_class = Counter()
    for url in read_manifest(out / "extra").urls():
        for s in read_samples(url).values():
            per_class[json.loads(s["json"])["params"]["pseudo_class"]] += 1
    assert len(set(per_class.values())) == 1
    assert sum(per_class.values()) == 2 * len(sel.entries)
    assert set(per_class) == {int(classes[i]) for i in kept_items}


def test_balance_replicates_rare_classes_and_caps_common_ones():
    probs = torch.tensor([0.9, 0.8, 0.7, 0.2, 0.95, 0.5, 0.4, 0.35])
    classes = torch.tensor([0, 0, 0, 0, 1, 2, 2, 2])
    sel = balance(probs, classes, num_classes=4, threshold=0.3, per_class=2)
    assert sel.after == {0: 2, 1: 2, 2: 2} and sel.empty_classes == [3]
    assert sorted(i for i, c, _ in sel.entries if c == 0) == [0, 1]  # the two most confident
    assert [(i, copy) for i, c, copy in sel.entries if c == 1] == [(4, 0), (4, 1)]
    assert sel.kept == {0: 3, 1: 1, 2: 3}
    uncapped = balance(probs, classes, num_classes=4, threshold=0.3)
    assert uncapped.target == 3 and set(uncapped.after.values()) == {3}


def test_source_without_valid_images_is_an_error_before_work(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.jpg").write_bytes(b"")
    (tmp_path / "cat" / "b.jpg").write_text("not an image")
    with pytest.raises(SourceError, match="has no usable image.*a.jpg: empty file"):
        ImageFolderSource(tmp_path)


def test_teacher_and_source_class_mismatch_is_an_error_before_work(tmp_path, teacher, digit_folder):
    three = ImageFolderSource(digit_folder / "train", classes_file=_class_file(tmp_path, "0 1 2"))
    with pytest.raises(ValueError, match="teacher timm:resnet10t has 10 classes but source"):
        build_sets(
            variant_cfgs(0.3) | {},
            {"train": three, "val": three, "pool": three},
            teacher,
            tmp_path / "out",
            BUILD,
        )
    assert not (tmp_path / "out").exists()


def _class_file(tmp_path, names: str):
    path = tmp_path / "classes.txt"
    path.write_text("\n".join(names.split()) + "\n")
    return path
