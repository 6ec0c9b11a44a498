"""A RunConfig as `vllm serve` flags (vLLM V1 engine arguments).

Sizes: `--kv-offloading-size` and `--swap-space` are GiB; `--gpu-memory-utilization` a fraction of
the GPU's memory, worked out from the hardware preset (or `gpu_memory_gib`).
"""
from __future__ import annotations

from typing import Any

from .base import Notes, Translation, common_notes, memory_notes, model_notes, shell, sig, sizes
from ..config_io import load_run_config

BLOCK_SIZES = (8, 16, 32, 64, 128)


def to_vllm(config, *, gpu_memory_gib: float | None = None, model_id: str | None = None) -> Translation:
    rc = load_run_config(config)
    e = rc.engine
    s = sizes(rc, gpu_memory_gib, model_id)
    n = Notes()
    flags: dict[str, Any] = {}
    model_notes(rc, s, n, "vllm serve MODEL")

    flags["--dtype"] = e.dtype          # the same names in both engines
    n.add("exact", "engine.dtype", "--dtype", flags["--dtype"])
    if e.block_size in BLOCK_SIZES:
        flags["--block-size"] = e.block_size
        n.add("exact", "engine.block_size", "--block-size", e.block_size)
    else:
        flags["--block-size"] = min(BLOCK_SIZES, key=lambda b: (abs(b - e.block_size), b))
        n.add("approximate", "engine.block_size", "--block-size", flags["--block-size"],
              f"vLLM takes block sizes {', '.join(map(str, BLOCK_SIZES))}; {e.block_size} is not one")
    flags["--max-num-seqs"] = e.max_num_seqs
    n.add("exact", "engine.max_num_seqs", "--max-num-seqs", e.max_num_seqs)
    flags["--max-num-batched-tokens"] = e.max_num_batched_tokens
    n.add("exact", "engine.max_num_batched_tokens", "--max-num-batched-tokens", e.max_num_batched_tokens)
    if e.max_model_len is not None:
        flags["--max-model-len"] = e.max_model_len
        n.add("exact", "engine.max_model_len", "--max-model-len", e.max_model_len)
    chunk_flag = "--enable-chunked-prefill" if e.chunked_prefill else "--no-enable-chunked-prefill"
    flags[chunk_flag] = True
    n.add("exact", "engine.chunked_prefill", chunk_flag, e.chunked_prefill,
          "" if e.chunked_prefill else "vLLM then needs max_num_batched_tokens >= max_model_len")
    flags["--seed"] = e.seed
    n.add("approximate", "engine.seed", "--seed", e.seed,
          "seeds sampling; pie_lab's seed also draws the random weights of named shapes")

    if s.gpu_blocks is not None:
        flags["--num-gpu-blocks-override"] = s.gpu_blocks
        n.add("exact", "engine.num_gpu_blocks", "--num-gpu-blocks-override", s.gpu_blocks,
              "the same number of GPU KV blocks of the same size")
    frac = memory_notes(s, n, "--gpu-memory-utilization", "vLLM also profiles activations at start-up")
    if frac is not None:
        flags["--gpu-memory-utilization"] = frac

    _policy(rc, s, n, flags)
    common_notes(rc, n)
    argv = ["vllm", "serve", s.model_id]
    for flag, value in flags.items():
        argv += [flag] if value is True else [flag, str(value)]
    settings = {"model": s.model_id, **flags}
    return Translation("vllm", shell(argv), settings, tuple(n.exact), tuple(n.approximate),
                       tuple(n.unsupported), tuple(argv))


def _policy(rc, s, n: Notes, flags: dict) -> None:
    e = rc.engine
    if e.policy in ("none", "recompute"):
        n.add("exact", "engine.policy", "", e.policy, "vLLM V1 preempts by recompute, as pie_lab does here")
    elif e.policy == "vllm-swap":
        host = e.host_blocks(s.gpu_blocks, s.block_bytes)
        if host is None:
            n.add("unsupported", "engine.num_host_blocks", "--swap-space", None,
                  "the swap space size is unknown: set num_host_blocks or num_gpu_blocks")
        else:
            flags["--swap-space"] = sig(s.gib(host))
            n.add("approximate", "engine.policy", "--swap-space", flags["--swap-space"],
                  f"{host} host blocks in GiB; swap preemption is vLLM V0 behaviour: V1 preempts by "
                  "recompute and newer releases drop this flag")
    elif e.policy == "pie":
        if e.swap_budget_blocks > 0:
            flags["--kv-offloading-size"] = sig(s.gib(e.swap_budget_blocks))
            flags["--kv-offloading-backend"] = "native"
            n.add("approximate", "engine.swap_budget_blocks", "--kv-offloading-size",
                  flags["--kv-offloading-size"],
                  f"{e.swap_budget_blocks} blocks in GiB; vLLM's CPU tier keeps copies of KV blocks and "
                  "loads them back on a prefix hit, while running requests' KV stays on the GPU")
            n.add("approximate", "engine.policy", "--kv-offloading-backend", "native",
                  "vLLM's built-in CPU offloading connector (the other choice is lmcache)")
        else:
            n.add("approximate", "engine.swap_budget_blocks", "--kv-offloading-size", None,
                  "budget 0: no host tier exported")
        n.add("unsupported", "engine.policy", "", "pie",
              "host-resident KV of running requests: vLLM can hold only the GPU pool's worth of running "
              "context and preempts beyond it")
    elif e.policy == "flexgen":
        n.add("unsupported", "engine.policy", "", "flexgen",
              "vLLM's --cpu-offload-gb offloads weights, not a fixed share of the KV cache")
