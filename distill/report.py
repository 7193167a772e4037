"""``python -m distill.report <run dir>``: one HTML page that shows how a run went.

Writes ``<run dir>/report.html`` (self-contained: the figures are inline base64 PNGs) and the
figures as files under ``<run dir>/report/``: validation curves (student, EMA, from-labels
baseline, teacher top-1 as a line), per-class accuracy of teacher and student, per-class
agreement and KL, calibration (reliability diagrams and ECE), the student's confusion matrix and
the validation images where student and teacher disagree most. The per-class numbers are the
exported student's (the weights the export chose) on the whole validation set, run on CPU; the
teacher's are the soft labels stored in the validation shards.

Every run writes its report at the end (``report.enabled``, ``distill.finish.finish_run``); a
failed report is a warning, never a lost run. With ``logger=wandb`` the figures and a per-class
table also go to W&B, as a run of their own (``<run name>-report``, job type ``report``, files
under ``<run dir>/report/wandb``).
"""

from __future__ import annotations

import argparse
import base64
import html
import logging
import sys
import time
from pathlib import Path

import numpy as np

from common.atomic import write_text
from data.shards import ManifestError
from distill.config import ReportConfig, WandbConfig, section
from distill.report_data import (
    NotARunError,
    calibration,
    confusion,
    load_results,
    per_class,
    predict,
    read_curves,
    run_config,
    val_set_dir,
)

log = logging.getLogger(__name__)

FIGURES = {
    "curves": (
        "Validation curves",
        "Top-1 on the validation set as training went: the distilled student, its EMA and the "
        "from-labels baseline trained on the same steps; the dotted line is the teacher. Right: "
        "how often the student's top-1 equals the teacher's.",
    ),
    "per_class_accuracy": (
        "Accuracy per class",
        "Teacher and student top-1 on each true class: where the student falls short of its "
        "teacher.",
    ),
    "per_class_agreement": (
        "Agreement and KL per class",
        "Bars: share of each class's images on which the student's top-1 equals the teacher's. "
        "Line: mean KL(teacher ‖ student), how far the student's distribution is from the "
        "teacher's.",
    ),
    "calibration": (
        "Calibration",
        "Reliability diagrams: accuracy per bin of top-1 confidence (numbers: images per bin). "
        "Bars under the diagonal are over-confident. ECE: the image-weighted mean gap.",
    ),
    "confusion": (
        "Student confusion matrix",
        "Rows: the true class; columns: the student's prediction; shading: share of the row.",
    ),
    "disagreements": (
        "Where student and teacher disagree most",
        "The validation images with the highest KL(teacher ‖ student), each captioned with both "
        "predictions (probability in brackets) and the true class; red: different top-1.",
    ),
}


def write_report(
    run_dir: str | Path,
    max_samples: int | None = None,
    wandb: WandbConfig | None = None,
    run_name: str | None = None,
) -> Path:
    """Render the report of a finished run; returns the path of ``report.html``.

    ``max_samples``: validation images to use (None: all); with ``wandb`` the figures also go to
    W&B, as ``<run_name>-report`` (``run_name`` None: ``<student>-<mode>``). ``NotARunError``
    when the directory is not a run.
    """
    from distill import report_plots as plots

    run_dir = Path(run_dir).resolve()
    results = load_results(run_dir)
    start = time.perf_counter()
    # results.json names the resolved set; the saved config may depend on the environment
    # (paths.cache from DISTILL_CACHE) the run had, not the one the report is rendered in
    val_dir = results.get("val_set_dir") or val_set_dir(run_config(run_dir))
    p = predict(results, val_dir, max_samples=max_samples)
    stats = per_class(p)
    cal_s = calibration(p.student, p.labels)
    cal_t = calibration(p.teacher, p.labels) if p.teacher is not None else None
    figures = {
        "curves": plots.curves(
            read_curves(run_dir / "csv" / "metrics.csv"),
            read_curves(run_dir / "baseline" / "csv" / "metrics.csv"),
            results.get("teacher_top1"),
        ),
        "per_class_accuracy": plots.per_class_accuracy(p.classes, stats),
        "calibration": plots.reliability(cal_t, cal_s),
        "confusion": plots.confusion_matrix(p.classes, confusion(p)),
    }
    if p.teacher is not None:
        figures["per_class_agreement"] = plots.per_class_agreement(p.classes, stats)
        figures["disagreements"] = plots.disagreement_grid(
            p.worst, p.classes, p.labels, p.student, p.teacher
        )
    fig_dir = run_dir / "report"
    fig_dir.mkdir(exist_ok=True)
    paths = {}
    for name in FIGURES:  # page order
        if name in figures:
            paths[name] = fig_dir / f"{name}.png"
            plots.save(figures[name], paths[name])
    headline = _headline(results, p, cal_t, cal_s)
    page = _html(results, headline, paths, p, stats, time.perf_counter() - start)
    out = run_dir / "report.html"
    write_text(out, page)
    if wandb is not None:
        run_name = run_name or f"{results.get('student')}-{results.get('mode')}"
        _to_wandb(wandb, run_name, run_dir, results, headline, paths, p, stats)
    return out


def report_run(
    out: Path, report: ReportConfig, wandb: WandbConfig | None, run_name: str
) -> Path | None:
    """The end-of-run hook: the report of ``out`` (to W&B too when ``wandb`` is enabled), or
    None with a warning if it failed."""
    try:
        to_wandb = wandb if wandb is not None and wandb.enabled else None
        return write_report(out, report.max_samples, to_wandb, run_name)
    except Exception as e:  # the run's results are written; the report must not take them down
        log.warning("report not written (%s: %s); results.json is complete", type(e).__name__, e)
        return None


# -- the page ---------------------------------------------------------------------------------
def _pct(v) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.1f}%"


def _headline(results: dict, p, cal_t: dict | None, cal_s: dict) -> list[tuple[str, str]]:
    m = results.get("student_metrics", {})
    b = (results.get("baseline_metrics") or {}).get("val/top1")
    known = p.labels >= 0
    top1 = float((p.student.argmax(1)[known] == p.labels[known]).mean()) if known.any() else None
    rows = [
        ("teacher top-1", _pct(results.get("teacher_top1"))),
        ("student top-1 (distilled)", _pct(m.get("val/top1"))),
        ("student EMA top-1", _pct(m.get("val/ema_top1"))),
    ]
    if b is not None:
        rows.append(("from-labels baseline top-1", _pct(b)))
        if m.get("val/top1") is not None:
            rows.append(("distillation gain", f"{100 * (m['val/top1'] - b):+.1f} points"))
    rows.append((f"exported student ({p.weights}) top-1, this page", _pct(top1)))
    if p.teacher is not None:
        agree = float((p.student.argmax(1) == p.teacher.argmax(1)).mean())
        rows += [
            ("student-teacher agreement, this page", _pct(agree)),
            ("mean KL(teacher ‖ student)", f"{float(p.kl.mean()):.3f}"),
            ("ECE teacher / student", f"{_pct(cal_t['ece'])} / {_pct(cal_s['ece'])}"),
        ]
    else:
        rows.append(("ECE student", _pct(cal_s["ece"])))
    return rows


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.1em}.sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.6em 0}td,th{padding:.25em .8em;border-bottom:1px solid #ddd;
text-align:right}td:first-child,th:first-child{text-align:left}
.headline td:last-child{font-weight:600}
section{margin:2.2em 0}p.cap{color:#444;max-width:60em}img{max-width:100%;height:auto;
border:1px solid #eee}
details{margin:.5em 0}
"""


def _html(results: dict, headline, paths: dict, p, stats: dict, seconds: float) -> str:
    e = html.escape
    title = f"{results.get('student', '?')} distilled from {results.get('teacher', '?')}"
    share = (results.get("teacher_cost") or {}).get("teacher_forward_share")
    taught = "" if share is None else f" · teacher forwards on {100 * share:.0f}% of samples"
    sub = (
        f"mode {e(str(results.get('mode')))}{taught} · {results.get('global_step', '?')} steps · "
        f"{len(p.labels)} validation images · report in {seconds:.0f} s · "
        f"{e(results.get('output_dir', ''))}"
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(title)}</h1><p class='sub'>{sub}</p>",
        "<table class='headline'>",
        *(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in headline),
        "</table>",
        "<p class='cap'>Top-1 figures without “this page” are the run's last validation "
        "(results.json); the rest are the exported student "
        f"(<code>{e(Path(p.source).name)}</code>) on the whole validation set.</p>",
    ]
    for name, path in paths.items():
        heading, caption = FIGURES[name]
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts += [
            f"<section id='{name}'><h2>{e(heading)}</h2><p class='cap'>{e(caption)}</p>",
            f"<img alt='{e(heading)}' src='data:image/png;base64,{data}'>",
        ]
        if name == "per_class_accuracy":
            parts.append(_class_table(p.classes, stats))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


TABLE_COLUMNS = ["class", "images", "teacher top-1", "student top-1", "agreement", "mean KL"]


def _class_rows(classes: list[str], stats: dict) -> list[list]:
    rows = []
    for i, name in enumerate(classes):
        kl = stats["kl"][i]
        rows.append(
            [
                name,
                int(stats["samples"][i]),
                *(_pct(stats[k][i]) for k in ("teacher_acc", "student_acc", "agreement")),
                "–" if np.isnan(kl) else f"{kl:.3f}",
            ]
        )
    return rows


def _class_table(classes: list[str], stats: dict) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in TABLE_COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>"
        for row in _class_rows(classes, stats)
    )
    return (
        f"<details{' open' if len(classes) <= 20 else ''}><summary>the numbers per class"
        f"</summary><table>\n<tr>{head}</tr>{body}</table></details>"
    )


# -- W&B --------------------------------------------------------------------------------------
def _to_wandb(
    wcfg: WandbConfig, run_name: str, run_dir: Path, results: dict, headline, paths: dict, p, stats
) -> None:
    """The figures and the per-class table as a W&B run of their own (never fails the report)."""
    from distill.wandb import resolve_mode

    mode = resolve_mode(wcfg)
    if mode == "disabled":
        return
    try:
        import wandb

        name = (wcfg.name or run_name) + "-report"  # the distillation run's, + -report
        (run_dir / "report").mkdir(exist_ok=True)
        run = wandb.init(
            project=wcfg.project,
            entity=wcfg.entity,
            name=name,
            job_type="report",
            tags=list(wcfg.tags),
            dir=str(run_dir / "report"),
            mode=mode,
            config={"run_dir": str(run_dir), "student": results.get("student")},
            reinit="finish_previous",
            settings=wandb.Settings(init_timeout=float(wcfg.init_timeout), silent=True),
        )
        images = {
            f"report/{k}": wandb.Image(str(v), caption=FIGURES[k][0]) for k, v in paths.items()
        }
        table = wandb.Table(columns=TABLE_COLUMNS, data=_class_rows(p.classes, stats))
        run.log({**images, "report/per_class": table})
        for key, value in headline:
            run.summary[key] = value
        run.finish()
    except Exception as e:
        log.warning("report not sent to W&B (%s: %s); report.html is written", type(e).__name__, e)


# -- command line -----------------------------------------------------------------------------
def _saved_settings(
    run_dir: Path, max_samples: int | None, to_wandb: bool
) -> tuple[int | None, WandbConfig | None]:
    """The report settings of a finished run, from its saved config: ``max_samples`` (the
    command line's, else the run's) and, with ``to_wandb``, the run's W&B section."""
    saved = run_config(run_dir)
    if max_samples is None:
        max_samples = saved["report"]["max_samples"]
    if not to_wandb:
        return max_samples, None
    if not saved["logger"].get("wandb"):
        print("warning: the run has no logger.wandb section: nothing sent to W&B", file=sys.stderr)
        return max_samples, None
    return max_samples, section(WandbConfig, saved["logger"]["wandb"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m distill.report",
        description="Write <run dir>/report.html (and its figures under <run dir>/report/).",
    )
    parser.add_argument("run_dir", type=Path, help="a run directory (it holds results.json)")
    parser.add_argument(
        "--max-samples", type=int, default=None, help="validation images to use (default: all)"
    )
    parser.add_argument(
        "--wandb", action="store_true", help="also send the figures to W&B (logger=wandb runs)"
    )
    args = parser.parse_args(argv)
    try:
        load_results(args.run_dir)  # not a run: say that first
        max_samples, wandb = _saved_settings(args.run_dir, args.max_samples, args.wandb)
        path = write_report(args.run_dir, max_samples, wandb)
    except (NotARunError, ManifestError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    sys.exit(main())
