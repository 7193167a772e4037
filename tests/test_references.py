"""Every reference in the repository can be followed by whoever carries the project on.

Comments, docstrings, configs and docs cite the public sources (the MobileNetV4 paper by section
and table, timm's or TF Model Garden's source files, TuNAS, Beyer et al.) or state the fact
itself; they never point at private notes that are not in the repository.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = {".py", ".md", ".yaml", ".yml", ".toml", ".json", ".cfg", ".txt"}
# Note files kept outside the repository, cited by name or by their folder.
PRIVATE_NOTES = re.compile(r"\b(?:mnv4|nas|stack|style)\.md\b|shared/referenc[e]")


def tracked_text_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    paths = [ROOT / p for p in out.split("\0") if p]
    return [p for p in paths if p.suffix in TEXT or p.name == "Makefile"]


def private_citations(files: list[Path]) -> list[str]:
    hits = []
    for path in files:
        if not path.is_file():  # deleted in the work tree but still in the index
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if PRIVATE_NOTES.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    return hits


def test_the_pattern_catches_each_note_and_spares_public_sources():
    # Built from parts, so that this file does not cite the notes itself.
    cited = [f"({name}.md §1)" for name in ("mnv4", "nas", "stack", "style")]
    cited.append("/work/shared/" + "reference/mnv4")
    public = ["arXiv 2404.10518 §8", "README.md", "timm/models/mobilenetv3.py", "docs/nasty.md"]
    assert all(PRIVATE_NOTES.search(s) for s in cited)
    assert not any(PRIVATE_NOTES.search(s) for s in public)


def test_no_tracked_file_cites_notes_outside_the_repository():
    files = tracked_text_files()
    assert any(p.name == "README.md" for p in files) and len(files) > 50
    hits = private_citations(files)
    assert not hits, "cite the paper or a public source file instead:\n" + "\n".join(hits)
