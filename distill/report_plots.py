"""The report's figures (matplotlib, Agg backend): each function returns a ``Figure``.

Inputs are plain arrays (``distill.report_data``); nothing here reads files. Many-class datasets
stay legible: per-class bars show the ``MAX_BARS`` classes with the largest teacher-student gap,
and the confusion matrix drops its cell numbers past 20 classes.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

MAX_BARS = 30
TEACHER, STUDENT, EMA, BASELINE = "#4c72b0", "#dd8452", "#c44e52", "#8c8c8c"


def curves(student: dict, baseline: dict, teacher_top1: float | None) -> Figure:
    """Validation top-1 over steps (student, EMA, baseline, teacher as a line) and agreement."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for series, key, label, color, style in (
        (student, "val/top1", "student (distilled)", STUDENT, "-"),
        (student, "val/ema_top1", "student EMA", EMA, "--"),
        (baseline, "val/top1", "from labels (baseline)", BASELINE, "-"),
    ):
        if key in series:
            steps, values = series[key]
            ax.plot(steps, 100 * values, style, marker="o", ms=3, color=color, label=label)
    if teacher_top1 is not None:
        ax.axhline(100 * teacher_top1, color=TEACHER, ls=":", lw=2, label="teacher")
    ax.set(xlabel="step", ylabel="top-1 (%)", title="Validation top-1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    for series, label, color in ((student, "student", STUDENT), (baseline, "baseline", BASELINE)):
        if "val/agree_top1" in series:
            steps, values = series["val/agree_top1"]
            ax2.plot(steps, 100 * values, marker="o", ms=3, color=color, label=label)
    ax2.set(xlabel="step", ylabel="agreement (%)", title="Top-1 agreement with the teacher")
    ax2.grid(alpha=0.3)
    if ax2.lines:
        ax2.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def _shown(classes: list[str], gap: np.ndarray) -> tuple[np.ndarray, str]:
    """Indices of the classes to draw bars for, and a note when not all of them are drawn."""
    idx = np.arange(len(classes))
    if len(classes) <= MAX_BARS:
        return idx, ""
    order = np.argsort(-np.nan_to_num(gap, nan=-np.inf))[:MAX_BARS]
    return np.sort(order), f" ({MAX_BARS} of {len(classes)} classes: the largest gaps)"


def per_class_accuracy(classes: list[str], stats: dict) -> Figure:
    """Teacher and student top-1 per class, side by side."""
    idx, note = _shown(classes, stats["teacher_acc"] - stats["student_acc"])
    x = np.arange(len(idx))
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(idx) + 2), 4))
    w = 0.4
    ax.bar(
        x - w / 2, 100 * np.nan_to_num(stats["teacher_acc"][idx]), w, label="teacher", color=TEACHER
    )
    ax.bar(
        x + w / 2, 100 * np.nan_to_num(stats["student_acc"][idx]), w, label="student", color=STUDENT
    )
    ax.set_xticks(x, [classes[i] for i in idx], rotation=90 if len(idx) > 12 else 0, fontsize=8)
    ax.set(ylabel="top-1 (%)", ylim=(0, 105), title="Accuracy per class" + note)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def per_class_agreement(classes: list[str], stats: dict) -> Figure:
    """Agreement (bars) and mean KL(teacher || student) (line) per true class."""
    idx, note = _shown(classes, 1 - stats["agreement"])
    x = np.arange(len(idx))
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(idx) + 2), 4))
    ax.bar(x, 100 * np.nan_to_num(stats["agreement"][idx]), 0.6, color=STUDENT, label="agreement")
    ax.set_xticks(x, [classes[i] for i in idx], rotation=90 if len(idx) > 12 else 0, fontsize=8)
    ax.set(ylabel="student = teacher top-1 (%)", ylim=(0, 105))
    ax.set_title("Agreement and KL per class" + note)
    ax2 = ax.twinx()
    ax2.plot(x, np.nan_to_num(stats["kl"][idx]), "o-", color=TEACHER, label="mean KL")
    ax2.set_ylabel("mean KL(teacher || student)")
    ax2.set_ylim(bottom=0)
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def reliability(teacher: dict | None, student: dict) -> Figure:
    """Reliability diagrams (accuracy per confidence bin) with ECE, teacher and student."""
    panels = [(student, "student", STUDENT)]
    if teacher is not None:
        panels.insert(0, (teacher, "teacher", TEACHER))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.2), squeeze=False)
    for ax, (cal, name, color) in zip(axes[0], panels, strict=True):
        edges = cal["edges"]
        centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
        acc = np.nan_to_num(cal["accuracy"])
        ax.bar(centres, acc, width * 0.95, color=color, alpha=0.85, label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        for c, a, n in zip(centres, acc, cal["count"], strict=True):
            if n:
                ax.text(c, a + 0.01, f"{int(n)}", ha="center", fontsize=6, color="#444")
        ax.set(xlim=(0, 1), ylim=(0, 1.08), xlabel="confidence (top-1 probability)")
        ax.set(ylabel="accuracy", title=f"{name}: ECE {100 * cal['ece']:.1f}%")
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def confusion_matrix(classes: list[str], counts: np.ndarray) -> Figure:
    """The student's confusion matrix, rows normalised (each true class sums to 1)."""
    n = len(classes)
    rows = counts.sum(1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros(counts.shape, float), where=rows > 0)
    size = min(12, max(5, 0.5 * n + 2))
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if n <= 40:
        ax.set_xticks(range(n), classes, rotation=90 if n > 12 else 0, fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    colour = "white" if norm[i, j] > 0.5 else "black"
                    ax.text(
                        j, i, str(counts[i, j]), ha="center", va="center", fontsize=7, color=colour
                    )
    ax.set(xlabel="student prediction", ylabel="true class", title="Student confusion matrix")
    fig.tight_layout()
    return fig


def disagreement_grid(
    worst: list[tuple[float, int, np.ndarray]],
    classes: list[str],
    labels: np.ndarray,
    student: np.ndarray,
    teacher: np.ndarray,
    cols: int = 4,
) -> Figure:
    """The validation images with the highest KL(teacher || student), each captioned with both
    predictions (class and probability) and the true class; a red caption: they disagree."""
    rows = max(1, -(-len(worst) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (kl, i, image) in zip(axes.flat, worst, strict=False):
        t, s = int(teacher[i].argmax()), int(student[i].argmax())
        ax.imshow(image, interpolation="nearest" if image.shape[0] < 96 else "antialiased")
        truth = classes[labels[i]] if labels[i] >= 0 else "?"
        ax.set_title(
            f"teacher: {classes[t]} ({teacher[i, t]:.2f})\n"
            f"student: {classes[s]} ({student[i, s]:.2f})\ntrue {truth} · KL {kl:.2f}",
            fontsize=8,
            color="#b00020" if t != s else "black",
        )
    fig.tight_layout()
    return fig


def save(fig: Figure, path) -> None:
    fig.savefig(path, dpi=110)
    plt.close(fig)
