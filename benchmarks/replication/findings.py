"""The closing sections of the replication's markdown: what the figures show (where memory binds,
why the gains are smaller than the paper's, what a fixed budget does) and what the sim can't show."""
from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from .settings import MODES

if TYPE_CHECKING:
    from .experiment import Report


def _highest_rate(report: Report, preset: str) -> pd.DataFrame:
    r = report.results
    return r[(r.preset == preset) & (r.rate_factor == r.rate_factor.max())]


def findings(report: Report) -> str:
    s, r = report.setups, report.results
    lines = ["## What this shows\n"]
    gh, h2 = s[s.preset == "GH200"], s[s.preset == "H200"]
    share = lambda d: ", ".join(f"{x.model} {x.workload} {100 * x.transparent_share:.0f}%"   # noqa: E731
                                for x in d.itertuples())
    if len(gh) and len(h2):
        pool_ratio = (h2.set_index(["model", "workload"])["gpu_kv_gib"]
                      / gh.set_index(["model", "workload"])["gpu_kv_gib"]).dropna()
        lines.append(
            "- **The link sets the transparent share.** One decode layer computes for "
            f"{gh.layer_compute_ms.min():.2f}-{gh.layer_compute_ms.max():.2f} ms in the cost model on the GH200 "
            f"preset; at its measured {gh.link_gbps.iloc[0]:.0f} GB/s host to device (450 on paper) that hides "
            f"{gh.hidden_gb_per_step.min():.1f}-"
            f"{gh.hidden_gb_per_step.max():.1f} GB of host-resident KV per step (transparent share of the KV the "
            f"batch holds: {share(gh)}). The H200 preset's PCIe link (55.5 GB/s, ~8x slower) hides "
            f"{h2.hidden_gb_per_step.min():.1f}-{h2.hidden_gb_per_step.max():.1f} GB per step ({share(h2)}), so on "
            "the H200 pie can add only a few percent of capacity. The H200 preset also has 141 GiB of HBM against "
            f"the GH200's 96 GiB, so its KV pool is {pool_ratio.min():.1f}-{pool_ratio.max():.1f}x larger to begin "
            "with and fewer setups are memory-bound.")
    for preset in s["preset"].unique():
        top = _highest_rate(report, preset)
        bound, free = [], []
        for (model, work), g in top.groupby(["model", "workload"], sort=False):
            v = g.set_index("policy")
            tag = f"{model} {work}"
            if v.loc["vllm-swap", "kv_bound"] > 0.5 or v.loc["vllm-swap", "preemptions"] > 0:
                tput = v.loc["pie", "steady_tokens_per_s"] / v.loc["vllm-swap", "steady_tokens_per_s"]
                lat = v.loc["vllm-swap", "norm_latency_s"] / v.loc["pie", "norm_latency_s"]
                bound.append(f"{tag} (pie / vllm-swap tokens/s {tput:.2f}x, vllm-swap / pie normalised latency "
                             f"{lat:.2f}x; pie preempted {int(v.loc['pie', 'preemptions'])} times, vllm-swap "
                             f"{int(v.loc['vllm-swap', 'preemptions'])} times, both by swapping)")
            else:
                free.append(tag)
        txt = f"- **{preset}, highest rate: where memory binds.** "
        txt += ("GPU memory limited vLLM's batch in " + "; ".join(bound) + ". " if bound else
                "GPU memory never limited vLLM's batch. ")
        if free:
            txt += (f"In {', '.join(free)} max_num_seqs (256) caps the batch before memory does, so extra KV "
                    "capacity cannot help and every policy ties, pie a little behind for its small stalls.")
        lines.append(txt)
    lines.append(
        "- **Why the gains are smaller than the paper's.** (1) In the cost model a decode step reads the weights once "
        "and every context token's KV once per layer from HBM, so a batch made larger by the host tier also reads "
        "more KV per step: tokens/s grows much less than the batch. (2) With vLLM's default max_num_seqs of 256 and "
        "the full GPU pool, most setups are not memory-bound at all (above). (3) Pie preempts by swapping, as "
        "vllm-swap does (the default for every policy with a host tier: recompute lost to it for pie and hybrid "
        "in all but one of the setups `benchmarks/hybrid_targets.py` and the named scenarios measure), so preemption costs "
        "both alike and pie gains only from its larger batch. (4) The controller stays under its "
        "3% stall target, which on these shapes leaves it below the transparency-condition budget (compare `median "
        "budget` with `pie-fixed budget`).")
    lines.append(
        "- **Latency** gains, where there are any, appear just above vLLM's capacity, where vLLM's queue grows and "
        "pie's extra capacity still keeps up; at light load every policy is the same except for pie's small "
        "stalls.")
    lo = r[r.rate_factor == r.rate_factor.min()]
    fixed_stall = lo[lo.policy == "pie-fixed"]["stall_share"]
    ctl_stall = lo[lo.policy == "pie"]["stall_share"]
    lines.append(
        "- **A fixed budget needs the controller.** `pie-fixed`'s budget is sized for a full, memory-bound batch; "
        "at light load the batch is small, each layer computes for less time, and the planner still fills the "
        "budget (it offloads eagerly, as the paper's Pie, whether or not the GPU pool is short; the engine's "
        f"default on-demand offload would not), so it stalls {100 * fixed_stall.min():.0f}-"
        f"{100 * fixed_stall.max():.0f}% of the time at the lowest rate against {100 * ctl_stall.min():.1f}-"
        f"{100 * ctl_stall.max():.1f}% for the controller.")
    lines.append(
        "- **Baselines as configured here**: `vllm-swap` preempts whole sequences into a CPU swap space of 2x the "
        "GPU pool with blocking copies (vLLM's own default swap space is 4 GiB, its V0 scheduler recomputes "
        "single-sequence requests by default; V1 has no swap space, and its nearest equivalent is the CPU "
        "offloading connector, `--kv-offloading-size`, which reloads a preempted request's KV from copies made "
        "beforehand); `recompute` is vLLM's default behaviour (V0's and V1's). "
        "The abstract does not say which preemption mode or swap space the paper's vLLM used. FlexGen: see its "
        "section; the paper's 9.4x is against FlexGen's own static, padded batches, which the execution-model "
        "figure approximates, not against the engine's continuous-batching `flexgen` policy.")
    lines.append("\n## What this can't show\n")
    lines.append(
        "- Real GPU behaviour: kernel efficiency at each batch size, copy/compute interference on HBM, allocator "
        "fragmentation, CUDA-graph effects, Python scheduling overhead with thousands of requests. The presets' "
        "achievable rates are estimates (see `data/hardware_presets.yaml`); the GH200 link and host memory figures "
        "are published measurements on other GH200s (nvbandwidth, STREAM), and the cost model is not yet "
        "calibrated against a GH200.")
    lines.append(
        "- The paper's exact setup (GPU memory utilisation, vLLM version and flags, max batch size, trace lengths, "
        "request counts and rates) is not in its abstract, so the ratios are not expected to match; what this "
        "document can check is the direction of each claim and the mechanism behind it. Cells use a few hundred to "
        f"a few thousand requests and {' / '.join(f'{v:g} s' for v in MODES[report.mode].window_s.values())} "
        f"({' / '.join(MODES[report.mode].window_s)}) of arrivals, not full traces.")
    lines.append(
        "- FlexGen's weight offloading, its zig-zag block schedule and CPU attention are not modelled; its policy "
        "here only chooses a KV host fraction and a batch size with the weights on the GPU.")
    return "\n".join(lines) + "\n"
