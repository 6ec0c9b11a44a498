"""A RunConfig as transformers continuous batching: a `ContinuousBatchingConfig` for
`model.generate_batch(...)` / `model.init_continuous_batching(...)` (transformers 5.24; see
base.ENGINE_VERSIONS).

A transformers KV block holds `page_size` tokens for every layer, like a pie_lab block, so
`num_blocks` maps one to one when `page_size == block_size`. `cpu_offload_space` (GiB) is a pinned
host pool that evicted requests' KV is copied to and restored from; pinned memory needs an
accelerator, so the snippet stops on a CPU-only machine when it is non-zero.
"""
from __future__ import annotations

import json
from typing import Any

from .base import Notes, Translation, common_notes, model_notes, sig, sizes
from .host_tier import size_tier
from ..config_io import load_run_config

MIN_PAGE_SIZE = 4
ATTN_IMPLEMENTATION = "sdpa"        # continuous batching takes sdpa, paged|eager or a flash kernel
MAX_NEW_TOKENS = 256
EXAMPLE_PROMPTS = ("The capital of France is", "Continuous batching keeps the GPU busy by")


def to_transformers(config, *, gpu_memory_gib: float | None = None, model_id: str | None = None,
                    host_memory_gb: float | None = None) -> Translation:
    rc = load_run_config(config)
    e = rc.engine
    s = sizes(rc, gpu_memory_gib, model_id)
    n = Notes()
    cb: dict[str, Any] = {}
    model_notes(rc, s, n, "from_pretrained")
    if s.spec.is_opt:
        n.add("unsupported", "model", "generate_batch", s.spec.arch,
              "transformers 5.24's continuous batching does not run OPT: its attention asks the cache for "
              "get_seq_length, which PagedAttentionCache lacks (every request fails)")

    if e.block_size >= MIN_PAGE_SIZE:
        cb["page_size"] = e.block_size
        n.add("exact", "engine.block_size", "page_size", e.block_size)
    else:
        cb["page_size"] = MIN_PAGE_SIZE
        n.add("approximate", "engine.block_size", "page_size", MIN_PAGE_SIZE,
              f"transformers needs page_size >= {MIN_PAGE_SIZE}; num_blocks is rescaled to the same tokens")
    if s.gpu_blocks is not None:
        cb["num_blocks"] = -(-s.gpu_blocks * e.block_size // cb["page_size"])
        kind = "exact" if cb["page_size"] == e.block_size else "approximate"
        n.add(kind, "engine.num_gpu_blocks", "num_blocks", cb["num_blocks"], "blocks of page_size tokens, all layers")
    else:
        n.add("approximate", "engine.num_gpu_blocks", "num_blocks", None,
              "left to transformers (sized from free GPU memory): pie_lab sizes it from the executor at run time")
    cb["max_batch_tokens"] = e.max_num_batched_tokens
    n.add("exact", "engine.max_num_batched_tokens", "max_batch_tokens", e.max_num_batched_tokens)
    cb["max_requests_per_batch"] = e.max_num_seqs
    n.add("exact", "engine.max_num_seqs", "max_requests_per_batch", e.max_num_seqs)
    cb["scheduler_type"] = "fifo"
    n.add("approximate", "engine (scheduler)", "scheduler_type", "fifo",
          "both admit first come first served and let running requests decode first")
    cb["safety_margin"] = 0.0
    n.add("approximate", "engine (admission)", "safety_margin", 0.0,
          "pie_lab admits while blocks are free; transformers holds back 15% of blocks by default")
    cb["allow_block_sharing"] = False
    n.add("exact", "engine (prefix sharing)", "allow_block_sharing", False,
          "pie_lab shares no KV blocks between requests")
    cb["seed"] = e.seed
    n.add("approximate", "engine.seed", "seed", e.seed,
          "seeds sampling; pie_lab's seed also draws the random weights of named shapes")
    n.add("exact" if e.chunked_prefill else "approximate", "engine.chunked_prefill", "", e.chunked_prefill,
          "transformers splits a long prompt across steps to fit max_batch_tokens"
          + ("" if e.chunked_prefill else ", which pie_lab would not do here"))
    if e.max_model_len is not None:
        n.add("approximate", "engine.max_model_len", "max_new_tokens", e.max_model_len,
              "no context cap in the batching config: the snippet caps max_new_tokens so that the longest "
              "prompt stays within it")
    _policy(rc, s, n, cb, host_memory_gb)
    common_notes(rc, n)

    model_kwargs = {"dtype": e.dtype, "attn_implementation": ATTN_IMPLEMENTATION}
    n.add("exact", "engine.dtype", "dtype", e.dtype)
    settings = {"model": s.model_id, "from_pretrained": model_kwargs, "continuous_batching_config": cb,
                "generation_config": {"do_sample": False}}
    return Translation("transformers", _snippet(s.model_id, model_kwargs, cb, e.max_model_len), settings, tuple(n.exact),
                       tuple(n.approximate), tuple(n.unsupported))


TIER_DOES = ("a pinned host buffer: when the GPU cache is full, evicted requests' KV is copied there instead of "
             "being dropped, and copied back when they resume")


def _policy(rc, s, n: Notes, cb: dict, host_memory_gb: float | None = None) -> None:
    e = rc.engine
    if e.policy in ("none", "recompute"):
        cb["cpu_offload_space"] = 0.0
        n.add("exact", "engine.policy", "cpu_offload_space", 0.0,
              "0 makes an evicted request drop its KV and prefill again later (recompute)")
        return
    if e.policy == "flexgen":
        n.add("unsupported", "engine.policy", "", "flexgen", "no static share of the KV cache on the host")
        return
    setting = "engine.policy" if e.policy == "vllm-swap" else "engine.swap_budget_blocks"
    run = e.host_blocks(s.gpu_blocks, s.block_bytes) if not (e.budgeted and e.swap_budget_blocks == 0) else 0
    tier = size_tier(run, s.gpu_blocks, s.block_bytes, e.hardware, host_memory_gb) if run else None
    if tier is not None:
        cb["cpu_offload_space"] = sig(tier.gib)
    why = (f"GiB: {tier.why}. What it does: {TIER_DOES}" if tier is not None else
           "size unknown: set num_host_blocks or num_gpu_blocks" if run is None else "budget 0: no host tier")
    n.add("approximate", setting, "cpu_offload_space", cb.get("cpu_offload_space"), why)
    if e.policy == "pie":
        n.add("unsupported", "engine.policy", "", "pie",
              "host-resident KV of running requests (transformers' offloaded DynamicCache moves whole layers "
              "each step and does not work with continuous batching)")


def _snippet(model_id: str, model_kwargs: dict, cb: dict, max_model_len: int | None) -> str:
    kw = ", ".join(f"{k}={json.dumps(v)}" for k, v in model_kwargs.items())
    cbs = ",\n    ".join(f"{k}={_py(v)}" for k, v in cb.items())
    offload = ""
    if cb.get("cpu_offload_space"):
        offload = ("if device == \"cpu\":  # cpu_offload_space is pinned host memory, which needs an accelerator\n"
                   "    raise SystemExit(\"cpu_offload_space > 0 needs an accelerator (CUDA) for pinned host "
                   "memory; set it to 0.0 to run on the CPU\")\n")
    return (
        "# transformers 5.24 continuous batching\n"
        "import torch\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer, ContinuousBatchingConfig, GenerationConfig\n\n"
        "device = \"cuda\" if torch.cuda.is_available() else \"cpu\"\n"
        f"{offload}"
        f"model = AutoModelForCausalLM.from_pretrained({json.dumps(model_id)}, {kw}, device_map=device)\n"
        f"tokenizer = AutoTokenizer.from_pretrained({json.dumps(model_id)})\n"
        f"prompts = {json.dumps(list(EXAMPLE_PROMPTS))}\n"
        "prompts_token_ids = [tokenizer(p).input_ids for p in prompts]\n"
        + (f"max_new_tokens = {MAX_NEW_TOKENS}\n" if max_model_len is None else
           f"max_new_tokens = min({MAX_NEW_TOKENS}, {max_model_len} - max(map(len, prompts_token_ids)))  "
           "# max_model_len\n")
        + f"cb_config = ContinuousBatchingConfig(\n    {cbs},\n)\n"
        "outputs = model.generate_batch(prompts_token_ids, generation_config=GenerationConfig(\n"
        "    max_new_tokens=max_new_tokens, do_sample=False), continuous_batching_config=cb_config)\n"
        "for request_id, output in outputs.items():\n"
        "    print(request_id, tokenizer.decode(output.generated_tokens))\n")


def _py(v: Any) -> str:
    return repr(v)
