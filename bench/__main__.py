"""``python -m bench`` (``make bench``): run every benchmark, then write results/summary.md.

``python -m bench students attention`` runs a subset; ``BENCH_QUICK=1`` shrinks the repeats.
"""

from __future__ import annotations

import importlib
import os
import sys

from bench.common import RESULTS, machine

ORDER = [
    "students",
    "attention",
    "teachers",
    "data",
    "recipes",
    "distill",
    "losses",
    "runtimes",
    "gpu",
    "gpu_pipeline",
    "nas_latency",
    "nas_search",
]


def main(argv: list[str]) -> None:
    names = argv or ORDER
    unknown = sorted(set(names) - set(ORDER))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; choose from {ORDER}")
    for name in names:
        print(f"== bench/{name}.py", flush=True)
        importlib.import_module(f"bench.{name}").main()
    parts = [f"# Benchmark results\n\nMachine: {machine()}\n"]
    parts += [(RESULTS / f"{n}.md").read_text() for n in ORDER if (RESULTS / f"{n}.md").exists()]
    summary = RESULTS / "summary.md"
    tmp = summary.with_name("summary.md.tmp")
    tmp.write_text("\n".join(parts))
    os.replace(tmp, summary)
    print(f"wrote {summary}")


if __name__ == "__main__":
    main(sys.argv[1:])
