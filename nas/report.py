"""The search's report: ``<run>/report.png`` and ``report.html`` (the PNG inlined).

Left: every architecture the controller sampled after the warm-up, quality (agreement with the
teacher on held-out training samples, through the SuperNet's shared weights) against predicted
latency, by stage, each stage's result (a star, through the final shared weights; nas/choice.py),
the target T0 with the band the result is chosen in, and the chosen architecture's latency.
Right: the controller's probability of each decision's most likely option over the steps.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common.atomic import atomic_path, write_text  # noqa: E402


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _floats(rows: list[dict], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) not in (None, "")]


def write_report(out: Path, summary: dict) -> Path:
    """Draw the figures and write the page; returns the HTML path."""
    stages = [(name, read_rows(out / "nas" / f"{name}.csv")) for name in summary["stages"]]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5))
    for (name, rows), color in zip(stages, ("tab:blue", "tab:orange", "tab:green"), strict=False):
        sampled = [r for r in rows if r.get("quality")]
        ax.scatter(
            _floats(sampled, "latency_ms"),
            _floats(sampled, "quality"),
            s=6,
            alpha=0.35,
            color=color,
            label=f"{name} samples ({len(sampled)})",
        )
        for d, probs in summary["stages"][name]["decisions"].items():
            choice = max(probs, key=probs.get)
            series = _floats(rows, f"p/{d}/{choice}")
            bx.plot(range(len(series)), series, lw=0.8, alpha=0.6)
        result = summary["stages"][name]
        if result.get("quality") is not None:
            ax.scatter(
                [result["predicted_ms"]],
                [result["quality"]],
                marker="*",
                s=160,
                color=color,
                edgecolor="k",
                zorder=3,
                label=f"{name} result",
            )
    ax.axvline(
        summary["target_ms"],
        color="k",
        ls="--",
        lw=1,
        label=f"target {summary['target_ms']:.3f} ms",
    )
    choice = summary["nas"]["choice"]
    if choice["rule"] == "in_band":
        t0, band = summary["target_ms"], choice["band"]
        ax.axvspan(t0 * (1 - band), t0 * (1 + band), color="k", alpha=0.06, label="band")
    ax.axvline(
        summary["predicted_ms"],
        color="tab:red",
        lw=1.5,
        label=f"chosen {summary['predicted_ms']:.3f} ms",
    )
    ax.set_xlabel(
        f"predicted latency, ms ({summary['runtime']} {summary['precision']}, {summary['resolution']} px)"
    )
    ax.set_ylabel("quality: held-out agreement with the teacher")
    ax.legend(fontsize=8)
    ax.set_title("sampled architectures")
    bx.set_xlabel("step (per stage)")
    bx.set_ylabel("probability of the most likely option")
    bx.set_title("controller, one line per decision")
    fig.tight_layout()
    png = out / "report.png"
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    data = base64.b64encode(png.read_bytes()).decode()
    page = (
        "<!doctype html><meta charset='utf-8'><title>search report</title>"
        f"<h1>Search: {html.escape(summary['arch'])}</h1>"
        f"<img src='data:image/png;base64,{data}' style='max-width:100%'>"
        f"<pre>{html.escape(json.dumps(summary, indent=2))}</pre>"
    )
    page_path = out / "report.html"
    write_text(page_path, page)
    return page_path
