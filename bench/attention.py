"""Mobile MQA on this machine: the paper's Table 2 ablation and block timings against timm.

1. Table 2 of arXiv 2404.10518: a hybrid model with its MQA blocks, with standard MHSA blocks in
   their place, and with the attention blocks removed. The paper's headline figure is the
   reduction of the attention's *added* cost: 1 - (t_MQA - t_none) / (t_MHSA - t_none) (39% on
   P8 EdgeTPU).
2. Our Mobile MQA block against timm's ``MobileAttention`` + ``MultiQueryAttention2d`` at the four
   hybrid stage shapes (timm's ``mobilenetv4_hybrid_*`` defs), batch 1 and 32, with our MHSA
   block alongside.
"""

from __future__ import annotations

import torch
from timm.models._efficientnet_blocks import MobileAttention

import students
from bench.common import interleaved_medians, quick, table, write_result
from students.attention import AttentionBlock, MultiHeadAttention, MultiQueryAttention
from students.profiling import count_params

# (label, C, H=W at native resolution, heads, d, kv_stride), as in timm's mobilenetv3.py.
STAGES = [
    ("Hybrid-M stage 2 (MQA-a)", 160, 16, 4, 64, 2),
    ("Hybrid-M stage 3 (MQA-b)", 256, 8, 4, 64, 1),
    ("Hybrid-L stage 2 (MQA-c)", 192, 24, 8, 48, 2),
    ("Hybrid-L stage 3 (MQA-d)", 512, 12, 8, 64, 1),
]


def _no_grad(model: torch.nn.Module, x: torch.Tensor):
    def run() -> None:
        with torch.no_grad():
            model(x)

    return run


def table2(repeats: int) -> list[dict]:
    rows = []
    for name in ("mnv4_hybrid_m", "mnv4_hybrid_l"):
        res = students.SPECS[name].resolution
        models = {
            kind: students.create_model(name, attention=kind).eval()
            for kind in ("mqa", "mhsa", "none")
        }
        for batch in (1, 8):
            x = torch.randn(batch, 3, res, res)
            t = interleaved_medians({k: _no_grad(m, x) for k, m in models.items()}, repeats)
            added_mqa, added_mhsa = t["mqa"] - t["none"], t["mhsa"] - t["none"]
            rows.append(
                {
                    "model": name,
                    "resolution": res,
                    "batch": batch,
                    "ms": {k: round(v * 1e3, 2) for k, v in t.items()},
                    "params": {k: count_params(m) for k, m in models.items()},
                    "added_cost_reduction": round(1 - added_mqa / added_mhsa, 3),
                    "mqa_vs_mhsa_speedup": round(t["mhsa"] / t["mqa"], 3),
                }
            )
            print(f"Table 2 {name} b{batch}: {rows[-1]['ms']}", flush=True)
    return rows


def _blocks(c: int, heads: int, d: int, kv: int) -> dict[str, tuple[torch.nn.Module, bool]]:
    """Name -> (block, channels_last input)."""
    torch.manual_seed(0)
    ours = AttentionBlock(MultiQueryAttention(c, heads, d, d, kv), c, layer_scale=1e-5)
    mhsa = AttentionBlock(MultiHeadAttention(c, heads, d), c, layer_scale=1e-5)
    theirs = MobileAttention(
        c, c, num_heads=heads, key_dim=d, value_dim=d, use_multi_query=True, kv_stride=kv
    )
    theirs.load_state_dict(ours.state_dict())
    cl = torch.channels_last
    return {
        "ours_mqa": (ours.eval().to(memory_format=cl), True),
        "timm_mqa": (theirs.eval(), False),
        "ours_mhsa": (mhsa.eval().to(memory_format=cl), True),
    }


def blocks(repeats: int) -> list[dict]:
    rows = []
    for label, c, hw, heads, d, kv in STAGES:
        candidates = _blocks(c, heads, d, kv)
        for batch in (1, 32):
            x = torch.randn(batch, c, hw, hw)
            xcl = x.contiguous(memory_format=torch.channels_last)
            fns = {k: _no_grad(m, xcl if cl else x) for k, (m, cl) in candidates.items()}
            t = interleaved_medians(fns, repeats * (5 if batch == 1 else 1), warmup=2)
            ms = {k: round(v * 1e3, 3) for k, v in t.items()}
            rows.append(
                {
                    "stage": label,
                    "shape": f"{c}x{hw}x{hw}",
                    "heads": heads,
                    "dim": d,
                    "kv_stride": kv,
                    "batch": batch,
                    "ms": ms,
                    "speedup_vs_timm": round(t["timm_mqa"] / t["ours_mqa"], 3),
                    "speedup_vs_mhsa": round(t["ours_mhsa"] / t["ours_mqa"], 3),
                }
            )
            print(f"{label} b{batch}: {ms}", flush=True)
    return rows


def main() -> None:
    repeats = 3 if quick() else 7
    t2, blk = table2(repeats), blocks(repeats)
    md = "### Mobile MQA: the paper's Table 2 on this machine (eval, ms per batch)\n\n"
    md += table(
        [
            "model",
            "batch",
            "no attention",
            "+MHSA",
            "+MQA",
            "reduction of added cost",
            "MQA vs MHSA model",
        ],
        [
            [
                f"{r['model']} @{r['resolution']}",
                r["batch"],
                r["ms"]["none"],
                r["ms"]["mhsa"],
                r["ms"]["mqa"],
                f"{r['added_cost_reduction']:.0%}",
                f"x{r['mqa_vs_mhsa_speedup']}",
            ]
            for r in t2
        ],
    )
    md += "\nPaper (P8 EdgeTPU): 39% reduction of the added attention latency.\n\n"
    md += "### Mobile MQA block vs timm `MultiQueryAttention2d` block (eval, ms)\n\n"
    md += table(
        ["stage", "shape", "batch", "ours MQA", "timm MQA", "ours MHSA", "vs timm", "vs MHSA"],
        [
            [
                r["stage"],
                r["shape"],
                r["batch"],
                r["ms"]["ours_mqa"],
                r["ms"]["timm_mqa"],
                r["ms"]["ours_mhsa"],
                f"x{r['speedup_vs_timm']}",
                f"x{r['speedup_vs_mhsa']}",
            ]
            for r in blk
        ],
    )
    write_result("attention", {"repeats": repeats, "table2": t2, "blocks": blk}, md)


if __name__ == "__main__":
    main()
