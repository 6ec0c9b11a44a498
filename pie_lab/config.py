"""Engine configuration: one frozen, validated dataclass. Every live knob has a field here.

Each knob has one owner: its default is the field's, its range is in `FIELD_RANGES` (checked by
`check_field`, the only range check of an engine setting), `check_live` is the only check of a
change to a running engine, and `EngineConfig.host_blocks` the only default of the host pool.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace, asdict
from typing import Any, ClassVar, Mapping, Sequence

from .errors import ConfigError, check_choice, check_float, check_int
from .policy_traits import POLICY_TRAITS, PolicyTraits

POLICIES = tuple(POLICY_TRAITS)
PREEMPTION_MODES = ("recompute", "swap")
OFFLOAD_MODES = {           # policies pie and hybrid: when KV blocks move to the host tier
    "on-demand": "only as many as the next step would otherwise lack GPU blocks for (the default)",
    "eager": "fill the swap budget at once, whether or not the GPU pool is short",
}
SPLIT_MODES = ("auto", "on", "off")     # policy hybrid's within-layer split (core/host_split.py)
EXECUTORS = ("cpu", "cuda", "sim")
DTYPES = ("float32", "float16", "bfloat16")
DEFAULT_HOST_SHARE = 0.5     # a default host tier takes at most this share of the host memory available
LIVE_KNOBS = ("swap_budget_blocks", "prefetch_depth", "max_num_seqs", "max_num_batched_tokens",
              "num_gpu_blocks", "link_bandwidth_gbps", "link_latency_us", "flexgen_fraction", "controller",
              "host_compute_blocks", "host_attention_gbps", "offload")

# name: (type, lo, hi, lo_open); None = unbounded. Optional fields may also be None.
FIELD_RANGES: dict[str, tuple] = {
    "block_size": (int, 1, 1024, False),
    "num_gpu_blocks": (int, 1, None, False),
    "gpu_kv_limit_gb": (float, 0.0, 1e6, True),
    "num_host_blocks": (int, 0, None, False),
    "host_kv_limit_gb": (float, 0.0, 1e6, False),
    "max_num_seqs": (int, 1, 65536, False),
    "max_num_batched_tokens": (int, 1, None, False),
    "max_model_len": (int, 1, None, False),
    "swap_budget_blocks": (int, 0, None, False),
    "prefetch_depth": (int, 1, 1024, False),
    "flexgen_fraction": (float, 0.0, 1.0, False),
    "host_compute_blocks": (int, 0, None, False),
    "host_attention_gbps": (float, 0.0, 1e5, True),
    "link_bandwidth_gbps": (float, 0.0, 1e5, True),
    "link_latency_us": (float, 0.0, 1e6, False),
    "seed": (int, 0, None, False),
}


def check_field(name: str, value: Any, hi: float | None = None) -> Any:
    """`value` within FIELD_RANGES[name]; `hi` narrows the top (an engine's pool capacity)."""
    kind, lo, top, lo_open = FIELD_RANGES[name]
    hi = top if hi is None else hi
    if kind is int:
        return check_int(name, value, lo, hi)
    return check_float(name, value, lo, hi, lo_open=lo_open)


def check_live(changes: Mapping[str, Any], extra: Sequence[str] = ()) -> None:
    """A change to a running engine names only live knobs (or `extra`, a runner's own knobs)."""
    allowed = (*LIVE_KNOBS, *extra)
    names = set(changes) - set(allowed)
    unknown = sorted(names - {f.name for f in fields(EngineConfig)})
    if unknown:
        raise ConfigError(f"unknown knob(s) {', '.join(unknown)}; live knobs: {', '.join(allowed)}")
    if names:
        raise ConfigError(f"engine.{', engine.'.join(sorted(names))} cannot change while running; live knobs: "
                          f"{', '.join(allowed)} (build a new engine for the rest)")


@dataclass(frozen=True)
class ControllerConfig:
    """Adaptive expansion: grow the swap budget while stalls stay under `target_overhead`.

    Policy hybrid: the same rules size the host-computed share from the device's waits for the
    host's attention partials (`target_overhead` applies to each share on its own)."""

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
    num_host_blocks: capacity of the host tier (swap budget and vllm-swap space share it). None:
    derived from host_kv_limit_gb, else twice the device tier, bounded by the host memory available.
    The budgets below are budgets within the host tier, never a reason to allocate.
    swap_budget_blocks: host-resident KV blocks of running sequences streamed to the device each
    layer (policies "pie" and "hybrid").
    host_compute_blocks: policy "hybrid": host-resident blocks of running sequences whose decode
    attention the host CPU computes over host memory, merged with the device's by log-sum-exp.
    host_attention_gbps: the host's attention rate over host KV (GB of KV per second); None: the
    executor's own (sim: the hardware preset's cores and memory; cpu: a paced default).
    host_split: policy "hybrid": whether a decode layer's rows without a host-computed share run
    their output projection and MLP while the host attends for the others ("auto": when the layer
    ends sooner, core/host_split.py; "on"; "off").
    offload: when policies "pie" and "hybrid" move blocks to the host: "on-demand" (default) only as
    many as the next step would otherwise lack GPU blocks for (the batch's next blocks and the
    queued requests it could start), so with GPU memory to spare pie makes none's decisions;
    "eager" fills the budget at once, streaming blocks no one needed moved.
    """

    block_size: int = 16
    num_gpu_blocks: int | None = None
    gpu_kv_limit_gb: float | None = None
    num_host_blocks: int | None = None
    host_kv_limit_gb: float | None = None
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 2048
    max_model_len: int | None = None
    chunked_prefill: bool = False
    policy: str = "none"
    preemption_mode: str | None = None   # None: "swap" where a host tier exists (vllm-swap, pie, hybrid), else "recompute"
    swap_budget_blocks: int = 0
    offload: str = "on-demand"
    prefetch_depth: int = 2            # staging slots; 1 serialises copy and compute
    flexgen_fraction: float = 0.0
    host_compute_blocks: int = 0
    host_attention_gbps: float | None = None
    host_split: str = "auto"
    link_bandwidth_gbps: float | None = None   # None: the executor's own (sim: the hardware preset)
    link_latency_us: float | None = None
    dtype: str = "float32"
    seed: int = 0
    hardware: str = "H200"
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    traits: ClassVar[PolicyTraits]     # the policy's (POLICY_TRAITS), set by __post_init__

    def __post_init__(self):
        for name in FIELD_RANGES:
            if getattr(self, name) is not None:
                check_field(name, getattr(self, name))
        if not isinstance(self.chunked_prefill, bool):
            raise ConfigError(f"chunked_prefill must be true or false, got {self.chunked_prefill!r}")
        check_choice("policy", self.policy, POLICIES)
        object.__setattr__(self, "traits", POLICY_TRAITS[self.policy])
        if self.preemption_mode is not None:
            check_choice("preemption_mode", self.preemption_mode, PREEMPTION_MODES)
        if self.offload not in OFFLOAD_MODES:
            raise ConfigError(f"offload={self.offload!r} is not supported; choose "
                              + "; ".join(f"{k!r}: {v}" for k, v in OFFLOAD_MODES.items()))
        check_choice("host_split", self.host_split, SPLIT_MODES)
        check_choice("dtype", self.dtype, DTYPES)
        if isinstance(self.controller, dict):
            object.__setattr__(self, "controller", ControllerConfig(**self.controller))
        if not isinstance(self.controller, ControllerConfig):
            raise ConfigError(f"controller must be a ControllerConfig or a dict, got {self.controller!r}")

    @property
    def budgeted(self) -> bool:
        """pie and hybrid: running sequences keep host-resident KV up to `host_budget_blocks`."""
        return self.traits.budgeted

    @property
    def host_budget_blocks(self) -> int:
        """Host-resident blocks the running batch may hold: the swap budget, plus hybrid's host share."""
        return self.swap_budget_blocks + (self.host_compute_blocks if self.traits.host_compute else 0)

    @property
    def swap_preemption(self) -> bool:
        """Preempted sequences go to the host swap space (when it has room) instead of being recomputed.
        By default the policies with a host tier swap: for pie and hybrid it beat recomputing on every
        preset, load and offload mode of `benchmarks/hybrid_targets.py` and in the named scenarios,
        but one (hybrid, memory-bound-gh200 on demand: 2% fewer tokens/s, lower latencies)."""
        mode = self.preemption_mode or ("swap" if self.traits.swaps else "recompute")
        return mode == "swap"

    def host_blocks(self, gpu_blocks: int | None, block_bytes: int | None = None,
                    allowance: int | None = None) -> int | None:
        """The host pool: num_host_blocks, else host_kv_limit_gb, else none where nothing ever goes
        to the host, else twice the GPU pool, at most DEFAULT_HOST_SHARE of `allowance` bytes (the
        host memory available); None while the GPU pool's (or, for host_kv_limit_gb, a block's)
        size is unknown. The swap budget is a budget within this pool, never a reason to make it larger."""
        if self.num_host_blocks is not None:
            return self.num_host_blocks
        if self.host_kv_limit_gb is not None:
            return None if block_bytes is None else int(self.host_kv_limit_gb * 2**30 // block_bytes)
        if not self.traits.host_tier and not self.swap_preemption:
            return 0
        if gpu_blocks is None:
            return None
        default = 2 * gpu_blocks
        if allowance is None or block_bytes is None:
            return default
        return min(default, int(DEFAULT_HOST_SHARE * max(0, allowance) // block_bytes))

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
