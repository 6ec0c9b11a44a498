"""Data shaping and Altair chart builders, usable live (via spec templates) and statically.

Live panels never rebuild Altair objects: each chart is built and validated once with named
datasets (`SpecTemplate`), and every refresh only swaps in a few hundred rows of plain records.
That keeps a refresh to a few milliseconds, so the engine thread barely notices the dashboard.
For notebooks, the same builders accept DataFrames: `timeline_chart(timeline_frame(snap.layers))`.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import altair as alt
import numpy as np
import pandas as pd

KIND_COLORS = {"compute": "#4c78a8", "copy": "#f58518", "stall": "#e45756", "host attention": "#54a24b",
               "host wait": "#b279a2"}       # the last two: policy hybrid's host-computed share
SERIES_COLORS = {"GPU blocks used": "#4c78a8", "GPU block limit": "#9ecae9", "staging blocks": "#f58518",
                 "host blocks used": "#54a24b", "swap budget": "#b279a2"}
MEMORY_SERIES = {"gpu_blocks_used": "GPU blocks used", "gpu_blocks_limit": "GPU block limit",
                 "staging_blocks": "staging blocks", "host_blocks_used": "host blocks used",
                 "swap_budget": "swap budget"}
WIDTH = 560
TIMELINE_COLUMNS = ["step", "layer", "kind", "start_ms", "end_ms", "dur_ms", "bytes"]
TRANSPARENCY_COLUMNS = ["layer", "compute_ms", "copy_ms", "predicted_copy_ms", "stall_ms", "mbytes", "transparent"]


# -- plain-record helpers ---------------------------------------------------------------------------
def clean(v: Any) -> Any:
    """A JSON-safe scalar: numpy scalars to Python, NaN/inf to None."""
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return v if math.isfinite(v) else None
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def records(data: Any) -> list[dict]:
    """DataFrame or iterable of dicts -> list of JSON-safe dicts."""
    if isinstance(data, pd.DataFrame):
        data = data.to_dict("records")
    return [{k: clean(v) for k, v in row.items()} for row in data]


# -- data shaping -------------------------------------------------------------------------------
def timeline_rows(layers: pd.DataFrame | None, max_steps: int = 3) -> list[dict]:
    """Per-layer compute / copy / stall intervals of the last `max_steps` iterations, in ms.

    Times are relative to the start of the first iteration shown, so consecutive iterations line
    up left to right; gaps between them are the engine's own work (scheduling, sampling).
    """
    if layers is None or len(layers) == 0:
        return []
    steps = layers["step"].to_numpy()
    keep = np.isin(steps, np.unique(steps)[-max_steps:])
    cols = {c: layers[c].to_numpy()[keep] for c in ("step", "step_start", "layer", "compute_start", "compute_end",
                                                     "copy_start", "copy_end", "wait", "bytes")}
    host = "host_start" in layers
    if host:
        cols.update({c: layers[c].to_numpy()[keep] for c in ("host_start", "host_end", "host_wait", "host_bytes")})
    base = cols["step_start"].min()
    rows = []
    for i in range(len(cols["step"])):
        off = cols["step_start"][i] - base
        step, layer = int(cols["step"][i]), int(cols["layer"][i])
        c0, c1 = off + cols["compute_start"][i], off + cols["compute_end"][i]
        rows.append(dict(step=step, layer=layer, kind="compute", start_ms=float(c0) * 1e3, end_ms=float(c1) * 1e3,
                         dur_ms=float(c1 - c0) * 1e3, bytes=0))
        k0, k1 = cols["copy_start"][i], cols["copy_end"][i]
        if k0 == k0 and k1 == k1:                      # not NaN: this layer streamed host blocks
            rows.append(dict(step=step, layer=layer, kind="copy", start_ms=float(off + k0) * 1e3,
                             end_ms=float(off + k1) * 1e3, dur_ms=float(k1 - k0) * 1e3, bytes=int(cols["bytes"][i])))
        w = cols["wait"][i]
        if w > 0:
            rows.append(dict(step=step, layer=layer, kind="stall", start_ms=float(c0 - w) * 1e3, end_ms=float(c0) * 1e3,
                             dur_ms=float(w) * 1e3, bytes=0))
        if host and cols["host_start"][i] == cols["host_start"][i]:     # hybrid: the host attended this layer
            h0, h1, hw = off + cols["host_start"][i], off + cols["host_end"][i], cols["host_wait"][i]
            rows.append(dict(step=step, layer=layer, kind="host attention", start_ms=float(h0) * 1e3,
                             end_ms=float(h1) * 1e3, dur_ms=float(h1 - h0) * 1e3, bytes=int(cols["host_bytes"][i])))
            if hw > 0:
                rows.append(dict(step=step, layer=layer, kind="host wait", start_ms=float(h1 - hw) * 1e3,
                                 end_ms=float(h1) * 1e3, dur_ms=float(hw) * 1e3, bytes=0))
    return rows


def timeline_frame(layers: pd.DataFrame | None, max_steps: int = 3) -> pd.DataFrame:
    """`timeline_rows` as a DataFrame: step, layer, kind, start_ms, end_ms, dur_ms, bytes."""
    return pd.DataFrame(timeline_rows(layers, max_steps), columns=TIMELINE_COLUMNS)


def transparency_rows(layers: pd.DataFrame | None, link_bandwidth_gbps: float | None = None) -> list[dict]:
    """Per layer, averaged over the iterations given: the transparency condition made visible.

    compute_ms: the layer's compute time; copy_ms: measured copy time of its host blocks;
    predicted_copy_ms: host bytes per layer / link bandwidth; stall_ms: how long compute waited.
    A layer is transparent when its copy is hidden (stall ~ 0); in steady state that needs
    host bytes per layer / bandwidth <= compute time per layer (prefetch depth smooths bursts).
    """
    if layers is None or len(layers) == 0:
        return []
    layer = layers["layer"].to_numpy()
    comp = (layers["compute_end"] - layers["compute_start"]).to_numpy() * 1e3
    cp = np.nan_to_num((layers["copy_end"] - layers["copy_start"]).to_numpy()) * 1e3
    stall = layers["wait"].to_numpy() * 1e3
    mb = np.nan_to_num(layers["bytes"].to_numpy(dtype=float)) / 1e6
    out = []
    for l in np.unique(layer):
        m = layer == l
        row = dict(layer=int(l), compute_ms=float(comp[m].mean()), copy_ms=float(cp[m].mean()),
                   stall_ms=float(stall[m].mean()), mbytes=float(mb[m].mean()))
        row["predicted_copy_ms"] = (row["mbytes"] * 1e6 / (link_bandwidth_gbps * 1e9) * 1e3
                                    if link_bandwidth_gbps else None)
        row["transparent"] = bool(row["stall_ms"] <= max(0.01 * row["compute_ms"], 1e-6))
        out.append(row)
    return out


def transparency_frame(layers: pd.DataFrame | None, link_bandwidth_gbps: float | None = None) -> pd.DataFrame:
    """`transparency_rows` as a DataFrame, one row per layer."""
    return pd.DataFrame(transparency_rows(layers, link_bandwidth_gbps), columns=TRANSPARENCY_COLUMNS)


def iteration_point(it: pd.DataFrame, since_step: int, origin: float, prev_end: float | None,
                    tokens: int | None = None) -> dict | None:
    """One history point aggregating the iterations after `since_step` (None when there are none).

    Throughput is `tokens` (generated since `prev_end`, e.g. from the engine's running totals) over
    the time since `prev_end`; without them, the decode tokens of the iterations given over their span.
    """
    if it is None or len(it) == 0:
        return None
    steps = it["step"].to_numpy()
    m = steps > since_step
    if not m.any():
        return None
    g = {c: it[c].to_numpy()[m] for c in ("start", "end", "stall", "link_cpu_time", "decode_tokens", "batch_size",
                                          "swap_budget", "prefetch_depth", "gpu_blocks_used", "gpu_blocks_limit",
                                          "host_blocks_used", "staging_blocks", "overlap_ratio")}
    end = float(g["end"][-1])
    first = int(steps[m][0])
    if tokens is None or prev_end is None:
        # only the iterations given: their decode tokens over their own span (gaps before excluded)
        tokens = float(g["decode_tokens"].sum())
        begin = float(g["start"][0]) if prev_end is None or first != since_step + 1 else prev_end
    else:
        begin = prev_end
    dur = g["end"] - g["start"]
    return dict(t=end - origin, step=int(steps[m][-1]), iterations=int(m.sum()), iter_ms=float(dur.mean()) * 1e3,
                iter_max_ms=float(dur.max()) * 1e3, stall_ms=float(g["stall"].mean()) * 1e3,
                link_cpu_ms=float(g["link_cpu_time"].mean()) * 1e3,
                tokens_per_s=float(tokens) / max(end - begin, 1e-9),
                batch_size=float(g["batch_size"].mean()), overlap_ratio=float(g["overlap_ratio"].mean()),
                **{c: int(g[c][-1]) for c in ("swap_budget", "prefetch_depth", "gpu_blocks_used", "gpu_blocks_limit",
                                              "host_blocks_used", "staging_blocks")}, end=end)


def iteration_frame(iterations: pd.DataFrame | None, origin: float | None = None, points: int = 150) -> pd.DataFrame:
    """Iterations of a snapshot grouped into at most `points` history points (for static charts)."""
    cols = ["t", "step", "iterations", "iter_ms", "iter_max_ms", "stall_ms", "link_cpu_ms", "tokens_per_s", "batch_size",
            "overlap_ratio", "swap_budget", "prefetch_depth", "gpu_blocks_used", "gpu_blocks_limit",
            "host_blocks_used", "staging_blocks", "end"]
    if iterations is None or len(iterations) == 0:
        return pd.DataFrame(columns=cols)
    origin = float(iterations["start"].iloc[0]) if origin is None else origin
    n = len(iterations)
    size = max(1, -(-n // points))
    out, prev, last = [], None, -1
    for i in range(0, n, size):
        chunk = iterations.iloc[i:i + size]
        p = iteration_point(chunk, last, origin, prev)
        if p:
            out.append(p)
            prev, last = p["end"], p["step"]
    return pd.DataFrame(out, columns=cols)


def memory_rows(points: Iterable[dict]) -> list[dict]:
    """History points -> long format rows: t, series, blocks."""
    return [dict(t=p["t"], series=name, blocks=p[key]) for p in points for key, name in MEMORY_SERIES.items()]


def memory_now_rows(last: dict | None, host_capacity: int | None) -> list[dict]:
    """The current split of each tier, for a stacked bar: tier, part, blocks."""
    if not last:
        return []
    gpu_used, staging = int(last["gpu_blocks_used"]), int(last["staging_blocks"])
    limit = int(last["gpu_blocks_limit"])
    host_used, budget = int(last["host_blocks_used"]), int(last["swap_budget"])
    rows = [("GPU", "KV in use", gpu_used), ("GPU", "staging ring", staging),
            ("GPU", "free", max(0, limit - gpu_used - staging)), ("host", "KV in use", host_used),
            ("host", "budget unused", max(0, budget - host_used))]
    if host_capacity:
        rows.append(("host", "free", max(0, host_capacity - max(budget, host_used))))
    return [dict(tier=a, part=b, blocks=c) for a, b, c in rows]


def request_rows(requests: pd.DataFrame | None, origin: float, after: float) -> tuple[list[dict], float]:
    """TTFT / TPOT points of requests finished after `after`; returns (rows, latest finish)."""
    if requests is None or len(requests) == 0 or "finish" not in requests:
        return [], after
    fin = requests["finish"].to_numpy(dtype=float)
    m = fin > after
    if not m.any():
        return [], after
    rows = []
    for rid, f, ttft, tpot in zip(requests["request_id"].to_numpy()[m], fin[m],
                                  requests["ttft"].to_numpy(dtype=float)[m], requests["tpot"].to_numpy(dtype=float)[m]):
        for metric, v in (("TTFT", ttft), ("TPOT", tpot)):
            if v == v:
                rows.append(dict(t=float(f) - origin, metric=metric, ms=float(v) * 1e3, request_id=str(rid)))
    return rows, float(fin[m].max())


def event_rows(events: pd.DataFrame | None, origin: float, t_min: float | None = None, max_rows: int = 40) -> list[dict]:
    """Knob changes and controller decisions (those that change a budget or switch rule; a run of
    identical holds is one marker with its count and span) as markers: t, kind, label, step."""
    if events is None or len(events) == 0:
        return []
    rows = []
    for rec in events.tail(max_rows * 4).to_dict("records"):
        t = rec["time"] - origin
        if t_min is not None and t < t_min:
            continue
        if rec["kind"] == "controller":
            label = f"controller {decision_text(rec)}"
        else:
            label = "knob " + ", ".join(f"{k}={_short(v)}" for k, v in rec.items()
                                        if k not in ("time", "kind", "step") and not _missing(v))
        rows.append(dict(t=float(t), kind=str(rec["kind"]), label=label, step=int(clean(rec.get("step", -1)) or -1)))
    return rows[-max_rows:]


def decision_text(rec: dict) -> str:
    """A controller event in words: its rule, the budget it set, and a run's count and span."""
    old, new = _int(rec.get("old_budget")), _int(rec.get("new_budget"))
    text = f"{rec.get('rule', '')}: budget {old} -> {new}" if old != new else f"{rec.get('rule', '')} at budget {old}"
    count = _int(rec.get("count")) or 1
    if count > 1:
        text += f" (x{count} over {float(rec['until']) - float(rec['time']):.1f} s)"
    return text


def _int(v):
    return None if _missing(v) else int(v)


def _short(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


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
