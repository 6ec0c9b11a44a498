"""Snapshot tables shaped into plain, JSON-safe rows (and DataFrames) for the charts in `widgets.charts`."""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import pandas as pd

MEMORY_SERIES = {"gpu_blocks_used": "GPU blocks used", "gpu_blocks_limit": "GPU block limit",
                 "staging_blocks": "staging blocks", "host_blocks_used": "host blocks used",
                 "swap_budget": "swap budget"}
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
