"""Preview grids of real shard sets: tiles, captions, the command line, bad views skipped."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest

from data.preview import CAPTION, TILE, grid, main, stored_views
from data.shards import read_manifest
from tests.helpers import garble_jpegs, read_samples, write_set


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("preview_sets")
    write_set(root, "randaug", [5, 4])
    write_set(root, "val", [3], offset=40)
    return root


def test_grid_has_one_captioned_tile_per_sample_in_rows_of_columns(sets):
    img = grid(sets / "randaug", n=7, columns=3)  # 9 stored, first 7 shown
    assert img.size == (3 * TILE, 3 * (TILE + CAPTION))
    a = np.asarray(img)
    for i in range(9):
        y, x = (i // 3) * (TILE + CAPTION), (i % 3) * TILE
        picture, caption = (
            a[y : y + TILE, x : x + TILE],
            a[y + TILE : y + TILE + CAPTION, x : x + TILE],
        )
        if i < 7:  # a digit (dark strokes on light) and black caption text under it
            assert picture.std() > 10 and (caption < 100).any()
        else:  # no sample: white
            assert (picture == 255).all() and (caption == 255).all()


def test_grid_of_fewer_samples_than_asked_shows_what_there_is(sets):
    img = grid(sets / "val", n=16, columns=8)
    assert img.size == (8 * TILE, TILE + CAPTION)


def test_cli_writes_one_png_per_set_with_a_manifest(sets, tmp_path, capsys):
    (sets / "not_a_set").mkdir(exist_ok=True)
    main([str(sets), "--n", "4", "--out", str(tmp_path / "previews")])
    assert sorted(p.name for p in (tmp_path / "previews").iterdir()) == ["randaug.png", "val.png"]
    assert "wrote" in capsys.readouterr().out


def test_cli_on_a_folder_without_sets_says_so(tmp_path):
    with pytest.raises(SystemExit, match="no built shard sets"):
        main([str(tmp_path)])


def test_a_bad_member_and_a_cut_shard_are_skipped_and_named(tmp_path, capsys):
    set_dir = write_set(tmp_path, "randaug", [5, 4])
    first, second = (Path(u) for u in read_manifest(set_dir).urls())
    (bad,) = garble_jpegs(first, {sorted(read_samples(str(first)))[2]})
    with tarfile.open(second) as tar:
        third_jpg = [m for m in tar.getmembers() if m.name.endswith(".jpg")][2]
    second.write_bytes(second.read_bytes()[: third_jpg.offset_data + 10])  # two samples whole
    skipped: list[tuple[str, str]] = []
    views = list(stored_views(read_manifest(set_dir), skipped))
    assert len(views) == 4 + 2 and len(skipped) == 2
    (where, why), (shard, cut) = skipped
    assert where == f"{first}:{bad}" and "UnidentifiedImageError" in why
    assert shard == "shard" and cut.startswith(f"ReadError: {second}: a member claims")
    main([str(tmp_path), "--n", "16", "--out", str(tmp_path / "previews")])
    assert f"skipped 2, e.g. {first}:{bad}: UnidentifiedImageError" in capsys.readouterr().out
