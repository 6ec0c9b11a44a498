"""Altair chart builders, usable live (via spec templates) and statically; the rows come from `chart_data`.

Live panels never rebuild Altair objects: each chart is built and validated once with named
datasets (`SpecTemplate`), and every refresh only swaps in a few hundred rows of plain records.
That keeps a refresh to a few milliseconds, so the engine thread barely notices the dashboard.
For notebooks, the same builders accept DataFrames: `timeline_chart(timeline_frame(snap.layers))`.
"""
from __future__ import annotations

from typing import Any, Iterable

import altair as alt
import pandas as pd

# the data shaping is re-exported: panels and notebooks reach both halves as `charts.X`
from .chart_data import (event_rows, iteration_frame, iteration_point, memory_now_rows, memory_rows,  # noqa: F401
                         records, request_rows, timeline_frame, timeline_rows, transparency_frame, transparency_rows)

KIND_COLORS = {"compute": "#4c78a8", "copy": "#f58518", "stall": "#e45756", "host attention": "#54a24b",
               "host wait": "#b279a2"}       # the last two: policy hybrid's host-computed share
SERIES_COLORS = {"GPU blocks used": "#4c78a8", "GPU block limit": "#9ecae9", "staging blocks": "#f58518",
                 "host blocks used": "#54a24b", "swap budget": "#b279a2"}
WIDTH = 560


# -- chart builders (accept a DataFrame, records, or alt.NamedData for templates) -------------------
def _data(d):
    if isinstance(d, (pd.DataFrame, alt.NamedData, alt.Data, alt.UrlData, alt.InlineData)):
        return d
    return alt.Data(values=records(d))


def _kind_scale():
    return alt.Scale(domain=list(KIND_COLORS), range=list(KIND_COLORS.values()))


def timeline_chart(data: Any, width: int = WIDTH) -> alt.LayerChart:
    """Gantt view: one lane each for compute, the copy stream, stalls and (policy hybrid) the host's
    attention and the device's waits for it, per layer, per iteration.

    `data`: timeline rows/frame, or a Snapshot (its last 3 iterations are drawn).
    """
    if hasattr(data, "layers") and not isinstance(data, (pd.DataFrame, list)):
        data = timeline_rows(data.layers)
    base = alt.Chart(_data(data))
    lanes = list(KIND_COLORS)
    bars = base.mark_bar(stroke="white", strokeWidth=0.5).encode(
        x=alt.X("start_ms:Q", title="time within the last iterations (ms)"),
        x2="end_ms:Q",
        y=alt.Y("kind:N", title=None, sort=lanes, scale=alt.Scale(domain=lanes)),
        color=alt.Color("kind:N", scale=_kind_scale(), legend=alt.Legend(title=None, orient="bottom")),
        tooltip=[alt.Tooltip("step:Q"), alt.Tooltip("layer:Q"), alt.Tooltip("kind:N"),
                 alt.Tooltip("dur_ms:Q", format=".3f", title="ms"), alt.Tooltip("bytes:Q", format=",")])
    labels = base.transform_filter(alt.datum.kind == "compute").transform_calculate(
        mid="(datum.start_ms + datum.end_ms) / 2").mark_text(color="white", fontSize=9).encode(
        x="mid:Q", y=alt.Y("kind:N", sort=lanes), text="layer:Q")
    return alt.layer(bars, labels).properties(
        width=width, height=140, title="Overlap timeline: per-layer compute vs copy stream vs stall (vs host attention)")


def transparency_chart(data: Any, width: int = WIDTH) -> alt.Chart:
    """Per layer: compute time next to the copy time (measured, and predicted from bandwidth)."""
    what = ["compute_ms", "copy_ms", "predicted_copy_ms", "stall_ms"]
    return alt.Chart(_data(data)).transform_fold(what, as_=["what", "ms"]).transform_filter(
        "isValid(datum.ms)").mark_bar().encode(
        x=alt.X("layer:O"), xOffset=alt.XOffset("what:N", sort=what), y=alt.Y("ms:Q", title="ms per layer"),
        color=alt.Color("what:N", sort=what, scale=alt.Scale(
            domain=what, range=[KIND_COLORS["compute"], KIND_COLORS["copy"], "#ffbf79", KIND_COLORS["stall"]])),
        tooltip=["layer:O", "what:N", alt.Tooltip("ms:Q", format=".3f")],
    ).properties(width=width, height=160, title="Transparency per layer: the copy must fit under the compute")


BREAKDOWN_PARTS = {"compute_s": ("layer compute", KIND_COLORS["compute"]), "stall_s": ("stall", KIND_COLORS["stall"]),
                   "blocking_s": ("blocking copies", KIND_COLORS["copy"]), "rest_s": ("rest of the step", "#bab0ac")}


def breakdown_chart(data: Any, width: int = WIDTH) -> alt.LayerChart:
    """Per policy, where the busy time went (`pie_lab.bench.breakdown.compare_breakdown` rows), with
    tokens/s at the bar's end; the emulated link's CPU time is in the tooltip (its inline copies sit
    inside "rest of the step", its threads' time beside the bars)."""
    frame = pd.DataFrame(_data(data))
    labels = {k: v[0] for k, v in BREAKDOWN_PARTS.items()}
    long = frame.melt(id_vars=["policy", "tok_s", "link_cpu_s"], value_vars=list(labels), var_name="part",
                      value_name="seconds").assign(part=lambda d: d["part"].map(labels))
    order = [v[0] for v in BREAKDOWN_PARTS.values()]
    y = alt.Y("policy:N", sort=list(frame["policy"]), title=None)
    bars = alt.Chart(long).mark_bar().encode(
        y=y, x=alt.X("sum(seconds):Q", title="seconds of engine steps"),
        color=alt.Color("part:N", sort=order, title=None,
                        scale=alt.Scale(domain=order, range=[v[1] for v in BREAKDOWN_PARTS.values()])),
        order=alt.Order("part_order:Q"),
        tooltip=["policy:N", "part:N", alt.Tooltip("seconds:Q", format=".3f"),
                 alt.Tooltip("link_cpu_s:Q", format=".3f", title="link CPU s"),
                 alt.Tooltip("tok_s:Q", format=",.0f", title="tokens/s")],
    ).transform_calculate(part_order=f"indexof({order!r}, datum.part)")
    totals = frame.assign(busy=frame[list(labels)].sum(axis=1),
                          label=frame["tok_s"].map(lambda v: f"{v:,.0f} tok/s"))
    text = alt.Chart(totals).mark_text(align="left", dx=4).encode(y=y, x="busy:Q", text="label:N")
    return (bars + text).properties(width=width, height=26 * len(frame) + 20,
                                    title="Where the time goes, per policy")


def _event_rules(events) -> alt.Chart:
    return alt.Chart(_data(events)).mark_rule(strokeDash=[4, 3], strokeWidth=1.5).encode(
        x="t:Q", color=alt.Color("kind:N", scale=alt.Scale(domain=["knob", "controller"], range=["#222222", "#b279a2"]),
                                 legend=alt.Legend(title="events", orient="bottom")),
        tooltip=["label:N", "step:Q"])


def latency_chart(history: Any, requests: Any, events: Any, width: int = WIDTH) -> alt.VConcatChart:
    """Iteration time, stall and the emulated link's CPU time (left axis) with the swap budget
    (right axis) and event markers; TTFT / TPOT of finished requests; generated tokens per second."""
    x = alt.X("t:Q", title="time (s)")
    base = alt.Chart(_data(history))
    series = ["iter_ms", "stall_ms", "link_cpu_ms"]
    lines = base.transform_fold(series, as_=["series", "ms"]).mark_line().encode(
        x=x, y=alt.Y("ms:Q", title="iteration time / stall / link CPU (ms)"),
        color=alt.Color("series:N", scale=alt.Scale(domain=series, range=[KIND_COLORS["compute"], KIND_COLORS["stall"],
                                                                          KIND_COLORS["copy"]]),
                        legend=alt.Legend(title=None, orient="bottom")),
        tooltip=["step:Q", alt.Tooltip("iter_ms:Q", format=".3f"), alt.Tooltip("stall_ms:Q", format=".3f"),
                 alt.Tooltip("link_cpu_ms:Q", format=".3f"), "swap_budget:Q", alt.Tooltip("batch_size:Q", format=".1f")])
    budget = base.mark_line(interpolate="step-after", color=SERIES_COLORS["swap budget"], strokeWidth=2).encode(
        x=x, y=alt.Y("swap_budget:Q", title="swap budget (blocks)",
                     axis=alt.Axis(titleColor=SERIES_COLORS["swap budget"], orient="right")))
    top = alt.layer(lines, budget, _event_rules(events)).resolve_scale(y="independent", color="independent") \
        .properties(width=width, height=150, title="Iteration time, stalls, the swap budget and decisions")
    lat = alt.Chart(_data(requests)).mark_circle(size=25, opacity=0.7).encode(
        x=alt.X("t:Q", title="finish time (s)"), y=alt.Y("ms:Q", title="ms", scale=alt.Scale(type="symlog")),
        color=alt.Color("metric:N", scale=alt.Scale(domain=["TTFT", "TPOT"], range=["#72b7b2", "#e45756"]),
                        legend=alt.Legend(title=None, orient="bottom")),
        tooltip=["request_id:N", "metric:N", alt.Tooltip("ms:Q", format=".2f")],
    ).properties(width=width, height=110, title="Requests: time to first token (TTFT), time per output token (TPOT)")
    thr = base.mark_area(opacity=0.5, color="#54a24b", line=True).encode(
        x=x, y=alt.Y("tokens_per_s:Q", title="tokens / s"),
        tooltip=["step:Q", alt.Tooltip("tokens_per_s:Q", format=".0f")],
    ).properties(width=width, height=90, title="Throughput (generated tokens per second)")
    return alt.vconcat(top, lat, thr).resolve_scale(color="independent")


def memory_chart(memory: Any, now: Any, width: int = WIDTH) -> alt.VConcatChart:
    """Blocks per tier over time (long rows t/series/blocks) and the current split per tier."""
    lines = alt.Chart(_data(memory)).mark_line(interpolate="step-after").encode(
        x=alt.X("t:Q", title="time (s)"), y=alt.Y("blocks:Q", title="KV blocks"),
        color=alt.Color("series:N", scale=alt.Scale(domain=list(SERIES_COLORS), range=list(SERIES_COLORS.values())),
                        legend=alt.Legend(title=None, orient="bottom")),
        strokeDash=alt.condition(alt.datum.series == "GPU block limit", alt.value([4, 3]), alt.value([1, 0])),
        tooltip=["series:N", "blocks:Q", alt.Tooltip("t:Q", format=".2f")],
    ).properties(width=width, height=140, title="Memory: KV blocks per tier (staging ring = the GPU cost of streaming)")
    parts = ["KV in use", "staging ring", "budget unused", "free"]
    bar = alt.Chart(_data(now)).transform_calculate(
        order="indexof(['KV in use','staging ring','budget unused','free'], datum.part)").mark_bar().encode(
        y=alt.Y("tier:N", title=None), x=alt.X("blocks:Q", title="blocks now", stack="zero"),
        color=alt.Color("part:N", scale=alt.Scale(domain=parts, range=["#4c78a8", "#f58518", "#d6bcd9", "#e0e0e0"]),
                        legend=alt.Legend(title=None, orient="bottom")),
        order=alt.Order("order:Q"), tooltip=["tier:N", "part:N", "blocks:Q"],
    ).properties(width=width, height=60, title="Now")
    return alt.vconcat(lines, bar).resolve_scale(color="independent")


class SpecTemplate:
    """A chart built and validated once over named datasets; `fill(name=rows, ...)` -> a spec dict."""

    def __init__(self, builder, names: Iterable[str], **kwargs: Any):
        self.names = tuple(names)
        self.builder, self.kwargs = builder, kwargs
        self.chart = builder(*[alt.NamedData(name=n) for n in self.names], **kwargs)
        self.spec = self.chart.to_dict()
        self.spec.pop("datasets", None)

    def fill(self, **data: list[dict]) -> dict:
        spec = dict(self.spec)              # shallow: the template itself is never mutated
        spec["datasets"] = {n: data.get(n, []) for n in self.names}
        return spec

    def chart_with(self, **data: Any):
        """A regular Altair chart with this data (for saving or static display)."""
        return self.builder(*[data.get(n, []) for n in self.names], **self.kwargs)


__all__ = ["timeline_rows", "timeline_frame", "transparency_rows", "transparency_frame", "iteration_point",
           "iteration_frame", "memory_rows", "memory_now_rows", "request_rows", "event_rows", "timeline_chart",
           "transparency_chart", "latency_chart", "memory_chart", "SpecTemplate", "records"]
