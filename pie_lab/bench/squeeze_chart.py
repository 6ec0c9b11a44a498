"""One story for "how much does Pie win": pie / vllm-swap throughput against the squeeze
(`bench/squeeze.py`), one curve per machine from the sim, with the paper's operating point and the
figures the workbench printed in different places (issue 25) placed on it.

    from pie_lab.bench.squeeze_chart import squeeze_curve, squeeze_chart
    squeeze_chart(squeeze_curve())          # notebook 04; benchmarks/squeeze_chart.py writes docs/squeeze.png
"""
from __future__ import annotations

from dataclasses import dataclass

from ..model_spec import named_spec
from .harness import run_benchmark
from .squeeze import Squeeze, cost_model_step, workload_squeeze

MODEL = "opt-30b"
PRESETS = {"GH200": "GH200 (NVLink-C2C, 346 GB/s)", "H200": "H200 (PCIe gen5, 55 GB/s)"}
# (GPU KV blocks, req/s): the memory-bound scenarios' load (ShareGPT-like, 20 req/s, at most 128 in
# flight) on a shrinking GPU pool, and two lighter loads on the largest pool for the left end
POINTS = ((1400, 5.0), (1400, 10.0), (1400, 20.0), (800, 20.0), (400, 20.0), (250, 20.0), (150, 20.0))
POLICIES = ["vllm-swap", {"policy": "pie", "controller": {"enabled": True}, "label": "pie"}]


@dataclass(frozen=True)
class Figure:
    """A pie / vllm-swap figure as a page printed it, and the setting it was measured in."""

    label: str
    ratio: float
    where: str
    model: str
    gpu_blocks: int
    max_num_seqs: int
    num_requests: int
    rate: float
    hardware: str = "GH200"

    def squeeze(self) -> Squeeze:
        from ..workloads import sharegpt_like
        work = sharegpt_like(self.num_requests, seed=0, rate=self.rate, vocab_size=named_spec(self.model).vocab_size,
                             max_model_len=2048)
        return workload_squeeze(work, gpu_blocks=self.gpu_blocks, block_size=16, max_num_seqs=self.max_num_seqs,
                                step_s=cost_model_step(self.model, self.hardware))


# the paper's set-up is the replication's: OPT-30B on the GH200's whole KV pool, ShareGPT beyond capacity
PAPER = Figure("paper's claim: 1.9x", 1.9, "Pie (Xu et al. 2024) on a GH200: its whole GPU, vLLM's defaults",
               "opt-30b", 1490, 256, 382, 9.544)
# as printed when issue 25 was filed (2026-12): each page's own setting, all OPT on a GH200, ShareGPT-like
FIGURES = (
    Figure("replication: 1.15x", 1.15, "docs/replication.md, best case: the paper's set-up at 1.6x capacity",
           "opt-30b", 1490, 256, 382, 9.544),
    Figure("scenarios: 1.50x", 1.50, "memory-bound-gh200: 400 GPU blocks, 20 req/s", "opt-30b", 400, 128, 200, 20.0),
    Figure("notebook 04 OPT-13B: 1.65x", 1.65, "notebook 04: 200 GPU blocks, 8 req/s, max_num_seqs 32",
           "opt-13b", 200, 32, 120, 8.0),
    Figure("notebook 04 OPT-30B: 1.98x", 1.98, "notebook 04: 200 GPU blocks, 8 req/s, max_num_seqs 32",
           "opt-30b", 200, 32, 120, 8.0),
    Figure("what-if explorer: 2.1-2.2x", 2.15, "notebook 06: 4 GiB of KV (195 blocks), 20 req/s, 32 requests",
           "opt-30b", 195, 128, 32, 20.0),
)


def squeeze_curve(presets=tuple(PRESETS), points=POINTS, num_requests: int = 200, model: str = MODEL,
                  max_num_seqs: int = 128):
    """pie (controller on) / vllm-swap generated tokens/s (whole run) in the sim at each
    (GPU blocks, rate) point, with the point's squeeze: one row per preset and point."""
    import pandas as pd
    from ..workloads import sharegpt_like
    rows = []
    for preset in presets:
        for blocks, rate in points:
            work = sharegpt_like(num_requests, seed=0, rate=rate, vocab_size=named_spec(model).vocab_size,
                                 max_model_len=2048)
            df = run_benchmark(model, "sim", POLICIES, work, dict(hardware=preset, dtype="float16", num_gpu_blocks=blocks,
                               num_host_blocks=4000, max_num_seqs=max_num_seqs), progress=False).df.set_index("policy")
            rows.append({"preset": preset, "machine": PRESETS.get(preset, preset), "gpu_blocks": blocks, "rate": rate,
                         "squeeze": float(df.loc["vllm-swap", "squeeze"]),
                         "vllm_swap_tok_s": float(df.loc["vllm-swap", "tokens_per_s"]),
                         "pie_tok_s": float(df.loc["pie", "tokens_per_s"]),
                         "ratio": float(df.loc["pie", "tokens_per_s"] / df.loc["vllm-swap", "tokens_per_s"])})
    return pd.DataFrame(rows)


def figure_marks(figures=FIGURES, paper: Figure = PAPER):
    """Each printed figure at its setting's squeeze (and the paper's claim at its set-up's)."""
    import pandas as pd
    return pd.DataFrame([{"label": f.label, "ratio": f.ratio, "squeeze": f.squeeze().value, "where": f.where,
                          "paper": f is paper} for f in (paper, *figures)])


def squeeze_chart(curve, marks=None, width: int = 560, height: int = 300):
    """Ratio against squeeze (log x): a line per machine, the figures as labelled points, the paper's
    set-up as a vertical rule, 1.0x (no gain) dashed."""
    import altair as alt
    import pandas as pd
    marks = figure_marks() if marks is None else marks
    lo = min(curve["squeeze"].min(), marks["squeeze"].min()) * 0.8
    hi = max(curve["squeeze"].max(), marks["squeeze"].max()) * 1.3
    x = alt.X("squeeze:Q", scale=alt.Scale(type="log", domain=[lo, hi], nice=False),
              title="squeeze: KV the offered load wants / KV the GPU holds (log)")
    y = alt.Y("ratio:Q", title="throughput, pie (controller) / vllm-swap", scale=alt.Scale(zero=False))
    line = alt.Chart(curve).mark_line(point=True).encode(
        x=x, y=y, color=alt.Color("machine:N", title="sim, OPT-30B, ShareGPT-like"),
        tooltip=["machine", "gpu_blocks", "rate", alt.Tooltip("squeeze:Q", format=".2f"),
                 alt.Tooltip("ratio:Q", format=".2f"), "vllm_swap_tok_s", "pie_tok_s"])
    one = alt.Chart(pd.DataFrame({"ratio": [1.0]})).mark_rule(strokeDash=[4, 3], color="gray").encode(y="ratio:Q")
    paper = marks[marks["paper"]]
    rule = alt.Chart(paper).mark_rule(color="black", strokeDash=[2, 2]).encode(x="squeeze:Q")
    rule_text = alt.Chart(paper.assign(top=float(max(curve["ratio"].max(), marks["ratio"].max())))).mark_text(
        align="left", dx=4, dy=-6, fontSize=10).encode(
        x="squeeze:Q", y="top:Q", text=alt.value("the paper's operating point"))
    pts = alt.Chart(marks).mark_point(filled=True, size=70, color="black").encode(
        x="squeeze:Q", y="ratio:Q", shape=alt.Shape("paper:N", legend=None),
        tooltip=["label", "where", alt.Tooltip("squeeze:Q", format=".2f"), "ratio"])
    text = alt.Chart(marks).mark_text(align="left", dx=7, dy=4, fontSize=10).encode(
        x="squeeze:Q", y="ratio:Q", text="label:N")
    return alt.layer(one, line, rule, rule_text, pts, text).properties(
        width=width, height=height, title="How much Pie wins depends on how hard memory squeezes")
