"""Students vs timm: params, MACs, eval images/s, batch-1 latency, training-step images/s.

Each MNv4 model at its native resolution, ours (default: channels_last, fused attention kernel)
against timm's same model in its default NCHW layout and in channels_last, alternated in one
process. Ratio = ours / timm (higher is better for ours).
"""

from __future__ import annotations

import timm
import torch

import students
from bench.common import interleaved_medians, quick, table, write_result
from students.profiling import count_macs, count_params

LARGE = {"mnv4_conv_l", "mnv4_hybrid_l"}


def _eval_fn(model: torch.nn.Module, x: torch.Tensor):
    def run() -> None:
        with torch.no_grad():
            model(x)

    return run


def _train_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    return run


def _candidates(name: str, train: bool) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    ours = students.create_model(name)
    theirs = timm.create_model(students.TIMM_NAMES[name])
    theirs_cl = timm.create_model(students.TIMM_NAMES[name]).to(memory_format=torch.channels_last)
    models = {"ours": ours, "timm": theirs, "timm_cl": theirs_cl}
    for m in models.values():
        m.train(train)
    return models


def candidate_input(key: str, x: torch.Tensor) -> torch.Tensor:
    """The input as a candidate takes it: timm_cl gets channels_last, the others as given."""
    return x.contiguous(memory_format=torch.channels_last) if key == "timm_cl" else x


def bench_model(name: str, repeats: int) -> dict:
    res = students.SPECS[name].resolution
    eval_batch, train_batch = (8, 4) if name in LARGE else (32, 16)
    out: dict = {"model": name, "resolution": res, "eval_batch": eval_batch}
    out["train_batch"] = train_batch

    models = _candidates(name, train=False)
    out["params"] = count_params(models["ours"])
    out["timm_params"] = count_params(models["timm"])
    out["gmacs"] = round(count_macs(models["ours"], res) / 1e9, 3)

    x = torch.randn(eval_batch, 3, res, res)
    t = interleaved_medians(
        {k: _eval_fn(m, candidate_input(k, x)) for k, m in models.items()}, repeats
    )
    out["eval_img_s"] = {k: round(eval_batch / v, 2) for k, v in t.items()}

    x1 = torch.randn(1, 3, res, res)
    t = interleaved_medians(
        {k: _eval_fn(m, candidate_input(k, x1)) for k, m in models.items()}, repeats * 3
    )
    out["latency_ms"] = {k: round(v * 1e3, 2) for k, v in t.items()}

    models = _candidates(name, train=True)
    x = torch.randn(train_batch, 3, res, res)
    y = torch.randint(0, 1000, (train_batch,))
    fns = {k: _train_fn(m, candidate_input(k, x), y) for k, m in models.items()}
    t = interleaved_medians(fns, repeats)
    out["train_img_s"] = {k: round(train_batch / v, 2) for k, v in t.items()}

    out["ratio_eval"] = round(out["eval_img_s"]["ours"] / out["eval_img_s"]["timm"], 3)
    out["ratio_latency"] = round(out["latency_ms"]["timm"] / out["latency_ms"]["ours"], 3)
    out["ratio_train"] = round(out["train_img_s"]["ours"] / out["train_img_s"]["timm"], 3)
    out["ratio_eval_vs_timm_cl"] = round(
        out["eval_img_s"]["ours"] / out["eval_img_s"]["timm_cl"], 3
    )
    out["ratio_train_vs_timm_cl"] = round(
        out["train_img_s"]["ours"] / out["train_img_s"]["timm_cl"], 3
    )
    return out


def main() -> None:
    repeats = 2 if quick() else 7
    rows = []
    for name in students.list_models():
        r = bench_model(name, repeats)
        rows.append(r)
        print(
            f"{name}: eval x{r['ratio_eval']} latency x{r['ratio_latency']} "
            f"train x{r['ratio_train']} (vs timm channels_last: eval "
            f"x{r['ratio_eval_vs_timm_cl']}, train x{r['ratio_train_vs_timm_cl']})",
            flush=True,
        )
    md = "### Students vs timm (ratio = ours / timm, medians of interleaved repeats)\n\n"
    md += table(
        [
            "model @ res",
            "params",
            "GMACs",
            "eval img/s ours / timm (ratio)",
            "batch-1 ms ours / timm (ratio)",
            "train img/s ours / timm (ratio)",
            "ratio vs timm channels_last (eval / train)",
        ],
        [
            [
                f"{r['model']} @{r['resolution']}",
                f"{r['params']:,}",
                r["gmacs"],
                f"{r['eval_img_s']['ours']} / {r['eval_img_s']['timm']} (x{r['ratio_eval']})",
                f"{r['latency_ms']['ours']} / {r['latency_ms']['timm']} (x{r['ratio_latency']})",
                f"{r['train_img_s']['ours']} / {r['train_img_s']['timm']} (x{r['ratio_train']})",
                f"x{r['ratio_eval_vs_timm_cl']} / x{r['ratio_train_vs_timm_cl']}",
            ]
            for r in rows
        ],
    )
    md += (
        "\nEval batch 32 (8 for the L models), training step (forward, backward, AdamW) batch 16 "
        f"(4 for L); {repeats} interleaved repeats, batch-1 latency {repeats * 3}.\n"
    )
    write_result("students", {"repeats": repeats, "models": rows}, md)


if __name__ == "__main__":
    main()
