"""The export of a tuned config (`pie_lab.tune`) to the engine it was tuned against: the model, plus
only the knobs that earned their place, each with its evidence; everything else is left at the
engine's own defaults and listed as such. With no earned knob, the command is the model alone.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..config_io import RunConfig
from ..model_spec import spec_from_model
from .base import Note, Translation, shell, sig, sizes
from .host_tier import size_tier

# knob -> the target's flag (or key) for it
FLAGS = {
    "vllm": {"max_num_seqs": "--max-num-seqs", "max_num_batched_tokens": "--max-num-batched-tokens",
             "chunked_prefill": "--enable-chunked-prefill", "block_size": "--block-size",
             "gpu_share": "--gpu-memory-utilization", "host_tier": "--kv-offloading-size"},
    "sglang": {"max_num_seqs": "--max-running-requests", "max_num_batched_tokens": "--chunked-prefill-size",
               "chunked_prefill": "--chunked-prefill-size", "block_size": "--page-size",
               "gpu_share": "--mem-fraction-static", "host_tier": "--hicache-ratio"},
    "transformers": {"max_num_seqs": "max_requests_per_batch", "max_num_batched_tokens": "max_batch_tokens",
                     "chunked_prefill": "", "block_size": "page_size", "gpu_share": "max_memory_percent",
                     "host_tier": "cpu_offload_space"},
}


def tuned_translation(rc: RunConfig, to: str, *, model_id: str | None = None,
                      host_memory_gb: float | None = None) -> Translation:
    t = rc.provenance.tuning
    exp = t["export"]
    s = sizes(rc, None, model_id)
    earned: Mapping[str, Any] = exp["earned"]
    flags: dict[str, Any] = {}
    exact, approx = [], []
    for knob, ev in earned.items():
        why = (f"predicted goodput {ev['goodput_with']:.4g} req/s with {ev['value']}, {ev['goodput_without']:.4g} "
               f"with the default {ev['default']}")
        if knob == "host_tier":
            note = _host_tier(rc, to, exp, flags, why, host_memory_gb)
            approx.append(note)
            continue
        value = ev["value"]
        if to == "vllm" and knob == "chunked_prefill":
            flags["--disable-chunked-prefill"] = True
            context = spec_from_model(rc.model).max_position_embeddings
            mnbt = exp["point"]["max_num_batched_tokens"]
            if mnbt < context:
                flags["--max-model-len"] = mnbt
                why += f"; --max-model-len {mnbt}: vLLM without chunked prefill needs max_num_batched_tokens >= it"
        elif to == "sglang" and knob in ("chunked_prefill", "max_num_batched_tokens"):
            page = exp["point"]["block_size"] if "block_size" in earned else t["defaults"]["block_size"]
            on = earned.get("chunked_prefill", {}).get("value", True)
            mnbt = exp["point"]["max_num_batched_tokens"]
            flags["--chunked-prefill-size"] = max(page, mnbt // page * page) if on else -1
        elif knob == "chunked_prefill":          # transformers always splits long prompts
            continue
        elif to == "transformers" and knob == "gpu_share":
            flags["max_memory_percent"] = value
            why += ("; transformers takes this share of the free memory after the weights, the search took it of "
                    "all GPU memory (vLLM's meaning): approximate")
        else:
            flags[FLAGS[to][knob]] = value
        flag = "--disable-chunked-prefill" if to == "vllm" and knob == "chunked_prefill" else FLAGS[to][knob]
        exact.append(Note(f"tuned.{knob}", flag, value, why))
    left = tuple(Note(f"tuned.{k}", FLAGS[to].get(k, ""), v["value"], _left_why(v, t["margin"]))
                 for k, v in exp["left_at_default"].items())
    preface = (f"tuned for {t['engine']} on {rc.engine.hardware} ({t['gpu_class_rule']}), {t['trials']} trials, "
               f"seed {t['seed']}, SLO {t['slo']}",
               f"predicted goodput: {exp['goodput']:.4g} req/s with this command, {exp['baseline_goodput']:.4g} "
               f"with no flags ({_gain(exp)}); {exp['reason']}",
               f"sim calibration: {t['calibration']}")
    if to == "transformers" and spec_from_model(rc.model).is_opt:
        preface += ("warning: transformers 5.24's continuous batching does not run OPT models (its attention asks "
                    "PagedAttentionCache for get_seq_length); the settings apply to Llama-family models",)
    return _build(to, s.model_id, flags, tuple(exact), tuple(approx), left, preface, rc)


def _host_tier(rc, to, exp, flags, why, host_memory_gb) -> Note:
    spec = spec_from_model(rc.model)
    block = spec.kv_block_bytes(exp["block_size"], rc.engine.dtype)
    tier = size_tier(exp["host_blocks"], exp["gpu_blocks"], block, rc.engine.hardware, host_memory_gb)
    if to == "vllm":
        from .vllm import TIER_DOES
        flags["--kv-offloading-size"] = sig(tier.gib)
        flags["--kv-offloading-backend"] = "native"
        return Note("tuned.host_tier", "--kv-offloading-size", flags["--kv-offloading-size"],
                    f"{why}; GiB: {tier.why}. What it does: {TIER_DOES}")
    from .transformers_cb import TIER_DOES
    flags["cpu_offload_space"] = sig(tier.gib)
    return Note("tuned.host_tier", "cpu_offload_space", flags["cpu_offload_space"],
                f"{why}; GiB: {tier.why}. What it does: {TIER_DOES}")


def _left_why(v: Mapping[str, Any], margin: float) -> str:
    if "tuned" not in v:
        return "the search's best point uses the default"
    alone = v["goodput_with"] > 0 and v["goodput_with"] >= (1 + margin) * v["goodput_without"]
    return (f"tuned {v['tuned']} predicted {v['goodput_with']:.4g} req/s against {v['goodput_without']:.4g} with "
            "the default: " + ("by the margin alone, but defaults plus the earned knobs did not beat the defaults by it"
                               if alone else "not by the margin"))


def _gain(exp) -> str:
    base = exp["baseline_goodput"]
    return f"{exp['goodput'] / base:.2f}x" if base > 0 else "the defaults meet the SLO for no request"


def _build(to, model_id, flags, exact, approx, left, preface, rc) -> Translation:
    if to == "transformers":
        from .transformers_cb import ATTN_IMPLEMENTATION, _snippet
        kwargs = {"dtype": rc.engine.dtype, "attn_implementation": ATTN_IMPLEMENTATION}
        settings = {"model": model_id, "from_pretrained": kwargs, "continuous_batching_config": dict(flags)}
        return Translation("transformers", _snippet(model_id, kwargs, dict(flags), None), settings, exact, approx,
                           (), (), left, preface)
    argv = ["vllm", "serve", model_id] if to == "vllm" else ["python", "-m", "sglang.launch_server",
                                                              "--model-path", model_id]
    for flag, value in flags.items():
        argv += [flag] if value is True else [flag, str(value)]
    settings = {"model" if to == "vllm" else "--model-path": model_id, **flags}
    return Translation(to, shell(argv), settings, exact, approx, (), tuple(argv), left, preface)
