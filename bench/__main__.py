"""``python -m bench`` (``make bench``): run every benchmark, then write results/summary.md.

``python -m bench students attention`` runs a subset; ``BENCH_QUICK=1`` shrinks the repeats.
Options after one benchmark's name go to it: ``python -m bench feed --gpu-img-s 33900``.
"""

from __future__ import annotations

import importlib
import sys

from bench.common import RESULTS, machine
from common.atomic import write_text

ORDER = [
    "students",
    "attention",
    "teachers",
    "data",
    "recipes",
    "remote",
    "feed",
    "distill",
    "losses",
    "runtimes",
    "gpu",
    "gpu_pipeline",
    "nas_latency",
    "nas_search",
]


def main(argv: list[str]) -> None:
    split = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    names, options = argv[:split] or ORDER, argv[split:]
    unknown = sorted(set(names) - set(ORDER))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; choose from {ORDER}")
    if options and len(names) != 1:
        raise SystemExit(f"options {options} go to one benchmark: python -m bench <name> --...")
    for name in names:
        print(f"== bench/{name}.py", flush=True)
        module = importlib.import_module(f"bench.{name}")
        module.main(options) if options else module.main()
    parts = [f"# Benchmark results\n\nMachine: {machine()}\n"]
    parts += [(RESULTS / f"{n}.md").read_text() for n in ORDER if (RESULTS / f"{n}.md").exists()]
    summary = RESULTS / "summary.md"
    write_text(summary, "\n".join(parts))
    print(f"wrote {summary}")


if __name__ == "__main__":
    main(sys.argv[1:])
