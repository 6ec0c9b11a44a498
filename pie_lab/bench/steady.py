"""Steady-state measures of one policy's run (the what-if explorer's numbers): warm-up and drain
left out.

The window is the stretch of iterations with requests waiting in the queue, from the first one
that also finds the GPU pool full (`FULL`): arrivals outpace service and memory binds, so what
the window generates per second is the policy's capacity, not the arrival rate or the run's
length. A run with no such stretch of at least `MIN_WINDOW` of its iterations never queued: its
throughput follows the arrivals, and the whole run is measured (`steady` False).
Throughput in the window is decode tokens per second (each iteration's decode rows); the two
halves of the window give a band. Policies run on one workload are compared over the same work
(`common_tokens`): from the decode token count at which every policy's window has begun to
`WORK_END` of the workload's tokens, each policy's rate is those tokens over the time it took to
generate them. Measured by time instead, each policy's window covers different requests (a policy
that holds more requests empties its queue sooner), and with heavy-tailed lengths which requests
those are moved the ratio by 7% between 200 and 800 requests; over the same tokens, 3%. Latencies are those of the requests whose first token came in
the window. `drain_share`: the part of the run after the last arrival; a run with no window that is
mostly drain was too short to reach its steady state (`settled`).
"""
from __future__ import annotations

import numpy as np

FULL = 0.9                # GPU pool (with the staging ring) at least this full: memory binds
MIN_WINDOW = 0.1          # share of the run's iterations a window needs to count as steady
MAX_DRAIN = 0.5           # a run with no window, more than this after its last arrival: too short
WORK_END = 0.9            # share of the workload's decode tokens that ends a common window: the last long requests' drain left out


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


def common_tokens(runs) -> tuple[float, float] | None:
    """(first, last) decode token counts of the window every run of one workload is measured over,
    or None where a run has no window or the windows begin after `WORK_END` of the tokens."""
    first, total = 0.0, None
    for its in runs:
        t0, _, steady = steady_window(its)
        if not steady:
            return None
        cum = its["decode_tokens"].cumsum()
        first = max(first, float(cum[its["end"] <= t0].max() if (its["end"] <= t0).any() else 0.0))
        total = float(cum.iloc[-1]) if total is None else min(total, float(cum.iloc[-1]))
    last = WORK_END * total
    return (first, last) if last > first else None


def _token_times(its, tokens) -> tuple[float, float, float]:
    """(start, end, tokens generated between) of the iterations that take the run from one token
    count to another."""
    cum = its["decode_tokens"].cumsum().to_numpy(float)
    end = its["end"].to_numpy(float)
    i0, i1 = (min(int(np.searchsorted(cum, k)), len(cum) - 1) for k in tokens)
    return float(end[i0]), float(end[i1]), float(cum[i1] - cum[i0])


def _work_rate(its, tokens) -> float:
    t0, t1, n = _token_times(its, tokens)
    return n / (t1 - t0) if t1 > t0 else float("nan")


def steady_row(reqs, its, tokens: tuple[float, float] | None = None) -> dict:
    """Steady-state throughput (and its two halves), latency percentiles and the window: the run's
    own window, or the stretch between two decode token counts (`common_tokens`)."""
    if tokens is None:
        t0, t1, steady = steady_window(its)
        mid = (t0 + t1) / 2
        rates = (_rate(its, t0, t1), _rate(its, t0, mid), _rate(its, mid, t1))
    else:
        (t0, t1, _), steady, mid = _token_times(its, tokens), True, sum(tokens) / 2
        rates = (_work_rate(its, tokens), _work_rate(its, (tokens[0], mid)), _work_rate(its, (mid, tokens[1])))
    row = dict(steady=steady, window_start_s=t0, window_end_s=t1,
               window_iterations=int(((its["start"] >= t0) & (its["end"] <= t1)).sum()),
               steady_tokens_per_s=rates[0], first_half_tokens_per_s=rates[1], second_half_tokens_per_s=rates[2])
    first = reqs["first_token"].to_numpy(float)
    inside = reqs[(first >= t0) & (first <= t1)]
    row["window_requests"] = int(len(inside))
    end, start = float(its["end"].max()), float(its["start"].min())
    row["drain_share"] = (end - float(reqs["arrival"].max())) / (end - start) if end > start else 0.0
    for m in ("ttft", "tpot", "e2e"):
        vals = inside[m].dropna().to_numpy(float)
        row[f"steady_{m}_p50_s"] = float(np.percentile(vals, 50)) if len(vals) else float("nan")
    return row
