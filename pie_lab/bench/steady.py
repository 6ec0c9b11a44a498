"""Steady-state measures of one policy's run (the what-if explorer's numbers): warm-up and drain
left out.

The window is the stretch of iterations with requests waiting in the queue, from the first one
that also finds the GPU pool full (`FULL`): arrivals outpace service and memory binds, so what
the window generates per second is the policy's capacity, not the arrival rate or the run's
length. A run with no such stretch of at least `MIN_WINDOW` of its iterations never queued: its
throughput follows the arrivals, and the whole run is measured (`steady` False).
Throughput in the window is decode tokens per second (each iteration's decode rows); the two
halves of the window give a band. Latencies are those of the requests whose first token came in
the window. `drain_share`: the part of the run after the last arrival; a run with no window that is
mostly drain was too short to reach its steady state (`settled`).
"""
from __future__ import annotations

import numpy as np

FULL = 0.9                # GPU pool (with the staging ring) at least this full: memory binds
MIN_WINDOW = 0.1          # share of the run's iterations a window needs to count as steady
MAX_DRAIN = 0.5           # a run with no window, more than this after its last arrival: too short


def steady_window(its) -> tuple[float, float, bool]:
    """(start, end, steady) in the engine's clock for one policy's iteration records."""
    full = (its["gpu_blocks_used"] + its["staging_blocks"]) >= FULL * its["gpu_blocks_limit"]
    queued = (its["waiting"] > 0).to_numpy()
    first = np.flatnonzero(queued & full.to_numpy())
    if len(first):
        last = np.flatnonzero(queued)[-1]
        if last - first[0] + 1 >= MIN_WINDOW * len(its):
            return float(its["start"].iloc[first[0]]), float(its["end"].iloc[last]), True
    return float(its["start"].min()), float(its["end"].max()), False


def settled(rows) -> bool:
    """Whether rows of policies run on one workload compare steady states: all found a window, or
    none did and arrivals spanned most of each run (no pressure: throughput follows the arrivals)."""
    steady = [r["steady"] for r in rows]
    return all(steady) or (not any(steady) and max(r["drain_share"] for r in rows) <= MAX_DRAIN)


def _rate(its, t0: float, t1: float) -> float:
    inside = its[(its["start"] >= t0) & (its["end"] <= t1)]
    span = float(inside["end"].max() - inside["start"].min()) if len(inside) else 0.0
    return float(inside["decode_tokens"].sum()) / span if span > 0 else float("nan")


def steady_row(reqs, its) -> dict:
    """Steady-state throughput (and its two halves), latency percentiles and the window."""
    t0, t1, steady = steady_window(its)
    mid = (t0 + t1) / 2
    row = dict(steady=steady, window_start_s=t0, window_end_s=t1,
               window_iterations=int(((its["start"] >= t0) & (its["end"] <= t1)).sum()),
               steady_tokens_per_s=_rate(its, t0, t1), first_half_tokens_per_s=_rate(its, t0, mid),
               second_half_tokens_per_s=_rate(its, mid, t1))
    first = reqs["first_token"].to_numpy(float)
    inside = reqs[(first >= t0) & (first <= t1)]
    row["window_requests"] = int(len(inside))
    end, start = float(its["end"].max()), float(its["start"].min())
    row["drain_share"] = (end - float(reqs["arrival"].max())) / (end - start) if end > start else 0.0
    for m in ("ttft", "tpot", "e2e"):
        vals = inside[m].dropna().to_numpy(float)
        row[f"steady_{m}_p50_s"] = float(np.percentile(vals, 50)) if len(vals) else float("nan")
    return row
