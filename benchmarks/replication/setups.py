"""Workloads and the per-setup figures (one setup: a preset, a model and a workload): the GPU KV
pool, the running context, the transparency-condition budget, FlexGen's choices, and the
policies as harness entries."""
from __future__ import annotations

import numpy as np

from pie_lab import ControllerConfig, named_spec
from pie_lab.sim.cost_model import CostModel, StepShape
from pie_lab.sim.flexgen_search import DEFAULT_BATCH_SIZES, DEFAULT_FRACTIONS, evaluate, flexgen_search
from pie_lab.sim.hardware import load_preset
from pie_lab.sim.host_cost import hybrid_bound
from pie_lab.workloads import alpaca_like, load_sharegpt_v3, sharegpt_like

from .settings import ENGINE, GPU_MEMORY_HEADROOM, MAX_MODEL_LEN, POLICY_ORDER, SEED, Mode


def make_workload(kind: str, n: int, rate: float | None, vocab_size: int, seed: int = SEED):
    """sharegpt-v3: real ShareGPT V3 requests (vLLM's filter); sharegpt / alpaca: synthetic lengths."""
    if kind == "sharegpt-v3":
        return load_sharegpt_v3(n, seed=seed, rate=rate, arrival=None if rate else "offline", vocab_size=vocab_size,
                                max_model_len=MAX_MODEL_LEN)
    gen = sharegpt_like if kind == "sharegpt" else alpaca_like
    return gen(n, seed=seed, rate=rate, arrival=None if rate else "offline", vocab_size=vocab_size,
               max_model_len=MAX_MODEL_LEN)


def cell_requests(setup: dict, rate: float) -> int:
    return max(setup["min_requests"], int(round(rate * setup["window_s"])))


def running_context(work) -> float:
    """Mean context of a running sequence over its decode steps, weighted by time in the batch
    (long outputs stay longer): sum(o * (p + o/2)) / sum(o)."""
    p = np.array([r.prompt_len for r in work], float)
    o = np.array([r.max_tokens for r in work], float)
    return float((o * (p + o / 2)).sum() / o.sum())


def link_limited_budget(model: str, preset: str, gpu_blocks: int, context: float,
                        max_num_seqs: int = ENGINE["max_num_seqs"]) -> dict:
    """The transparency condition solved for the host-resident budget H (blocks):
    copy(one layer's H blocks) <= compute(one decode layer of the batch that G + H blocks hold).
    The batch's compute grows with H (more KV to read), so iterate to the fixed point."""
    spec, hw = named_spec(model), load_preset(preset)
    cm = CostModel(spec, hw, ENGINE["dtype"], ENGINE["block_size"])
    bs, per_block = ENGINE["block_size"], cm.block_bytes_per_layer
    bw, lat = hw.h2d_gbps * 1e9, hw.link_latency_us * 1e-6
    h, layer_t, batch = 0, 0.0, 0.0
    for _ in range(200):
        batch = max(1.0, min(max_num_seqs, (gpu_blocks + h) * bs / context))
        layer_t = cm.layer_time(StepShape.decode(max(1, round(batch)), max(1, round(context))))
        new = max(0, int((layer_t - lat) * bw / per_block))
        if new == h:
            break
        h = new
    return {"budget_blocks": h, "layer_compute_ms": layer_t * 1e3,
            "hidden_gb_per_step": layer_t * bw * spec.num_layers / 1e9, "batch": batch,
            "share": h / (gpu_blocks + h) if gpu_blocks + h else 0.0}


def setup_for(preset: str, model: str, kind: str, mode: Mode) -> dict:
    spec, hw = named_spec(model), load_preset(preset)
    cm = CostModel(spec, hw, ENGINE["dtype"], ENGINE["block_size"])
    block = spec.kv_block_bytes(ENGINE["block_size"], ENGINE["dtype"])
    free = hw.gpu_memory_bytes * (1 - GPU_MEMORY_HEADROOM) - cm.weight_bytes     # the sim's default pool
    gpu_blocks = max(1, int(int(free // block) * mode.gpu_share))
    work = make_workload(kind, 1000, None, spec.vocab_size)           # length statistics only
    stats = work.describe()
    ctx = running_context(work)
    gpu_kv = gpu_blocks * block
    fg = flexgen_search(spec, hw, prompt_len=stats["input_mean"], output_len=stats["output_mean"],
                        dtype=ENGINE["dtype"], block_size=ENGINE["block_size"], gpu_kv_limit_gb=gpu_kv / 2**30)
    trace = flexgen_on_trace(spec, hw, work, gpu_kv)
    link = link_limited_budget(model, preset, gpu_blocks, ctx)
    bound = hybrid_bound(cm, max(1, round(link["batch"])), max(1, round(ctx)))
    return {"preset": preset, "model": model, "workload": kind, "window_s": mode.window_s[kind],
            "min_requests": mode.min_requests, "calibration_requests": mode.calibration_requests,
            "input_mean": stats["input_mean"], "output_mean": stats["output_mean"], "running_context": ctx,
            "weights_gib": cm.weight_bytes / 2**30, "block_bytes": block, "gpu_blocks": gpu_blocks,
            "gpu_share": mode.gpu_share, "gpu_kv_gib": gpu_kv / 2**30,
            "gpu_kv_tokens": gpu_blocks * ENGINE["block_size"], "link_gbps": hw.h2d_gbps,
            "flexgen_fraction": fg.fraction, "flexgen_batch": fg.batch_size,
            "flexgen_predicted_tok_s": fg.tokens_per_s, "flexgen_trace_tok_s": trace["tokens_per_s"],
            "flexgen_trace_batch": trace["batch_size"], "flexgen_trace_fraction": trace["fractions"],
            "fixed_budget": link["budget_blocks"], "layer_compute_ms": link["layer_compute_ms"],
            "hidden_gb_per_step": link["hidden_gb_per_step"], "transparent_share": link["share"],
            "model_batch": link["batch"], **{f"bound_{k}": v for k, v in bound.items()}}


def flexgen_on_trace(spec, hw, work, gpu_kv_bytes: float) -> dict:
    """FlexGen's execution model (`flexgen_search.evaluate`) on an actual trace of variable lengths:
    requests in arrival order form static batches; each batch is padded to its longest prompt and
    runs to its longest output (FlexGen generates one gen_len for a whole batch), with the smallest
    host fraction on the search's grid that fits the padded batch. Only requested tokens count.
    The batch size is FlexGen's offline choice: the best on the search's grid for this trace."""
    cm = CostModel(spec, hw, ENGINE["dtype"], ENGINE["block_size"])
    reqs = sorted(work, key=lambda r: r.arrival_time)
    useful = sum(r.max_tokens for r in reqs)
    best = {"tokens_per_s": 0.0}
    for batch in DEFAULT_BATCH_SIZES:
        total, fractions = 0.0, set()
        for i in range(0, len(reqs), batch):
            chunk = reqs[i:i + batch]
            p, o = max(r.prompt_len for r in chunk), max(r.max_tokens for r in chunk)
            point = next((pt for f in DEFAULT_FRACTIONS
                          if (pt := evaluate(cm, f, len(chunk), p, o, gpu_kv_bytes, None))["feasible"]), None)
            if point is None:
                break
            fractions.add(point["fraction"])
            total += len(chunk) * o / point["tokens_per_s"]
        else:
            if useful / total > best["tokens_per_s"]:
                best = {"tokens_per_s": useful / total, "batch_size": batch,
                        "fractions": f"{min(fractions):g}-{max(fractions):g}" if len(fractions) > 1
                        else f"{min(fractions):g}"}
        if batch >= len(reqs):
            break
    return best


def policy_cases(setup: dict, gpu_blocks: int | None = None, only: tuple[str, ...] = POLICY_ORDER) -> list[dict]:
    """The policies as harness entries. gpu_blocks: a reduced GPU KV pool (memory search)."""
    blocks = setup["gpu_blocks"] if gpu_blocks is None else int(gpu_blocks)
    g = {"num_gpu_blocks": blocks}
    budget = setup["fixed_budget"] if gpu_blocks is None else \
        link_limited_budget(setup["model"], setup["preset"], blocks, setup["running_context"])["budget_blocks"]
    cases = {
        "recompute": {"label": "recompute", "policy": "recompute", **g},
        "vllm-swap": {"label": "vllm-swap", "policy": "vllm-swap", **g},
        "flexgen": {"label": "flexgen", "policy": "flexgen", "flexgen_fraction": setup["flexgen_fraction"],
                    "max_num_seqs": setup["flexgen_batch"], **g},
        # the paper's Pie fills its host share eagerly (docs/replication.md was measured so), not on demand
        "pie": {"label": "pie", "policy": "pie", "offload": "eager", "controller": ControllerConfig(enabled=True), **g},
        "pie-fixed": {"label": "pie-fixed", "policy": "pie", "offload": "eager", "swap_budget_blocks": budget,
                      "num_host_blocks": max(2 * blocks, budget), **g},                  # a host tier that holds it
        "hybrid": {"label": "hybrid", "policy": "hybrid", "offload": "eager", "controller": ControllerConfig(enabled=True),
                   **g},
    }
    return [cases[p] for p in only]
