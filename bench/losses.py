"""The loss table: each distillation loss on the embedded digits data, 3 seeds.

Every row is ``python -m distill +student=mnv4_conv_s`` on the same warm cache and the same
steps (the digits default: 160 steps of 128), offline (stored labels), online (the teacher
labels each batch) and, for the best loss, hybrid (stored labels for D1 and D3, the live teacher
on fresh D2 views), varying only ``loss=`` (and ``mode=``). The from-labels baseline comes from
each seed's first run (the default trains it on the same steps). Reported: distilled val top-1,
the gain over the baseline of the same seed, top-1 agreement with the teacher, the share of
training samples the teacher labelled and of the step time it took, and the training time.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from bench.common import quick, table, write_result
from bench.distill import run_default

LOSSES = {  # row name -> overrides
    "soft_ce": ["loss=soft_ce"],
    "kl": ["loss=kl"],
    "kl + standardize": ["loss=kl_std"],  # T 2: the digits default
    "dkd": ["loss=dkd"],
    "dkd + standardize": ["loss=dkd", "loss.standardize=true", "loss.temperature=2"],
    "dist": ["loss=dist"],
}
MODES = {  # row name -> the modes it runs in (default: offline only)
    "kl": ("offline", "online"),
    "kl + standardize": ("offline", "online", "hybrid"),
    "dkd": ("offline", "online"),
    "dist": ("offline", "online"),
}
FAST = ["export.enabled=false", "report.enabled=false"]


def run_table(tmp: Path, cache: Path, seeds: list[int], losses: dict[str, list[str]]) -> list[dict]:
    rows, baseline = [], {}
    for seed in seeds:
        for mode in ("offline", "online", "hybrid"):
            for name, overrides in losses.items():
                if mode not in MODES.get(name, ("offline",)):
                    continue
                first = seed not in baseline
                extra = [f"seed={seed}", f"mode={mode}", *overrides, *FAST]
                extra.append(f"baseline.enabled={str(first).lower()}")
                out = tmp / f"{mode}_{name.replace(' ', '')}_{seed}"
                r = run_default(cache, out, extra)
                if first:
                    baseline[seed] = r["baseline_metrics"]["val/top1"]
                m, cost = r["student_metrics"], r["teacher_cost"]
                rows.append(
                    {
                        "loss": name,
                        "mode": mode,
                        "seed": seed,
                        "top1": m["val/top1"],
                        "ema_top1": m.get("val/ema_top1"),
                        "agreement": m.get("val/agree_top1"),
                        "from_labels": baseline[seed],
                        "gain": m["val/top1"] - baseline[seed],
                        "teacher": r.get("teacher_top1"),
                        "teacher_forward_share": cost["teacher_forward_share"],
                        "teacher_time_share": cost["teacher_time_share"],
                        "train_s": r["distill_wall_s"],
                        "wall_s": r["wall_s"],
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per (loss, mode): per-seed top-1, mean top-1, gains, agreement, teacher share, time."""
    out = []
    for key in dict.fromkeys((r["loss"], r["mode"]) for r in rows):
        rs = [r for r in rows if (r["loss"], r["mode"]) == key]
        out.append(
            {
                "loss": key[0],
                "mode": key[1],
                "top1_per_seed": [round(100 * r["top1"], 1) for r in rs],
                "top1_mean": round(100 * statistics.mean(r["top1"] for r in rs), 2),
                "gain_mean": round(100 * statistics.mean(r["gain"] for r in rs), 2),
                "gain_min": round(100 * min(r["gain"] for r in rs), 2),
                "agreement_mean": round(100 * statistics.mean(r["agreement"] for r in rs), 2),
                "teacher_forward_share": statistics.mean(r["teacher_forward_share"] for r in rs),
                "teacher_time_share": round(
                    statistics.mean(r["teacher_time_share"] for r in rs), 3
                ),
                "train_s_median": statistics.median(r["train_s"] for r in rs),
            }
        )
    return out


def render(p: dict) -> str:
    rows = p["summary"]
    md = "### Losses on digits (val top-1 %, 160 steps of 128, Conv-S, seeds "
    md += ", ".join(str(s) for s in p["seeds"]) + ")\n\n"
    md += table(
        [
            "loss",
            "mode",
            "top-1 per seed",
            "mean",
            "gain over labels (mean / min)",
            "agreement",
            "teacher forwards (share of samples / of step time)",
            "training s (median)",
        ],
        [
            [
                r["loss"],
                r["mode"],
                " / ".join(str(v) for v in r["top1_per_seed"]),
                r["top1_mean"],
                f"{r['gain_mean']:+.1f} / {r['gain_min']:+.1f}",
                r["agreement_mean"],
                f"{r['teacher_forward_share']:.2f} / {r['teacher_time_share']:.2f}",
                f"{r['train_s_median']:.0f}",
            ]
            for r in rows
        ],
    )
    base = sorted({(r["seed"], r["from_labels"]) for r in p["rows"]})
    md += (
        "\nFrom labels (same steps): "
        + ", ".join(f"seed {s}: {100 * v:.1f}" for s, v in base)
        + ". `dkd` and `dist` add label cross-entropy (weight 1) where labels exist, as their "
        "papers do; `+ standardize` runs at base temperature 2. Hybrid: D1 and D3 stored, D2 live "
        "(a fresh view each visit, labelled by the teacher in the step). Training s: the fit "
        "alone (no baseline, export or report), on 2 CPU cores shared with other jobs.\n"
    )
    return md


def chosen_losses(q: bool) -> dict[str, list[str]]:
    """``BENCH_LOSSES="soft_ce,kl + standardize"`` runs those rows only (all by default)."""
    names = os.environ.get("BENCH_LOSSES")
    if not names:
        return {k: LOSSES[k] for k in ("soft_ce", "kl + standardize")} if q else LOSSES
    wanted = [n.strip() for n in names.split(",")]
    unknown = sorted(set(wanted) - set(LOSSES))
    if unknown:
        raise SystemExit(f"BENCH_LOSSES: unknown rows {unknown}; choose from {list(LOSSES)}")
    return {k: LOSSES[k] for k in wanted}


def main() -> None:
    q = quick()
    seeds = [0] if q else [0, 1, 2]
    losses = chosen_losses(q)
    tmp = Path(tempfile.mkdtemp(prefix="bench_losses_"))
    # BENCH_CACHE: a digits cache built before (teacher and shards) instead of a cold one
    cache = Path(os.environ["BENCH_CACHE"]) if os.environ.get("BENCH_CACHE") else tmp / "cache"
    try:
        rows = run_table(tmp, cache, seeds, losses)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    payload = {"seeds": seeds, "rows": rows, "summary": summarise(rows)}
    write_result("losses", payload, render(payload))


if __name__ == "__main__":
    main()
