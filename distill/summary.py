"""What a finished run reports: teacher top-1, which teacher labelled the data, skips, the table.

Everything here reads what the run and its shard sets recorded; none of it may take a finished
run down (a damaged validation shard makes the teacher's top-1 partial, not the run a failure).
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

MAX_REASONS = 20


def teacher_top1(root: str | Path, val_set: str) -> dict:
    """Teacher top-1 on the validation set from its stored labels (no extra teacher pass).

    Returns ``top1`` (None when the set has no labels or no readable sample), ``samples`` and
    ``skipped`` (shard, reason) for shards that could not be read to the end.
    """
    from data import urls
    from data.labels import decode_soft_label
    from data.shards import read_manifest
    from data.stream import shard_samples

    m = read_manifest(urls.join(root, val_set))
    result: dict = {"top1": None, "samples": 0, "skipped": []}
    if not m.data.get("labels"):
        return result
    right = total = 0
    for url in m.urls():
        try:
            for p in shard_samples(url):
                if "__bad__" in p:  # a damaged shard: count what was read, name the shard
                    result["skipped"].append((str(url), p["__bad__"][1]))
                    log.warning(
                        "teacher top-1: could not read all of %s (%s)", url, p["__bad__"][1]
                    )
                elif "cls" in p and "soft.npy" in p:
                    pred = int(decode_soft_label(p["soft.npy"], m.num_classes).argmax())
                    right += pred == int(p["cls"])
                    total += 1
        except Exception as e:  # a server gone, a bad label: count what was read, name the shard
            result["skipped"].append((str(url), f"{type(e).__name__}: {str(e)[:200]}"))
            log.warning("teacher top-1: could not read all of %s (%s)", url, e)
    result["samples"] = total
    result["top1"] = right / total if total else None
    return result


def data_teachers(root: str | Path, sets: list[str]) -> dict[str, str | None]:
    """Which teacher labelled each shard set, as its manifest records it."""
    from data import urls
    from data.shards import read_manifest

    out = {}
    for name in sets:
        try:
            out[name] = read_manifest(urls.join(root, name)).data.get("teacher")
        except Exception as e:
            log.warning("cannot read the manifest of %s: %s", name, e)
            out[name] = None
    return out


def stored_teacher(root: str | Path, name: str) -> dict:
    """The teacher that labelled shard set ``name``: ``spec`` and, where the manifest records it
    (recipe sets), ``checkpoint``."""
    from data import urls
    from data.shards import read_manifest

    data = read_manifest(urls.join(root, name)).data
    recorded = (data.get("recipe") or {}).get("teacher") or {}
    return {"spec": data.get("teacher"), "checkpoint": recorded.get("checkpoint")}


def _same_file(a: str, b: str) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def teacher_mismatch(live: dict, root: str | Path, stored_sets: list[str]) -> dict[str, dict]:
    """Stored sets labelled by another teacher than ``live`` (``spec``, ``checkpoint``): another
    spec, or another checkpoint file where both are known."""
    out = {}
    for name in stored_sets:
        try:
            other = stored_teacher(root, name)
        except Exception as e:
            log.warning("cannot read the manifest of %s: %s", name, e)
            continue
        differs = other["spec"] != live["spec"]
        if other["checkpoint"] and live.get("checkpoint"):
            differs = differs or not _same_file(other["checkpoint"], live["checkpoint"])
        if differs:
            out[name] = other
    return out


def describe_teacher(t: dict) -> str:
    return t["spec"] + (f" ({t['checkpoint']})" if t.get("checkpoint") else "")


def teacher_label(mode: str, config_spec: str, labelled_by: dict[str, str | None]) -> str:
    """The teacher the summary names: the one in the loop (online) or the manifests' (offline);
    hybrid: both when they differ."""
    if mode == "online":
        return config_spec
    if mode == "hybrid":
        stored = sorted({s for s in labelled_by.values() if s and s != config_spec})
        return config_spec + (f" (stored labels: {', '.join(stored)})" if stored else "")
    specs = sorted({s for s in labelled_by.values() if s})
    if not specs:
        return "none (labels mode)" if mode == "labels" else config_spec
    if specs != [config_spec]:
        log.warning(
            "the shards were labelled by %s, not by teacher.spec=%s: the summary names the "
            "manifests' teacher",
            ", ".join(specs),
            config_spec,
        )
    return ", ".join(specs)


def build_skips(root: str | Path, sets: list[str]) -> dict:
    """Inputs skipped while building each set (count and first reasons), from the manifests."""
    from data import urls
    from data.shards import read_manifest

    out = {}
    for name in sets:
        try:
            data = read_manifest(urls.join(root, name)).data
        except Exception:
            continue
        count = int(data.get("skipped", 0) or 0)
        if count:
            out[name] = {"count": count, "first": list(data.get("skipped_examples", []))}
    return out


def format_summary(s: dict) -> str:
    """The table printed at the end of a run."""
    m, b = s["student_metrics"], s.get("baseline_metrics")

    def pct(v) -> str:
        return "    -" if v is None else f"{100 * v:5.1f}"

    lines = [
        "",
        f"== distillation summary: {s['student']} ({s['mode']}), teacher {s['teacher']}",
        f"  teacher top-1                      {pct(s.get('teacher_top1'))}%",
        f"  student top-1 (distilled)          {pct(m.get('val/top1'))}%",
        f"  student EMA top-1                  {pct(m.get('val/ema_top1'))}%",
    ]
    if b:
        gain = m.get("val/top1", 0) - b.get("val/top1", 0)
        lines += [
            f"  student top-1 from labels (baseline, same steps) {pct(b.get('val/top1'))}%",
            f"  distillation gain                  {100 * gain:+5.1f} points",
        ]
    cost = s.get("teacher_cost") or {}
    if cost.get("teacher_forward_share") is not None:
        time_share = cost.get("teacher_time_share")
        lines.append(
            f"  teacher forwards                   {pct(cost['teacher_forward_share'])}% of "
            f"samples, {pct(time_share)}% of step time"
        )
    lines += [
        f"  student-teacher agreement          {pct(m.get('val/agree_top1'))}%",
        f"  wall time                          {s.get('total_wall_s', s['distill_wall_s']):.0f} s",
    ]
    skipped = s.get("skipped", {})
    train = skipped.get("training", {})
    built = skipped.get("build", {})
    if train.get("count") or built or skipped.get("teacher_top1"):
        n_build = sum(v["count"] for v in built.values())
        lines.append(
            f"  skipped inputs                     {train.get('count', 0)} in training, "
            f"{n_build} while building, {len(skipped.get('teacher_top1', []))} val shards"
        )
        for ref, reason in [*train.get("first", []), *skipped.get("teacher_top1", [])][:3]:
            lines.append(f"    {ref}: {reason}")
        lines.append("    (all reasons: results.json, 'skipped')")
    exported = s.get("exports", {})
    if exported:
        which = exported.get("exported")
        lines.append(
            f"  exported                           {exported.get('onnx') or exported.get('safetensors')}"
            + (f" ({which} weights)" if which else "")
        )
    lines += [
        f"  checkpoint                         {s['best_checkpoint']}",
        f"  logs and results                   {s['output_dir']}",
    ]
    return "\n".join(lines)
