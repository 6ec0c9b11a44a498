"""A RunConfig as `python -m sglang.launch_server` flags (SGLang 0.5.23; see base.ENGINE_VERSIONS).

The host tier maps to HiCache: its host pool mirrors the device pool (write-through) and holds
evicted KV besides; SGLang sizes it as device pool tokens x `--hicache-ratio` and warns (adding no
tier) when that is not above the device pool. So the ratio is set to (GPU blocks + budget) / GPU
blocks; when the GPU pool size is unknown (SGLang sizes it at start-up), no size is exported and
SGLang's default ratio (2: the device pool plus as much again) applies.
"""
from __future__ import annotations

import math
from typing import Any

from .base import Notes, Translation, common_notes, memory_notes, model_notes, shell, sizes
from ..config_io import load_run_config


def to_sglang(config, *, gpu_memory_gib: float | None = None, model_id: str | None = None) -> Translation:
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

    _policy(rc, s, n, flags)
    common_notes(rc, n)
    argv = ["python", "-m", "sglang.launch_server", "--model-path", s.model_id]
    for flag, value in flags.items():
        argv += [flag] if value is True else [flag, str(value)]
    settings = {"--model-path": s.model_id, **flags}
    return Translation("sglang", shell(argv), settings, tuple(n.exact), tuple(n.approximate),
                       tuple(n.unsupported), tuple(argv))


def _policy(rc, s, n: Notes, flags: dict) -> None:
    e = rc.engine
    if e.policy in ("none", "recompute"):
        n.add("exact", "engine.policy", "", e.policy, "SGLang retracts requests and recomputes them later")
    elif e.policy == "vllm-swap":
        n.add("unsupported", "engine.policy", "", "vllm-swap",
              "SGLang does not swap preempted requests out; it retracts and recomputes them")
    elif e.policy == "pie":
        if e.swap_budget_blocks > 0:
            flags["--enable-hierarchical-cache"] = True
            if s.gpu_blocks is not None:
                ratio = math.ceil(100 * (s.gpu_blocks + e.swap_budget_blocks) / s.gpu_blocks) / 100
                flags["--hicache-ratio"] = ratio
                n.add("approximate", "engine.swap_budget_blocks", "--hicache-ratio", ratio,
                      f"(GPU blocks {s.gpu_blocks} + budget {e.swap_budget_blocks}) / GPU blocks: the host "
                      "pool mirrors the device pool, the rest holds evicted KV")
            else:
                n.add("approximate", "engine.swap_budget_blocks", "--hicache-ratio", None,
                      "left at SGLang's default (host pool = 2 x device pool, lowered if host memory is short): "
                      "the GPU pool size is unknown, "
                      f"and a host pool sized from the budget alone ({e.swap_budget_blocks} blocks) would not "
                      "exceed the device pool it mirrors, so SGLang would add no tier")
            n.add("approximate", "engine.policy", "--enable-hierarchical-cache", True,
                  "HiCache keeps evicted prefix KV in host memory and loads it back before reuse")
        else:
            n.add("approximate", "engine.swap_budget_blocks", "--enable-hierarchical-cache", None,
                  "budget 0: no host tier exported")
        n.add("unsupported", "engine.policy", "", "pie",
              "host-resident KV of running requests: SGLang's running batch keeps its KV on the GPU")
    elif e.policy == "flexgen":
        n.add("unsupported", "engine.policy", "", "flexgen", "no static share of the KV cache on the host")
