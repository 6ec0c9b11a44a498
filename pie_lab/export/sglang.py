"""A RunConfig as `python -m sglang.launch_server` flags (SGLang 0.5.23; see base.ENGINE_VERSIONS).

The host tier maps to HiCache: its host pool mirrors the device pool (write-through) and holds
evicted KV besides; SGLang sizes it as device pool tokens x `--hicache-ratio` and warns (adding no
tier) when that is not above the device pool. So the ratio is (GPU blocks + tier) / GPU blocks,
the tier sized by `host_tier.size_tier` (at least the GPU pool, within the host memory); when the
GPU pool's size is unknown (SGLang sizes it at start-up), `--hicache-size` gives the tier in GB.
"""
from __future__ import annotations

import math
from typing import Any

from .base import Notes, Translation, common_notes, memory_notes, model_notes, shell, sig, sizes
from .host_tier import size_tier
from ..config_io import load_run_config


def to_sglang(config, *, gpu_memory_gib: float | None = None, model_id: str | None = None,
              host_memory_gb: float | None = None) -> Translation:
    rc = load_run_config(config)
    e = rc.engine
    s = sizes(rc, gpu_memory_gib, model_id)
    n = Notes()
    flags: dict[str, Any] = {}
    model_notes(rc, s, n, "--model-path")

    flags["--dtype"] = e.dtype          # the same names in both engines
    n.add("exact", "engine.dtype", "--dtype", flags["--dtype"])
    flags["--page-size"] = e.block_size
    n.add("exact", "engine.block_size", "--page-size", e.block_size, "tokens per KV page")
    flags["--max-running-requests"] = e.max_num_seqs
    n.add("exact", "engine.max_num_seqs", "--max-running-requests", e.max_num_seqs)
    if e.chunked_prefill:
        # SGLang: chunked_prefill_size must be divisible by page_size.
        chunk = max(e.block_size, e.max_num_batched_tokens // e.block_size * e.block_size)
        flags["--chunked-prefill-size"] = chunk
        rounded = "" if chunk == e.max_num_batched_tokens else (
            f"; rounded to a multiple of the page size {e.block_size}, as SGLang requires")
        n.add("approximate", "engine.max_num_batched_tokens", "--chunked-prefill-size", chunk,
              "SGLang caps each prefill chunk; pie_lab caps prefill and decode tokens of a step together" + rounded)
    else:
        flags["--chunked-prefill-size"] = -1
        n.add("exact", "engine.chunked_prefill", "--chunked-prefill-size", -1, "-1 turns chunking off")
    flags["--max-prefill-tokens"] = e.max_num_batched_tokens
    n.add("approximate", "engine.max_num_batched_tokens", "--max-prefill-tokens", e.max_num_batched_tokens,
          "SGLang's token budget of one prefill batch; decode steps are not capped by it")
    if e.max_model_len is not None:
        flags["--context-length"] = e.max_model_len
        n.add("exact", "engine.max_model_len", "--context-length", e.max_model_len)
    flags["--random-seed"] = e.seed
    n.add("approximate", "engine.seed", "--random-seed", e.seed,
          "seeds sampling; pie_lab's seed also draws the random weights of named shapes")

    if s.gpu_blocks is not None:
        flags["--max-total-tokens"] = s.gpu_blocks * e.block_size
        n.add("exact", "engine.num_gpu_blocks", "--max-total-tokens", flags["--max-total-tokens"],
              "tokens the GPU KV pool holds")
    frac = memory_notes(s, n, "--mem-fraction-static", "SGLang's static share covers weights and the KV pool")
    if frac is not None:
        flags["--mem-fraction-static"] = frac

    _policy(rc, s, n, flags, host_memory_gb)
    common_notes(rc, n)
    argv = ["python", "-m", "sglang.launch_server", "--model-path", s.model_id]
    for flag, value in flags.items():
        argv += [flag] if value is True else [flag, str(value)]
    settings = {"--model-path": s.model_id, **flags}
    return Translation("sglang", shell(argv), settings, tuple(n.exact), tuple(n.approximate),
                       tuple(n.unsupported), tuple(argv))


TIER_DOES = ("HiCache's host pool mirrors the device pool (write-through) and keeps evicted prefix KV besides, "
             "loading it back before reuse; running requests' KV stays on the GPU")


def _policy(rc, s, n: Notes, flags: dict, host_memory_gb: float | None = None) -> None:
    e = rc.engine
    if e.policy in ("none", "recompute"):
        n.add("exact", "engine.policy", "", e.policy, "SGLang retracts requests and recomputes them later")
        return
    if e.policy == "vllm-swap":
        n.add("unsupported", "engine.policy", "", "vllm-swap",
              "SGLang does not swap preempted requests out; it retracts and recomputes them")
        return
    if e.policy == "flexgen":
        n.add("unsupported", "engine.policy", "", "flexgen", "no static share of the KV cache on the host")
        return
    if e.swap_budget_blocks == 0:
        n.add("approximate", "engine.swap_budget_blocks", "--enable-hierarchical-cache", None,
              "budget 0: no host tier exported")
    else:
        flags["--enable-hierarchical-cache"] = True
        run = e.host_blocks(s.gpu_blocks, s.block_bytes)
        if s.gpu_blocks is not None:
            tier = size_tier(run, s.gpu_blocks, s.block_bytes, e.hardware, host_memory_gb)
            ratio = math.floor(100 * (s.gpu_blocks + tier.blocks) / s.gpu_blocks) / 100
            flags["--hicache-ratio"] = ratio
            n.add("approximate", "engine.swap_budget_blocks", "--hicache-ratio", ratio,
                  f"(GPU blocks {s.gpu_blocks} + host tier {tier.blocks}) / GPU blocks, since the host pool mirrors "
                  f"the device pool (SGLang adds no tier unless the ratio is above 1, and advises 2 or more); "
                  f"the tier: {tier.why}. What it does: {TIER_DOES}")
        elif run:
            tier = size_tier(run, None, s.block_bytes, e.hardware, host_memory_gb)
            flags["--hicache-size"] = sig(tier.gib)
            n.add("approximate", "engine.swap_budget_blocks", "--hicache-size", flags["--hicache-size"],
                  f"GB of host pool (it overrides --hicache-ratio): the GPU pool's size is unknown, so the tier "
                  f"is {tier.why}. What it does: {TIER_DOES}")
        else:
            n.add("approximate", "engine.swap_budget_blocks", "--hicache-ratio", None,
                  "left at SGLang's default (host pool = 2 x device pool, lowered if host memory is short): "
                  "neither the GPU pool nor the host pool has a size here. What it does: " + TIER_DOES)
        n.add("approximate", "engine.policy", "--enable-hierarchical-cache", True,
              "HiCache keeps evicted prefix KV in host memory and loads it back before reuse")
    if e.policy == "pie":
        n.add("unsupported", "engine.policy", "", "pie",
              "host-resident KV of running requests: SGLang's running batch keeps its KV on the GPU")
