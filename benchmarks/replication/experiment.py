"""Running the replication: one cell (a workload through several policies), the capacity
calibration, the GPU-memory search, and `replicate()`, which puts them together into a `Report`."""
from __future__ import annotations

import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pie_lab import named_spec
from pie_lab.bench import run_benchmark

from .claims import claims
from .settings import ENGINE, MEMORY_FLOOR, MEMORY_TOLERANCE, MODES, POLICY_ORDER, STEADY_FROM
from .setups import cell_requests, make_workload, policy_cases, setup_for


@dataclass
class Report:
    mode: str
    setups: pd.DataFrame
    results: pd.DataFrame
    memory: list[dict]
    claims: pd.DataFrame
    wall_s: float
    meta: dict = field(default_factory=dict)


# -- one cell: a workload through several policies -----------------------------------------------
def run_cell(task: dict) -> pd.DataFrame:
    setup, rate = task["setup"], task["rate"]
    spec = named_spec(setup["model"])
    n = setup["calibration_requests"] if rate is None else cell_requests(setup, rate)
    work = make_workload(setup["workload"], n, rate, spec.vocab_size)
    opts = {**ENGINE, "hardware": setup["preset"]}
    res = run_benchmark(setup["model"], "sim", task["cases"], work, opts, progress=False)
    last_arrival = max(r.arrival_time for r in work)
    rows = []
    for row in res.df.to_dict("records"):
        label = row["policy"]
        rq = res.requests[res.requests["policy"] == label]
        it = res.iterations[res.iterations["policy"] == label]
        max_seqs = next(c.get("max_num_seqs", ENGINE["max_num_seqs"]) for c in task["cases"] if c["label"] == label)
        queued = it["waiting"] > 0
        steady = it[(it["end"] > STEADY_FROM * last_arrival) & (it["end"] <= last_arrival)]
        decode = steady[steady["prefill_tokens"] == 0]
        rows.append({
            "preset": setup["preset"], "model": setup["model"], "workload": setup["workload"],
            "rate_factor": task.get("factor"), "rate": rate, "requests": len(work), "policy": label,
            "gpu_blocks": task.get("gpu_blocks") or setup["gpu_blocks"],
            "requests_per_s": row["requests_per_s"], "tokens_per_s": row["tokens_per_s"],
            # generated tokens/s while requests still arrive, after the first quarter of the window (the
            # batch filling up) and before the drain at the end (which weighs heavily in a run of a few
            # hundred requests); the sim's clock starts at 0. Without chunked prefill every scheduled
            # sequence samples one token per iteration.
            "steady_tokens_per_s": (float(it.loc[(it["end"] > STEADY_FROM * last_arrival)
                                                 & (it["end"] <= last_arrival), "batch_size"].sum()
                                          / ((1 - STEADY_FROM) * last_arrival))
                                    if last_arrival > 0 else row["tokens_per_s"]),
            # the same window's decode-only steps (the policies differ there; prefills cost all alike)
            "steady_decode_tokens_per_s": float(decode["batch_size"].sum() / decode["duration"].sum())
                                          if len(decode) else float("nan"),
            "steady_prefill_time_share": float(steady.loc[steady["prefill_tokens"] > 0, "duration"].sum()
                                               / steady["duration"].sum()) if len(steady) else float("nan"),
            "norm_latency_s": float((rq["e2e"] / rq["output_tokens"]).mean()),
            "e2e_p50_s": row["e2e_p50_s"], "e2e_p99_s": row["e2e_p99_s"], "ttft_p50_s": row["ttft_p50_s"],
            "mean_batch": float(it["batch_size"].mean()),
            # of the iterations with requests queued, the share where memory (not max_num_seqs) capped the batch
            "kv_bound": float((it.loc[queued, "batch_size"] < max_seqs).mean()) if queued.any() else 0.0,
            "stall_share": row["stall_share"], "preemptions": row["preemptions"],
            "peak_host_blocks": row["peak_host_blocks"],
            "median_budget": float(it["swap_budget"].median()) if label.startswith("pie") or label == "hybrid" else 0.0,
            "median_host_budget": float(it["host_compute_budget"].median()),
            "host_wait_share": float(it["host_wait"].sum() / it["duration"].sum()) if len(it) else 0.0,
            "iterations": row["iterations"], "duration_s": row["duration_s"],
            "squeeze": row["squeeze"],          # the KV this cell's load wants / the GPU's KV (bench/squeeze.py)
        })
    return pd.DataFrame(rows)


def memory_search(task: dict) -> dict:
    """Smallest GPU KV pool (share of the full one) at which `variant` keeps vllm-swap's full-memory
    throughput (within MEMORY_TOLERANCE), by bisection; every probe is kept. The task carries the
    variant's own throughput at the full pool (its cell at the highest rate), the first probe."""
    setup, variant, target = task["setup"], task["variant"], task["target_tok_s"]
    full, full_tput = setup["gpu_blocks"], task["full_tok_s"]
    probes = [{"share": 1.0, "gpu_blocks": full, "tokens_per_s": full_tput,
               "keeps_up": full_tput >= (1 - MEMORY_TOLERANCE) * target}]

    def probe(share: float) -> bool:
        blocks = max(1, int(round(share * full)))
        df = run_cell({"setup": setup, "rate": task["rate"], "factor": task["factor"], "gpu_blocks": blocks,
                       "cases": policy_cases(setup, blocks, (variant,))})
        tput = float(df["steady_tokens_per_s"].iloc[0])
        ok = tput >= (1 - MEMORY_TOLERANCE) * target
        probes.append({"share": share, "gpu_blocks": blocks, "tokens_per_s": tput, "keeps_up": ok})
        return ok

    lo, hi = MEMORY_FLOOR, 1.0
    if not probes[0]["keeps_up"]:
        best = None
    elif probe(lo):
        best = lo
    else:
        for _ in range(task["steps"]):
            mid = round((lo + hi) / 2, 4)
            if probe(mid):
                hi = mid
            else:
                lo = mid
        best = hi
    out = {"preset": setup["preset"], "model": setup["model"], "workload": setup["workload"], "variant": variant,
           "rate": task["rate"], "target_tok_s": target, "full_blocks": full, "probes": probes,
           "best_share": best, "best_blocks": None if best is None else int(round(best * full))}
    if best is not None:
        kv = setup["block_bytes"] / 2**30
        w = setup["weights_gib"]
        out["kv_ratio"] = full / out["best_blocks"]
        out["total_ratio"] = (w + full * kv) / (w + out["best_blocks"] * kv)
        # what vllm-swap alone does with pie's reduced pool, for context
        ref = run_cell({"setup": setup, "rate": task["rate"], "factor": task["factor"],
                        "gpu_blocks": out["best_blocks"],
                        "cases": policy_cases(setup, out["best_blocks"], ("vllm-swap",))})
        out["vllm_at_best_tok_s"] = float(ref["steady_tokens_per_s"].iloc[0])
    return out


# -- the whole replication ----------------------------------------------------------------------
def _map(fn, tasks, jobs):
    if jobs <= 1 or len(tasks) <= 1:
        return [fn(t) for t in tasks]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(fn, tasks))


def _calibrate(setup: dict) -> float:
    """Capacity (requests/s): vllm-swap with every request sent at once, measured over the iterations
    with requests still queued (the saturated phase, before the batch drains). Without chunked
    prefill every scheduled sequence samples one token per iteration, so generated tokens =
    batch sizes; requests/s = those tokens/s / mean output tokens."""
    spec = named_spec(setup["model"])
    work = make_workload(setup["workload"], setup["calibration_requests"], None, spec.vocab_size)
    res = run_benchmark(setup["model"], "sim", policy_cases(setup, None, ("vllm-swap",)), work,
                        {**ENGINE, "hardware": setup["preset"]}, progress=False)
    it = res.iterations
    sat = it[it["waiting"] > 0]
    mean_out = float(np.mean([r.max_tokens for r in work]))
    if len(sat) < 10:                                  # never queued: the whole run is the best figure
        return float(res.df["requests_per_s"].iloc[0])
    return float(sat["batch_size"].sum() / sat["duration"].sum() / mean_out)


def replicate(mode: str = "full", jobs: int | None = None, log=None) -> Report:
    m = MODES[mode]
    jobs = jobs if jobs is not None else min(2, os.cpu_count() or 1)
    say = log or (lambda *_: None)
    t0 = time.perf_counter()
    setups = [setup_for(p, model, w, m) for p in m.presets for model in m.models for w in m.workloads]
    say(f"[{time.perf_counter() - t0:5.1f}s] calibrating capacity of {len(setups)} setups")
    for s, cap in zip(setups, _map(_calibrate, setups, jobs)):
        s["capacity_req_s"] = cap
        s["rates"] = tuple(round(f * cap, 3) for f in m.rate_factors)
    tasks = [{"setup": s, "rate": r, "factor": f, "cases": policy_cases(s)}
             for s in setups for f, r in zip(m.rate_factors, s["rates"])]
    # longest first (ShareGPT's longer window) keeps both workers busy to the end
    tasks.sort(key=lambda t: (-t["setup"]["window_s"], -t["rate"]))
    say(f"[{time.perf_counter() - t0:5.1f}s] {len(tasks)} cells x {len(POLICY_ORDER)} policies")
    results = pd.concat(_map(run_cell, tasks, jobs), ignore_index=True)
    order = {(s["preset"], s["model"], s["workload"]): i for i, s in enumerate(setups)}
    results = (results.assign(_o=[order[k] for k in zip(results.preset, results.model, results.workload)])
               .sort_values(["_o", "rate", "policy"], key=lambda c: c.map({p: i for i, p in enumerate(POLICY_ORDER)})
                            if c.name == "policy" else c, kind="stable")
               .drop(columns="_o").reset_index(drop=True))
    memory = []
    top = max(m.rate_factors)
    for s in setups:
        v = results[(results.preset == s["preset"]) & (results.model == s["model"]) & (results.workload == s["workload"])
                    & (results.rate_factor == top) & (results.policy == "vllm-swap")].iloc[0]
        # memory binds vLLM at the full pool: its batch was held below max_num_seqs while requests queued
        s["memory_bound"] = bool(v["kv_bound"] > 0.5 or v["preemptions"] > 0)
        s["top_rate"], s["vllm_top_tok_s"] = float(v["rate"]), float(v["steady_tokens_per_s"])
    if m.memory_steps:
        def full_tok_s(s, var):
            sel = results[(results.preset == s["preset"]) & (results.model == s["model"])
                          & (results.workload == s["workload"]) & (results.rate_factor == top) & (results.policy == var)]
            return float(sel["steady_tokens_per_s"].iloc[0])
        mtasks = [{"setup": s, "variant": var, "rate": s["top_rate"], "factor": top, "target_tok_s": s["vllm_top_tok_s"],
                   "steps": m.memory_steps, "full_tok_s": full_tok_s(s, var)}
                  for s in setups if s["memory_bound"] for var in m.memory_variants]
        say(f"[{time.perf_counter() - t0:5.1f}s] GPU-memory search: {len(mtasks)} bisections")
        memory = _map(memory_search, mtasks, jobs)
    sdf = pd.DataFrame(setups)
    report = Report(mode, sdf, results, memory, pd.DataFrame(), 0.0)
    report.claims = claims(report)
    report.wall_s = time.perf_counter() - t0
    report.meta = {"jobs": jobs, "cpus": os.cpu_count(), "python": platform.python_version(),
                   "machine": platform.machine(), "load_avg": _loadavg()}
    say(f"[{report.wall_s:5.1f}s] done")
    return report


def _loadavg():
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:          # pragma: no cover
        return None
