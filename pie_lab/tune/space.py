"""The knobs deployments tune, their choices per target, and a point of the space as engine options.

A point is a dict of knob values (`KNOBS`): the target's batch limits, chunked prefill, block size,
GPU memory share and policy as the target names them, plus the host tier (a multiple of the GPU KV
pool) and, for pie and hybrid, the prefetch depth. `engine_options` turns a point into pie_lab
engine settings on top of the user's setup: the setup's GPU KV pool is what the target's default
share gives, scaled by what another share leaves for KV (`gpu_pool_bytes`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..config import EngineConfig
from ..errors import ConfigError
from ..model_spec import DTYPE_BYTES, spec_from_model
from ..sim.hardware import load_preset
from .defaults import TargetDefaults

GiB = 2**30
RUNTIME_RESERVE_GIB = 1.0      # as the exports assume (pie_lab/export/base.py)
MAX_GPU_SHARE = 0.95
# Policies each target can run itself; the others only pie_lab runs ("offload" is the target's own tier).
TARGET_POLICIES = {"vllm": ("recompute", "vllm-swap"), "sglang": ("recompute",), "transformers": ("recompute", "vllm-swap")}
OFFLOAD_POLICY = {"vllm": "vllm-swap", "transformers": "vllm-swap"}   # SGLang's HiCache serves prefix hits only
PIE_POLICIES = ("pie", "hybrid")
BLOCK_SIZES = {"vllm": (16, 32, 64), "sglang": (1, 16, 32, 64), "transformers": (64, 128, 256)}
SEQS = (16, 32, 64, 128, 256, 512, 1024, 2048)
TOKENS = (1024, 2048, 4096, 8192, 16384)
SHARES = (0.8, 0.85, 0.9, 0.95)
HOST_RATIOS = (1, 2, 4, 8)
DEPTHS = (1, 2, 3, 4)


@dataclass(frozen=True)
class SearchSpace:
    """Choices per knob for one target; `defaults` is the target's own point (the baseline)."""

    target: str
    defaults: Mapping[str, Any]
    choices: Mapping[str, tuple]

    @classmethod
    def for_target(cls, d: TargetDefaults, policies: tuple[str, ...] | None = None) -> "SearchSpace":
        v = dict(d.values, prefetch_depth=2)
        runnable = TARGET_POLICIES[d.target] + PIE_POLICIES
        pols = tuple(policies or runnable)
        bad = [p for p in pols if p not in runnable]
        if bad:
            raise ConfigError(f"policies {bad} cannot be tuned for {d.target}; allowed: {', '.join(runnable)}")
        ch = {"max_num_seqs": SEQS, "max_num_batched_tokens": TOKENS,
              "chunked_prefill": (True, False) if d.target != "transformers" else (True,),
              "block_size": BLOCK_SIZES[d.target], "gpu_share": SHARES, "policy": pols,
              "host_tier_ratio": HOST_RATIOS, "prefetch_depth": DEPTHS}
        ch = {k: tuple(sorted(set(c) | {v[k]}, key=_order)) if k != "policy" else c for k, c in ch.items()}
        ch["gpu_share"] = tuple(s for s in ch["gpu_share"] if s <= MAX_GPU_SHARE)
        return cls(d.target, v, ch)

    def suggest(self, trial) -> dict:
        """A point drawn by an Optuna trial. Every knob is drawn every time (so each trial has them all
        for the importance analysis); host tier and prefetch depth matter only where the policy uses them."""
        return {k: trial.suggest_categorical(k, list(c)) for k, c in self.choices.items()}

    def exportable(self, point: Mapping[str, Any]) -> bool:
        return point["policy"] in TARGET_POLICIES[self.target]

    def describe(self) -> dict:
        return {k: ", ".join(map(str, c)) for k, c in self.choices.items()}


def _order(x):
    return (0, x) if isinstance(x, (int, float)) and not isinstance(x, bool) else (1, str(x))


def gpu_pool_bytes(base: EngineConfig, model: str, default_share: float, share: float) -> float:
    """The GPU KV pool at `share`. What a share leaves for KV is share x GPU memory - weights - a
    runtime reserve; the setup's own pool (num_gpu_blocks or gpu_kv_limit_gb), if it gives one, is
    taken as the pool at `default_share` and scaled by the ratio of what the two shares leave."""
    spec = spec_from_model(model)
    mem = load_preset(base.hardware).gpu_memory_gib * GiB
    fixed = spec.num_params() * DTYPE_BYTES[base.dtype] + RUNTIME_RESERVE_GIB * GiB
    natural, natural0 = share * mem - fixed, default_share * mem - fixed
    if natural <= 0 or natural0 <= 0:
        raise ConfigError(f"gpu_share={min(share, default_share)} leaves no GPU memory for KV after the weights of "
                          f"{model} on {base.hardware}; allowed: a share above {fixed / mem:.3f}")
    if base.num_gpu_blocks is not None:
        pool0 = base.num_gpu_blocks * spec.kv_block_bytes(base.block_size, base.dtype)
    elif base.gpu_kv_limit_gb is not None:
        pool0 = base.gpu_kv_limit_gb * GiB
    else:
        return natural
    return pool0 * natural / natural0


def engine_options(point: Mapping[str, Any], base: EngineConfig, model: str, defaults: Mapping[str, Any],
                   host_limit_bytes: float) -> dict:
    """pie_lab engine settings for `point` on top of the user's `base` setup."""
    spec = spec_from_model(model)
    bs = point["block_size"]
    block = spec.kv_block_bytes(bs, base.dtype)
    pool = gpu_pool_bytes(base, model, defaults["gpu_share"], point["gpu_share"])
    gpu_blocks = max(1, int(pool // block))
    policy = point["policy"]
    host = 0
    if policy != "recompute":
        host = min(int(point["host_tier_ratio"] * gpu_blocks), int(host_limit_bytes // block))
    opts = {**base.to_dict(), "block_size": bs, "num_gpu_blocks": gpu_blocks, "gpu_kv_limit_gb": None,
            "num_host_blocks": host, "host_kv_limit_gb": None, "max_num_seqs": point["max_num_seqs"],
            "max_num_batched_tokens": point["max_num_batched_tokens"], "chunked_prefill": point["chunked_prefill"],
            "policy": policy, "preemption_mode": None, "swap_budget_blocks": 0, "host_compute_blocks": 0,
            "prefetch_depth": point["prefetch_depth"], "controller": {"enabled": False}}
    if policy == "pie":
        opts["swap_budget_blocks"] = host
    elif policy == "hybrid":
        opts["swap_budget_blocks"] = host // 2
        opts["host_compute_blocks"] = host - host // 2
    return opts


def baseline_config(model: str, target: str, base: EngineConfig) -> EngineConfig:
    """`target` at its own defaults on the user's setup `base` (hardware, dtype, GPU KV pool), as the sim
    runs it: the baseline of every tune result and export."""
    from .defaults import target_defaults
    d = target_defaults(target, base.hardware)
    point = dict(SearchSpace.for_target(d).defaults)
    return EngineConfig.from_options(**engine_options(point, base, model, d.values, 0.0))
