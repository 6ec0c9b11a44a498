"""What-if explorer: sliders for the link, HBM and host attention bandwidth, GPU KV memory, model,
workload and rate drive the sim (`pie_lab.bench.whatif`), and charts show each policy against vllm-swap, and the
transparency bound (link bandwidth x layer compute time, in KV blocks per step) with the preset
links marked.

    from widgets.whatif import WhatIfExplorer
    ex = WhatIfExplorer()            # shows the default point once computed
    ex                               # in a notebook cell
    ex.set(link_gbps=55.5)           # what a slider does; returns when the charts are redrawn

To add a policy: pass `policies={**POLICIES, "hybrid": {...}}`. To add a slider: one `Knob` in
`KNOBS` (or `knobs=`), named after a `WhatIfPoint` field.
"""
from __future__ import annotations

import html
import math
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

import altair as alt
import ipywidgets as W
import pandas as pd

from pie_lab import NAMED_SHAPES, PieLabError
from pie_lab.bench import (LINK_MARKS, POLICIES, QUICK_REQUESTS, RATIOS, REFERENCE, WhatIfPoint, bound_curve,
                           hybrid_limits, is_cached, run_point)
from pie_lab.sim.hardware import list_presets, load_preset

from .panels import enable_offline

MODELS = [m for m in ("opt-13b", "opt-30b", "opt-66b", "llama-2-7b", "llama-3.1-8b") if m in NAMED_SHAPES]


@dataclass(frozen=True)
class Knob:
    """One control: the WhatIfPoint field it sets and how to build its widget."""

    field: str
    make: Callable[[Any], W.ValueWidget]


def _log_slider(label: str, lo: float, hi: float, fmt: str = ".1f") -> Callable[[float], W.ValueWidget]:
    return lambda v: W.FloatLogSlider(value=v, base=10, min=math.log10(lo), max=math.log10(hi), step=0.02,
                                      description=label, readout_format=fmt, continuous_update=False,
                                      style={"description_width": "150px"}, layout=W.Layout(width="520px"))


KNOBS = (
    Knob("num_requests", lambda v: W.IntSlider(value=v, min=16, max=2000, step=8, description="requests",
                                               continuous_update=False, style={"description_width": "150px"},
                                               layout=W.Layout(width="520px"))),
    Knob("link_gbps", _log_slider("link GB/s (H2D)", 5, 2000)),
    Knob("hbm_gbps", _log_slider("HBM GB/s", 500, 10000, ".0f")),
    Knob("host_gbps", _log_slider("host attention GB/s", 5, 1000)),
    Knob("kv_gib", _log_slider("GPU KV memory GiB", 1, 64)),
    Knob("rate", _log_slider("rate req/s", 1, 100)),
    Knob("model", lambda v: W.Dropdown(options=MODELS, value=v, description="model",
                                       style={"description_width": "150px"})),
    Knob("workload", lambda v: W.Dropdown(options=["sharegpt-v3", "sharegpt", "alpaca"], value=v, description="workload",
                                          style={"description_width": "150px"})),
)


class WhatIfExplorer:
    def __init__(self, point: WhatIfPoint | None = None, policies: Mapping[str, Mapping[str, Any]] | None = None,
                 knobs: tuple[Knob, ...] = KNOBS, quick_requests: int = QUICK_REQUESTS):
        enable_offline()
        self.point = point or WhatIfPoint()
        self.policies = dict(policies or POLICIES)
        self.quick_requests = quick_requests   # the instant estimate's request count, refined after
        self.stages: list[int] = []            # request counts the last update answered with, in order
        self.knobs = {k.field: k.make(getattr(self.point, k.field)) for k in knobs}
        presets = list_presets()
        self.preset = W.Dropdown(options=presets, value=self.point.base_hardware, description="hardware preset",
                                 style={"description_width": "150px"})
        self.status = W.HTML(layout=W.Layout(width="100%"), _dom_classes=["pie-whatif-status"])
        self.explored: list[dict] = []         # every point computed: the ratio chart's history
        self.result = None
        self.seconds = self.cpu_seconds = float("nan")
        self.ratio_chart = alt.JupyterChart(alt.Chart(pd.DataFrame({"x": []})).mark_point(),
                                            embed_options={"actions": False})
        self.bound_chart = alt.JupyterChart(alt.Chart(pd.DataFrame({"x": []})).mark_point(),
                                            embed_options={"actions": False})
        self.syncing = False                   # True while code moves a control: no second run
        for name, w in self.knobs.items():
            w.observe(lambda ch, name=name: self.syncing or self.set(**{name: ch["new"]}), names="value")
        self.preset.observe(lambda ch: self.use_preset(ch["new"]), names="value")
        self.box = W.VBox([
            W.HTML("<b>What if:</b> move a slider; the sim runs each policy and measures its steady state "
                   "(while requests queue and memory is full; warm-up and drain left out). A quick estimate "
                   f"({quick_requests} requests) shows at once, then the full run refines it."),
            W.HBox([W.VBox([self.preset] + list(self.knobs.values()), layout=W.Layout(min_width="540px")),
                    self.status]),
            W.HBox([self.ratio_chart, self.bound_chart]),
        ], _dom_classes=["pie-whatif"])
        self.update()

    # -- driving it ----------------------------------------------------------------------------
    def set(self, **changes) -> None:
        """Change fields of the point (as the sliders do) and recompute; bad values are shown, not raised."""
        try:
            point = replace(self.point, **changes)
        except PieLabError as exc:
            self.status.value = f"<span style='color:#b00'>refused: {html.escape(str(exc))}</span>"
            return
        self.point = point
        self.syncing = True                    # keep the controls in step with code changes
        try:
            for name, value in changes.items():
                if name in self.knobs:
                    self.knobs[name].value = value
        finally:
            self.syncing = False
        self.update()

    def use_preset(self, name: str) -> None:
        """A preset's own link, HBM and host attention bandwidth (sliders follow)."""
        hw = load_preset(name)
        self.point = replace(self.point, base_hardware=name)
        self.set(link_gbps=hw.h2d_gbps, hbm_gbps=hw.hbm_gbps, host_gbps=hw.host_attention_gbps)

    def update(self) -> None:
        """A quick estimate first (unless the full run is cached), drawn at once, then the full run."""
        self.stages = []
        full = self.point
        if full.num_requests > self.quick_requests and not is_cached(full, self.policies):
            if not self._answer(replace(full, num_requests=self.quick_requests), final=False):
                return
        self._answer(full, final=True)

    def _answer(self, point: WhatIfPoint, final: bool) -> bool:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            res = run_point(point, self.policies)
        except PieLabError as exc:
            self.status.value = f"<span style='color:#b00'>{html.escape(str(exc))}</span>"
            return False
        self.seconds, self.cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        self.stages.append(point.num_requests)
        self.result = res
        df = res.df
        if final:
            for row in df.to_dict("records"):
                if row["policy"] != REFERENCE:
                    self.explored.append({"link_gbps": point.link_gbps, "policy": row["policy"], "model": point.model,
                                          "throughput_ratio": row["throughput_ratio"],
                                          "ratio_lo": row["throughput_ratio_lo"], "ratio_hi": row["throughput_ratio_hi"]})
        batch, context = self.decode_shape()
        self.ratio_chart.chart = ratio_chart(df, self.explored, point)
        self.bound_chart.chart = bound_chart(point, batch, context, self.host_demand())
        self.status.value = self.summary(df, batch, context, final)
        return True

    # -- what the charts read ------------------------------------------------------------------
    def streaming_policy(self) -> str:
        """The policy whose steps the bound describes: the first one that is not the reference."""
        return next((p for p in self.policies if p != REFERENCE), REFERENCE)

    def _decode_steps(self) -> pd.DataFrame:
        it = self.result.iterations
        d = it[(it["policy"] == self.streaming_policy()) & (it["prefill_tokens"] == 0) & (it["batch_size"] > 0)]
        return d if len(d) else it[it["batch_size"] > 0]

    def decode_shape(self) -> tuple[int, int]:
        """Mean decode batch and context per sequence of the streaming policy: the bound's step shape."""
        d = self._decode_steps()
        batch = max(1, int(round(d["batch_size"].mean())))
        context = max(1, int(round((d["context_tokens"] / d["batch_size"]).mean())))
        return batch, context

    def host_demand(self) -> int:
        """Host blocks the streaming policy streamed per decode step (mean): what the link had to carry."""
        return int(round(self._decode_steps()["streamed_blocks"].mean()))

    def summary(self, df: pd.DataFrame, batch: int, context: int, final: bool = True) -> str:
        p = self.point
        res = self.result
        n = res.meta.get("num_requests", p.num_requests)
        rows = "".join(f"<tr><td>{html.escape(r['policy'])}</td><td>{r['steady_tokens_per_s']:,.0f}</td>"
                       f"<td>{r['throughput_ratio']:.2f}x ({r['throughput_ratio_lo']:.2f}-{r['throughput_ratio_hi']:.2f})</td>"
                       f"<td>{r['e2e_p50_ratio']:.2f}x</td>"
                       f"<td>{_window(r)}</td><td>{r['preemptions']}</td><td>{r['final_swap_budget']}</td></tr>"
                       for r in df.to_dict("records"))
        stage = ("" if final else
                 f"<b class='pie-whatif-estimate'>quick estimate from {n} requests; refining with {p.num_requests}...</b><br>")
        unfit = res.meta.get("unfit") or {}
        skipped = (f"<span class='pie-whatif-unfit' style='color:#b00'>{unfit['count']} of {unfit['of']} requests "
                   f"cannot fit and are left out (charted: the other {unfit['of'] - unfit['count']}): "
                   f"{html.escape(unfit['reason'])}</span><br>") if unfit.get("count") else ""
        short = [r["policy"] for r in df.to_dict("records") if not r["steady"]]
        unsettled = "" if res.meta.get("settled", True) else (
            f"<b class='pie-whatif-unsettled' style='color:#b00'>not a steady state: with {n} requests "
            f"{html.escape(', '.join(short))} never ran with requests queued and memory full (the run ends "
            "first), so this ratio is not what a longer run settles to; raise the request count.</b><br>")
        return (f"<div style='font-size:12px'>{stage}{unsettled}{skipped}{html.escape(p.model)} on {html.escape(p.base_hardware)} with link "
                f"{p.link_gbps:.1f} GB/s, HBM {p.hbm_gbps:,.0f} GB/s, host attention {p.host_gbps:.0f} GB/s, "
                f"{p.kv_gib:.1f} GiB KV "
                f"({p.num_gpu_blocks} blocks); <span class='pie-whatif-requests'>{n}</span> {p.workload} requests "
                f"at {p.rate:.1f} req/s"
                + (f"; <span class='pie-whatif-squeeze'>squeeze {df['squeeze'].iloc[0]:.2f}</span> (the KV the "
                   "load wants / the GPU's KV)" if "squeeze" in df.columns else "") + ".<br>"
                f"<span class='pie-whatif-calibration'>kernels: {html.escape(p.calibration)}</span><br>"
                f"<table><tr><th>policy</th><th>steady tok/s</th><th>vs {REFERENCE} (band)</th><th>e2e p50 ratio</th>"
                f"<th>measured window</th><th>preemptions</th><th>final budget</th></tr>{rows}</table>"
                "steady tok/s: decode tokens per second while requests queue and memory is full, every policy timed over "
                "the same tokens (from where all are full to 90% of the workload's); band: the ratio in the two halves "
                "of those tokens; latencies of the requests whose first token came in the window.<br>"
                f"decode step: batch {batch}, context {context} tokens; {self.hybrid_line(batch, context)} answered in "
                f"<span class='pie-whatif-seconds'>{self.seconds:.2f}</span> s wall, {self.cpu_seconds:.2f} s CPU "
                f"(the sim's times are virtual)</div>")

    def hybrid_line(self, batch: int, context: int) -> str:
        """Policy hybrid's bound at this decode shape: what the link and the host can add per step."""
        b = hybrid_limits(self.point, batch, context)
        return (f"host-resident KV per step without a stall: link {b['stream_gb']:.2f} GB, host attention "
                f"{b['host_gb']:.2f} GB, host DRAM cap {b['dram_gb']:.2f} GB (device reads {b['device_kv_gb']:.2f} GB): "
                f"hybrid is limited by {html.escape(b['limit'])};")

    def _ipython_display_(self):
        from IPython.display import display
        display(self.box)


def _window(r: dict) -> str:
    span = f"{r['window_start_s']:.1f}-{r['window_end_s']:.1f} s, {r['window_requests']} requests"
    return span if r["steady"] else f"whole run ({span}): never queued with memory full, so arrival-bound"


def ratio_chart(df: pd.DataFrame, explored: list[dict], point: WhatIfPoint) -> alt.Chart:
    """Left: this point's ratios per policy (1.0 = as good as the reference). Right: every explored
    point's throughput ratio against the link bandwidth, with the preset links marked."""
    names = {"throughput_ratio": "throughput (higher better)", "e2e_p50_ratio": "e2e p50 (lower better)",
             "ttft_p50_ratio": "TTFT p50 (lower better)", "tpot_p50_ratio": "TPOT p50 (lower better)"}
    rows = df[df["policy"] != REFERENCE]
    long = rows.melt(id_vars=["policy"], value_vars=list(RATIOS), var_name="metric", value_name="ratio")
    long["metric"] = long["metric"].map(names)
    bars = alt.Chart(long).mark_bar().encode(
        y=alt.Y("metric:N", title=None, sort=list(names.values())), x=alt.X("ratio:Q", title=f"x {REFERENCE}"),
        yOffset="policy:N", color=alt.Color("policy:N"), tooltip=["policy", "metric", alt.Tooltip("ratio:Q", format=".3f")])
    one = alt.Chart(pd.DataFrame({"ratio": [1.0]})).mark_rule(strokeDash=[4, 3], color="black").encode(x="ratio:Q")
    band = rows.assign(metric=names["throughput_ratio"])
    whiskers = alt.Chart(band).mark_rule(color="black").encode(
        y=alt.Y("metric:N", sort=list(names.values())), yOffset="policy:N", x="throughput_ratio_lo:Q",
        x2="throughput_ratio_hi:Q", tooltip=["policy", alt.Tooltip("throughput_ratio_lo:Q", format=".3f"),
                                              alt.Tooltip("throughput_ratio_hi:Q", format=".3f")])
    now = (bars + whiskers + one).properties(width=260, height=160, title=f"this point vs {REFERENCE} (band: window halves)")
    hist = pd.DataFrame(explored)
    marks = pd.DataFrame([{"link_gbps": m.gbps, "preset": m.label} for m in LINK_MARKS])
    x = alt.X("link_gbps:Q", scale=alt.Scale(type="log", domain=[5, 2000], nice=False), title="link GB/s (log)")
    pts = alt.Chart(hist).mark_point(filled=True, size=60).encode(
        x=x, y=alt.Y("throughput_ratio:Q", title=f"throughput x {REFERENCE}", scale=alt.Scale(zero=False)), color="policy:N",
        shape="model:N", tooltip=list(hist.columns))
    rules = alt.Chart(marks).mark_rule(strokeDash=[2, 2], color="gray").encode(x="link_gbps:Q", tooltip=["preset", "link_gbps"])
    cur = alt.Chart(pd.DataFrame({"link_gbps": [point.link_gbps]})).mark_rule(color="black").encode(x="link_gbps:Q")
    explored_chart = (rules + cur + pts).properties(width=300, height=160, title="explored points")
    return alt.hconcat(now, explored_chart)


def bound_chart(point: WhatIfPoint, batch: int, context: int, demand: int) -> alt.Chart:
    """Blocks the link can hide behind one step's layer compute, against link bandwidth; the blocks
    the run streamed per step (horizontal), the presets' links (dashed) and this point's link (solid)."""
    curve = bound_curve(point, batch, context)
    ms = float(curve["layer_ms"].iloc[0])
    x = alt.X("link_gbps:Q", scale=alt.Scale(type="log", domain=[5, 2000], nice=False), title="link GB/s (log)")
    line = alt.Chart(curve).mark_line().encode(
        x=x, y=alt.Y("hidden_blocks:Q", scale=alt.Scale(type="log"), title="host KV blocks hidden per step (log)"),
        tooltip=[alt.Tooltip("link_gbps:Q", format=".1f"), alt.Tooltip("hidden_blocks:Q", format=".0f")])
    marks = pd.DataFrame([{"link_gbps": m.gbps, "preset": m.label, "source": m.source} for m in LINK_MARKS])
    rules = alt.Chart(marks).mark_rule(strokeDash=[2, 2], color="gray").encode(x="link_gbps:Q",
                                                                               tooltip=["preset", "link_gbps", "source"])
    labels = alt.Chart(marks).mark_text(angle=270, align="left", dx=4, dy=-4, fontSize=9, color="gray").encode(
        x="link_gbps:Q", y=alt.value(150), text="preset:N")
    cur = alt.Chart(pd.DataFrame({"link_gbps": [point.link_gbps]})).mark_rule(color="black").encode(x="link_gbps:Q")
    layers = [line, rules, labels, cur]
    if demand > 0:
        layers.append(alt.Chart(pd.DataFrame({"blocks": [demand]})).mark_rule(color="#d62728").encode(
            y="blocks:Q", tooltip=[alt.Tooltip("blocks:Q", title="blocks streamed per step (mean)")]))
    return alt.layer(*layers).properties(
        width=360, height=200,
        title=f"transparency bound: link x {ms:.3f} ms layer compute (batch {batch}, context {context})")
