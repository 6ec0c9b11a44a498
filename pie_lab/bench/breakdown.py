"""Where a run's time goes, per policy: layer compute, stalls (compute waiting for a streamed copy),
blocking copies (swap in/out before the forward), the rest of the step (embedding, sampling, the
engine, small copies done inline between layers) and the emulated link's CPU time (work a real
DMA link does not take from the host). Built from the engine's iteration records, so it works on
every executor; on the sim the link CPU time is 0.

`benchmarks/cpu_breakdown.py` prints it for the cpu executor; notebook 02 charts it under memory
pressure (`widgets.charts.breakdown_chart`).
"""
from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import pandas as pd

from ..config import EngineConfig
from .harness import run_one, summarize

_COLUMNS = (("compute_s", "compute_time"), ("stall_s", "stall"), ("blocking_s", "blocking_copy_time"),
            ("link_cpu_s", "link_cpu_time"))


def time_breakdown(label: str, engine, t0: float, t_end: float, num_requests: int) -> dict:
    """One finished run's figures: tokens/s; compute, stall, blocking and rest seconds (they add up
    to the steps' busy time); link CPU time, bytes, batch."""
    row, _, its = summarize(label, engine, t0, t_end, num_requests)
    busy = float(its["duration"].sum())
    parts = {k: float(its[c].sum()) for k, c in _COLUMNS}
    return dict(policy=label, tok_s=row["tokens_per_s"], wall_s=row["duration_s"],
                generated=row["generated_tokens"], **parts,
                rest_s=busy - parts["compute_s"] - parts["stall_s"] - parts["blocking_s"],
                stream_mb=float(its["stream_bytes"].sum()) / 1e6,
                offload_mb=float(its["offload_bytes"].sum()) / 1e6,
                preempt=row["preemptions"], batch=float(its["batch_size"].mean()), steps=len(its))


def measure(model: Any, executor: str, label: str, config: EngineConfig, reqs: Sequence[Any]) -> dict:
    """Run `reqs` once under `config`; the breakdown plus the process's CPU seconds."""
    cpu = time.process_time()
    engine, t0, t_end = run_one(model, executor, config, list(reqs))     # closes the engine
    cpu = time.process_time() - cpu
    r = time_breakdown(label, engine, t0, t_end, len(reqs))
    return dict(r, cpu_s=cpu, tok_cpu_s=r["generated"] / cpu if cpu > 0 else float("nan"))


def compare_breakdown(model: Any, executor: str, policies: Mapping[str, Mapping[str, Any]],
                      reqs: Sequence[Any], sizing: Mapping[str, Any] | None = None,
                      repeats: int = 1) -> pd.DataFrame:
    """One row per policy (best tokens/s of `repeats`; the runs alternate between policies so load
    drifts hit all alike), every policy on the same `sizing` (pool sizes)."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: must be >= 1")
    best: dict[str, dict] = {}
    for _ in range(repeats):
        for label, opts in policies.items():
            r = measure(model, executor, label, EngineConfig(**dict(sizing or {}), **opts), reqs)
            if label not in best or r["tok_s"] > best[label]["tok_s"]:
                best[label] = r
    df = pd.DataFrame(list(best.values()))
    base = df.loc[df["policy"] == "none", "tok_s"]
    if len(base):
        df["vs_none"] = df["tok_s"] / float(base.iloc[0]) - 1.0
    return df
