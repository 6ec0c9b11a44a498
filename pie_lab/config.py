"""Engine configuration: one frozen, validated dataclass. Every live knob has a field here."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace, asdict
from typing import Any

from .errors import ConfigError, check_choice, check_float, check_int

POLICIES = ("none", "recompute", "pie", "vllm-swap", "flexgen")
PREEMPTION_MODES = ("recompute", "swap")
EXECUTORS = ("cpu", "cuda", "sim")
DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class ControllerConfig:
    """Adaptive expansion: grow the swap budget while stalls stay under `target_overhead`."""

    enabled: bool = False
    target_overhead: float = 0.03     # allowed stall time / iteration time
    warmup_iterations: int = 3        # iterations observed before the first decision
    grow_factor: float = 1.5          # multiplicative growth while there is headroom
    min_step_blocks: int = 1
    backoff_factor: float = 0.5       # how far to pull back toward the last safe budget on a stall
    hysteresis: float = 0.5           # grow only while overhead < hysteresis * target
    window: int = 4                   # iterations averaged per decision
    max_budget_blocks: int | None = None

    def __post_init__(self):
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"controller.enabled must be true or false, got {self.enabled!r}")
        check_float("controller.target_overhead", self.target_overhead, 0.0, 1.0, lo_open=True)
        check_int("controller.warmup_iterations", self.warmup_iterations, 0, 10_000)
        check_float("controller.grow_factor", self.grow_factor, 1.0, 16.0, lo_open=True)
        check_int("controller.min_step_blocks", self.min_step_blocks, 1)
        check_float("controller.backoff_factor", self.backoff_factor, 0.0, 1.0, lo_open=True)
        check_float("controller.hysteresis", self.hysteresis, 0.0, 1.0, lo_open=True)
        check_int("controller.window", self.window, 1, 1000)
        if self.max_budget_blocks is not None:
            check_int("controller.max_budget_blocks", self.max_budget_blocks, 0)


@dataclass(frozen=True)
class EngineConfig:
    """Everything that shapes one engine. Sizes are in blocks unless the name says otherwise.

    num_gpu_blocks: KV blocks in the device tier. None: derived from gpu_kv_limit_gb, else the
    executor's default (cuda: free memory after weights; cpu/sim: enough for the batch limits).
    num_host_blocks: capacity of the host tier (swap budget and vllm-swap space share it).
    swap_budget_blocks: host-resident KV blocks of running sequences (policy "pie").
    """

    block_size: int = 16
    num_gpu_blocks: int | None = None
    gpu_kv_limit_gb: float | None = None
    num_host_blocks: int | None = None
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 2048
    max_model_len: int | None = None
    chunked_prefill: bool = False
    policy: str = "none"
    preemption_mode: str | None = None   # None: "swap" for vllm-swap, else "recompute"
    swap_budget_blocks: int = 0
    prefetch_depth: int = 2            # staging slots; 1 serialises copy and compute
    flexgen_fraction: float = 0.0
    link_bandwidth_gbps: float | None = None   # None: the executor's own (sim: the hardware preset)
    link_latency_us: float | None = None
    dtype: str = "float32"
    seed: int = 0
    hardware: str = "H200"
    controller: ControllerConfig = field(default_factory=ControllerConfig)

    def __post_init__(self):
        check_int("block_size", self.block_size, 1, 1024)
        if self.num_gpu_blocks is not None:
            check_int("num_gpu_blocks", self.num_gpu_blocks, 1)
        if self.gpu_kv_limit_gb is not None:
            check_float("gpu_kv_limit_gb", self.gpu_kv_limit_gb, 0.0, 1e6, lo_open=True)
        if self.num_host_blocks is not None:
            check_int("num_host_blocks", self.num_host_blocks, 0)
        check_int("max_num_seqs", self.max_num_seqs, 1, 65536)
        check_int("max_num_batched_tokens", self.max_num_batched_tokens, 1)
        if self.max_model_len is not None:
            check_int("max_model_len", self.max_model_len, 1)
        if not isinstance(self.chunked_prefill, bool):
            raise ConfigError(f"chunked_prefill must be true or false, got {self.chunked_prefill!r}")
        check_choice("policy", self.policy, POLICIES)
        if self.preemption_mode is not None:
            check_choice("preemption_mode", self.preemption_mode, PREEMPTION_MODES)
        check_int("swap_budget_blocks", self.swap_budget_blocks, 0)
        check_int("prefetch_depth", self.prefetch_depth, 1, 1024)
        check_float("flexgen_fraction", self.flexgen_fraction, 0.0, 1.0)
        if self.link_bandwidth_gbps is not None:
            check_float("link_bandwidth_gbps", self.link_bandwidth_gbps, 0.0, 1e5, lo_open=True)
        if self.link_latency_us is not None:
            check_float("link_latency_us", self.link_latency_us, 0.0, 1e6)
        check_choice("dtype", self.dtype, DTYPES)
        check_int("seed", self.seed, 0)
        if isinstance(self.controller, dict):
            object.__setattr__(self, "controller", ControllerConfig(**self.controller))
        if not isinstance(self.controller, ControllerConfig):
            raise ConfigError(f"controller must be a ControllerConfig or a dict, got {self.controller!r}")

    @property
    def swap_preemption(self) -> bool:
        """Preempted sequences go to the host swap space (when it has room) instead of being recomputed."""
        mode = self.preemption_mode or ("swap" if self.policy == "vllm-swap" else "recompute")
        return mode == "swap"

    def replace(self, **changes: Any) -> "EngineConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_options(cls, **options: Any) -> "EngineConfig":
        unknown = set(options) - set(cls.field_names())
        if unknown:
            raise ConfigError(f"unknown engine option(s) {', '.join(sorted(unknown))}; "
                              f"allowed: {', '.join(cls.field_names())}")
        return cls(**options)
