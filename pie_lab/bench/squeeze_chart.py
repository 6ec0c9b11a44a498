"""One story for "how much does Pie win": pie / vllm-swap throughput against the squeeze
(`bench/squeeze.py`), one curve per machine from the sim on the scenarios' load (real ShareGPT V3),
with the paper's operating point, the four figures the workbench printed when issue 25 was filed,
and what the same four pages compute now, placed on it.

    from pie_lab.bench.squeeze_chart import current_marks, figure_marks, squeeze_chart, squeeze_curve
    squeeze_chart(squeeze_curve(), pd.concat([figure_marks(), current_marks()]))   # benchmarks/squeeze_chart.py
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..model_spec import named_spec
from ..sim.hardware import load_preset
from .harness import run_benchmark
from .squeeze import Squeeze, cost_model_step, workload_squeeze
from .sweep import WorkloadSpec

MODEL = "opt-30b"
WORKLOAD = "sharegpt-v3"          # the scenarios' load: real ShareGPT V3 lengths (a shipped table)
PRESETS = {"GH200": "GH200 (NVLink-C2C, 346 GB/s)", "H200": "H200 (PCIe gen5, 55 GB/s)"}
# (GPU KV blocks, req/s): the memory-bound scenarios' load (20 req/s, at most 128 in flight) on a
# shrinking GPU pool, and two lighter loads on the largest pool for the left end
POINTS = ((1400, 5.0), (1400, 10.0), (1400, 20.0), (800, 20.0), (400, 20.0), (250, 20.0), (150, 20.0))
PIE = {"policy": "pie", "controller": {"enabled": True}, "label": "pie"}
POLICIES = ["vllm-swap", PIE]
THEN, NOW, PAPER_KIND = "as printed (issue 25)", "current code", "paper"


@dataclass(frozen=True)
class Figure:
    """A pie / vllm-swap figure as a page printed it when issue 25 was filed, and the setting it was
    measured in. Its squeeze is that setting's then: synthetic ShareGPT-like lengths, the
    uncalibrated (roofline) preset."""

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
        roofline = replace(load_preset(self.hardware), calibration=None)
        return workload_squeeze(work, gpu_blocks=self.gpu_blocks, block_size=16, max_num_seqs=self.max_num_seqs,
                                step_s=cost_model_step(self.model, roofline))


# the paper's set-up is the replication's: OPT-30B on the GH200's whole KV pool, ShareGPT beyond capacity
PAPER = Figure("paper's claim: 1.9x", 1.9, "Pie (Xu et al. 2024) on a GH200: its whole GPU, vLLM's defaults",
               "opt-30b", 1490, 256, 382, 9.544)
# as printed when issue 25 was filed (2026-12): each page's own setting, all OPT on a GH200
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


def _pie_over_swap(df, pie: str = "pie", column: str = "tokens_per_s") -> tuple[float, float]:
    """(pie / vllm-swap of `column`, the run's squeeze) of a result table."""
    d = df.set_index("policy")
    return float(d.loc[pie, column] / d.loc["vllm-swap", column]), float(d.loc["vllm-swap", "squeeze"])


def squeeze_curve(presets=tuple(PRESETS), points=POINTS, num_requests: int = 200, model: str = MODEL,
                  max_num_seqs: int = 128, workload: str = WORKLOAD):
    """pie (controller on) / vllm-swap generated tokens/s (whole run) in the sim at each
    (GPU blocks, rate) point, with the point's squeeze: one row per preset and point."""
    import pandas as pd
    spec = named_spec(model)
    rows = []
    for preset in presets:
        for blocks, rate in points:
            work = WorkloadSpec(workload, num_requests, rate, 0).build(spec)
            df = run_benchmark(model, "sim", POLICIES, work, dict(hardware=preset, dtype="float16", num_gpu_blocks=blocks,
                               num_host_blocks=4000, max_num_seqs=max_num_seqs), progress=False).df
            ratio, sq = _pie_over_swap(df)
            d = df.set_index("policy")
            rows.append({"preset": preset, "machine": PRESETS.get(preset, preset), "gpu_blocks": blocks, "rate": rate,
                         "squeeze": sq, "vllm_swap_tok_s": float(d.loc["vllm-swap", "tokens_per_s"]),
                         "pie_tok_s": float(d.loc["pie", "tokens_per_s"]), "ratio": ratio})
    return pd.DataFrame(rows)


def figure_marks(figures=FIGURES, paper: Figure = PAPER):
    """Each figure as printed at its setting's squeeze then (and the paper's claim at its set-up's)."""
    import pandas as pd
    return pd.DataFrame([{"label": f.label, "ratio": f.ratio, "squeeze": f.squeeze().value, "where": f.where,
                          "paper": f is paper, "kind": PAPER_KIND if f is paper else THEN} for f in (paper, *figures)])


def mark(label: str, where: str, df, pie: str = "pie", column: str = "tokens_per_s") -> dict:
    """A current figure: pie / vllm-swap of a result table, at the run's squeeze."""
    ratio, sq = _pie_over_swap(df, pie, column)
    return {"label": f"{label} now: {ratio:.2f}x", "ratio": ratio, "squeeze": sq, "where": where, "paper": False,
            "kind": NOW}


def current_marks(num_requests: int | None = None, notebook_models=("opt-13b", "opt-30b")):
    """What the scenario, the explorer's default point and notebook 04's two settings give with the
    code as it is (real ShareGPT V3, calibrated presets), each at its run's squeeze. `num_requests`
    shortens every run (tests, notebooks' SHORT mode); None: each page's own count. The
    replication's needs its capacity calibration: benchmarks/squeeze_chart.py adds it."""
    import pandas as pd
    from ..workloads import load_sharegpt_v3
    from .scenarios import load_scenario
    from .whatif import POLICIES as WHATIF, WhatIfPoint, run_point
    rows = []
    sc = load_scenario("memory-bound-gh200")
    rows.append(mark("scenarios", f"memory-bound-gh200 as data/scenarios.yaml has it ({sc.workload.kind})",
                     sc.run(num_requests, labels=["vllm-swap", "pie"]).df))
    point = WhatIfPoint() if num_requests is None else WhatIfPoint(num_requests=min(num_requests, WhatIfPoint.num_requests))
    rows.append(mark("explorer", f"notebook 06's default point: {point.kv_gib} GiB of KV ({point.num_gpu_blocks} "
                     f"blocks), {point.rate:g} req/s, {point.num_requests} {point.workload} requests",
                     run_point(point, {k: WHATIF[k] for k in ("vllm-swap", "pie")}).df))
    n = 120 if num_requests is None else num_requests          # notebook 04's NUM_REQUESTS and RATE
    work = load_sharegpt_v3(n, seed=0, rate=8.0, vocab_size=50272)
    for model in notebook_models:
        df = run_benchmark(model, "sim", ["vllm-swap", {**PIE, "label": "pie + controller"}], work, progress=False,
                           engine_options=dict(hardware="GH200", dtype="float16", num_gpu_blocks=200,
                                               num_host_blocks=1200)).df
        rows.append(mark(f"notebook 04 {model.upper()}",
                         f"notebook 04: 200 GPU blocks, 8 req/s, {n} ShareGPT V3 requests", df, "pie + controller"))
    return pd.DataFrame(rows)


def label_rows(marks, x_domain, y_domain, width: int, height: int, line_px: int = 12, char_px: float = 5.6):
    """Each mark's label height (`label_y`, in ratio units), moved down or up from its point in steps
    of a text line until it overlaps no label placed before it (labels start 7 px right of the
    point, x on a log scale)."""
    import math
    (x0, x1), (y0, y1) = [math.log(v) for v in x_domain], y_domain

    def px(sq, r):
        return (math.log(sq) - x0) / (x1 - x0) * width, (y1 - r) / (y1 - y0) * height
    placed, out = [], []
    for row in marks.sort_values("ratio", ascending=False).to_dict("records"):
        x, y = px(row["squeeze"], row["ratio"])
        x, w = x + 7, char_px * len(row["label"])
        for dy in (0, line_px, -line_px, 2 * line_px, -2 * line_px, 3 * line_px):
            if all(abs(y + dy - py) >= line_px or x + w <= px_ or px_ + pw <= x for px_, py, pw in placed):
                break
        placed.append((x, y + dy, w))
        out.append({**row, "label_y": y1 - (y + dy) / height * (y1 - y0)})
    return type(marks)(out)


def squeeze_chart(curve, marks=None, width: int = 600, height: int = 320):
    """Ratio against squeeze (log x): a line per machine; the figures as labelled points, hollow as
    printed when issue 25 was filed, filled as computed now; the paper's set-up as a vertical rule,
    1.0x (no gain) dashed."""
    import altair as alt
    import pandas as pd
    marks = figure_marks() if marks is None else marks
    xd = (min(curve["squeeze"].min(), marks["squeeze"].min()) * 0.8, max(curve["squeeze"].max(), marks["squeeze"].max()) * 1.6)
    top = float(max(curve["ratio"].max(), marks["ratio"].max()))
    yd = (0.9, top + 0.1)
    xs = alt.Scale(type="log", domain=list(xd), nice=False)
    ys = alt.Scale(domain=list(yd), nice=False)
    x = alt.X("squeeze:Q", scale=xs, title="squeeze: KV the offered load wants / KV the GPU holds (log)")
    y = alt.Y("ratio:Q", scale=ys, title="throughput, pie (controller) / vllm-swap")
    line = alt.Chart(curve).mark_line(point=True).encode(
        x=x, y=y, color=alt.Color("machine:N", title="sim, OPT-30B, ShareGPT V3", legend=alt.Legend(orient="top-left")),
        tooltip=["machine", "gpu_blocks", "rate", alt.Tooltip("squeeze:Q", format=".2f"),
                 alt.Tooltip("ratio:Q", format=".2f"), "vllm_swap_tok_s", "pie_tok_s"])
    one = alt.Chart(pd.DataFrame({"ratio": [1.0]})).mark_rule(strokeDash=[4, 3], color="gray").encode(y=y)
    paper = marks[marks["kind"] == PAPER_KIND]
    rule = alt.Chart(paper).mark_rule(color="black", strokeDash=[2, 2]).encode(x=x)
    rule_text = alt.Chart(paper.assign(top=top)).mark_text(align="left", dx=4, dy=-6, fontSize=10).encode(
        x=x, y=alt.Y("top:Q", scale=ys), text=alt.value("the paper's operating point"))
    tip = ["label", "where", alt.Tooltip("squeeze:Q", format=".2f"), alt.Tooltip("ratio:Q", format=".2f")]
    layers = [one, line, rule, rule_text]
    for kind, style in ((PAPER_KIND, dict(shape="diamond", filled=True, size=90)), (THEN, dict(filled=False, size=70)),
                        (NOW, dict(filled=True, size=70))):
        layers.append(alt.Chart(marks[marks["kind"] == kind]).mark_point(color="black", strokeWidth=1.5, **style)
                      .encode(x=x, y=y, tooltip=tip))
    layers.append(alt.Chart(label_rows(marks, xd, yd, width, height)).mark_text(align="left", dx=7, dy=0, fontSize=10)
                  .encode(x=x, y=alt.Y("label_y:Q", scale=ys), text="label:N"))
    title = alt.TitleParams("How much Pie wins depends on how hard memory squeezes", subtitle=[
        "hollow: as pages printed it when issue 25 was filed (synthetic lengths, uncalibrated presets); "
        "filled: the same pages now"])
    return alt.layer(*layers).properties(width=width, height=height, title=title)
