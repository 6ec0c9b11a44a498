"""A RunConfig as `vllm serve` flags (vLLM 0.33 engine arguments; see base.ENGINE_VERSIONS).

Sizes: `--kv-offloading-size` is GiB; `--gpu-memory-utilization` a fraction of the GPU's memory,
worked out from the hardware preset (or `gpu_memory_gib`); `--num-gpu-blocks-override` counts
blocks of vLLM's block size, converted from pie_lab's pool in tokens.
"""
from __future__ import annotations

from typing import Any

from .base import Notes, Translation, common_notes, memory_notes, model_notes, shell, sig, sizes
from .host_tier import size_tier
from ..config_io import load_run_config

# vLLM's config takes any positive block size, but its CUDA attention backends (FLASH_ATTN,
# TRITON_ATTN, FLEX_ATTENTION) need a multiple of 16; FlashInfer takes only 16, 32 or 64.
KERNEL_BLOCK_MULTIPLE = 16
FLASHINFER_BLOCK_SIZES = (16, 32, 64)


def to_vllm(config, *, gpu_memory_gib: float | None = None, model_id: str | None = None,
            host_memory_gb: float | None = None) -> Translation:
    rc = load_run_config(config)
    e = rc.engine
    s = sizes(rc, gpu_memory_gib, model_id)
    n = Notes()
    flags: dict[str, Any] = {}
    model_notes(rc, s, n, "vllm serve MODEL")

    flags["--dtype"] = e.dtype          # the same names in both engines
    n.add("exact", "engine.dtype", "--dtype", flags["--dtype"])
    block = _block_size(e.block_size, n)
    flags["--block-size"] = block
    flags["--max-num-seqs"] = e.max_num_seqs
    n.add("exact", "engine.max_num_seqs", "--max-num-seqs", e.max_num_seqs)
    flags["--max-num-batched-tokens"] = e.max_num_batched_tokens
    n.add("exact", "engine.max_num_batched_tokens", "--max-num-batched-tokens", e.max_num_batched_tokens)
    _context(rc, s, n, flags)
    flags["--seed"] = e.seed
    n.add("approximate", "engine.seed", "--seed", e.seed,
          "seeds sampling; pie_lab's seed also draws the random weights of named shapes")

    if s.gpu_blocks is not None:
        tokens = s.gpu_blocks * e.block_size
        flags["--num-gpu-blocks-override"] = -(-tokens // block)
        if tokens % block == 0:
            n.add("exact", "engine.num_gpu_blocks", "--num-gpu-blocks-override", flags["--num-gpu-blocks-override"],
                  f"{tokens} tokens of GPU KV cache in blocks of {block}")
        else:
            n.add("approximate", "engine.num_gpu_blocks", "--num-gpu-blocks-override",
                  flags["--num-gpu-blocks-override"],
                  f"{tokens} tokens rounded up to whole blocks of {block}: "
                  f"{flags['--num-gpu-blocks-override'] * block} tokens")
    frac = memory_notes(s, n, "--gpu-memory-utilization", "vLLM also profiles activations at start-up")
    if frac is not None:
        flags["--gpu-memory-utilization"] = frac

    _policy(rc, s, n, flags, host_memory_gb)
    common_notes(rc, n)
    argv = ["vllm", "serve", s.model_id]
    for flag, value in flags.items():
        argv += [flag] if value is True else [flag, str(value)]
    settings = {"model": s.model_id, **flags}
    return Translation("vllm", shell(argv), settings, tuple(n.exact), tuple(n.approximate),
                       tuple(n.unsupported), tuple(argv))


def _block_size(block_size: int, n: Notes) -> int:
    if block_size % KERNEL_BLOCK_MULTIPLE == 0:
        why = "" if block_size in FLASHINFER_BLOCK_SIZES else (
            f"FlashInfer takes only {', '.join(map(str, FLASHINFER_BLOCK_SIZES))}; vLLM picks another backend")
        n.add("exact", "engine.block_size", "--block-size", block_size, why)
        return block_size
    m = KERNEL_BLOCK_MULTIPLE
    block = max(m, round(block_size / m) * m)
    n.add("approximate", "engine.block_size", "--block-size", block,
          f"vLLM's CUDA attention backends need a multiple of {m}; {block_size} is rounded to {block} "
          "(the GPU pool keeps its size in tokens)")
    return block


def _context(rc, s, n: Notes, flags: dict) -> None:
    """Chunked prefill and the context cap: vLLM without chunked prefill needs
    max_num_batched_tokens >= max_model_len, and the model's own context (131,072 for Llama 3.1)
    is far above a step's token budget."""
    e = rc.engine
    if e.chunked_prefill:
        flags["--enable-chunked-prefill"] = True
        n.add("exact", "engine.chunked_prefill", "--enable-chunked-prefill", True)
        if e.max_model_len is not None:
            flags["--max-model-len"] = e.max_model_len
            n.add("exact", "engine.max_model_len", "--max-model-len", e.max_model_len)
        return
    flags["--disable-chunked-prefill"] = True
    n.add("approximate", "engine.chunked_prefill", "--disable-chunked-prefill", False,
          "vLLM warns that disabling chunked prefill is not officially supported for generative models")
    context = e.max_model_len or s.spec.max_position_embeddings
    if context <= e.max_num_batched_tokens:
        if e.max_model_len is not None:
            flags["--max-model-len"] = e.max_model_len
            n.add("exact", "engine.max_model_len", "--max-model-len", e.max_model_len)
        return
    flags["--max-model-len"] = e.max_num_batched_tokens
    n.add("approximate", "engine.max_model_len", "--max-model-len", e.max_num_batched_tokens,
          f"vLLM without chunked prefill needs max_num_batched_tokens >= max_model_len; pie_lab admits "
          f"prompts up to {e.max_num_batched_tokens} tokens and lets them grow to {context}, vLLM stops "
          f"them at {e.max_num_batched_tokens}")


TIER_DOES = ("vLLM's CPU offloading connector (--kv-offloading-backend native) keeps copies of computed KV blocks "
             "in host memory and loads them back on a prefix hit or when a preempted request resumes, instead of "
             "prefilling again; running requests' KV stays on the GPU")


def _policy(rc, s, n: Notes, flags: dict, host_memory_gb: float | None = None) -> None:
    e = rc.engine
    if e.policy in ("none", "recompute"):
        n.add("exact", "engine.policy", "", e.policy, "vLLM V1 preempts by recompute, as pie_lab does here")
        return
    if e.policy == "flexgen":
        n.add("unsupported", "engine.policy", "", "flexgen",
              "vLLM's --cpu-offload-gb offloads weights, not a fixed share of the KV cache")
        return
    setting = "engine.policy" if e.policy == "vllm-swap" else "engine.swap_budget_blocks"
    if e.budgeted and e.swap_budget_blocks == 0:
        n.add("approximate", setting, "--kv-offloading-size", None, "budget 0: no host tier exported")
    else:
        tier = size_tier(e.host_blocks(s.gpu_blocks, s.block_bytes), s.gpu_blocks, s.block_bytes, e.hardware,
                         host_memory_gb)
        if tier is None:
            n.add("unsupported", setting, "--kv-offloading-size", None,
                  "the host pool's size is unknown: set num_host_blocks or num_gpu_blocks")
        else:
            flags["--kv-offloading-size"] = sig(tier.gib)
            flags["--kv-offloading-backend"] = "native"
            n.add("approximate", setting, "--kv-offloading-size", flags["--kv-offloading-size"],
                  f"{tier.blocks} blocks in GiB: {tier.why}. What it does: {TIER_DOES} (vLLM has no --swap-space "
                  "any more)")
    if e.policy == "pie":
        n.add("unsupported", "engine.policy", "", e.policy,
              "host-resident KV of running requests: vLLM can hold only the GPU pool's worth of running "
              "context and preempts beyond it")
