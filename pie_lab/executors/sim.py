"""The sim executor: no tensors; the cost model times each plan and a virtual clock keeps time.

Tokens are pseudo-random functions of (seed, seq_id, position), never an end-of-sequence or
stop id, so every request runs to max_tokens. With `replay` (StepOutputs recorded from a real
run, indexed by step_id) the recorded tokens and timings are returned instead, so the engine
makes the same decisions as in that run.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..config import EngineConfig
from ..core.plan import StepOutput, StepPlan, StepTiming
from ..errors import ConfigError, EngineError
from ..model_spec import spec_from_model
from ..sim.cost_model import CostModel, Prefetch, StepShape
from ..sim.hardware import Hardware, resolve_hardware
from .base import ExecutorBase, MemoryAvailable, VirtualClock

GPU_MEMORY_HEADROOM = 0.10          # of GPU memory, kept free for activations and the allocator
FIRST_SAFE_TOKEN_ID = 3             # ids 0-2 are pad/bos/eos in the supported families
_MASK = (1 << 64) - 1
_GOLDEN, _MUL1, _MUL2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB     # splitmix64's
_SPLITMIX_U64 = tuple(np.uint64(c) for c in (_GOLDEN, _MUL1, _MUL2, 30, 27, 31))


def _mix_np(x: np.ndarray) -> np.ndarray:
    """_mix on a uint64 array, in place (wrapping arithmetic)."""
    golden, mul1, mul2, s30, s27, s31 = _SPLITMIX_U64
    x += golden
    x ^= x >> s30
    x *= mul1
    x ^= x >> s27
    x *= mul2
    x ^= x >> s31
    return x


def _mix(x: int) -> int:
    """splitmix64 finaliser: a well-spread 64-bit hash of x."""
    x = (x + _GOLDEN) & _MASK
    x = ((x ^ (x >> 30)) * _MUL1) & _MASK
    x = ((x ^ (x >> 27)) * _MUL2) & _MASK
    return x ^ (x >> 31)


class SimExecutor(ExecutorBase):
    name = "sim"
    emulated_link = True
    summarised_plans = True         # times a step from its sums, samples from (seq_id, position)
    decode_runs = True

    def __init__(self, model: Any, config: EngineConfig, hardware: "str | Hardware | None" = None,
                 replay: "Sequence[StepOutput] | Mapping[int, StepOutput] | None" = None):
        self.config = config
        self.spec = spec_from_model(model)
        self.hardware = resolve_hardware(hardware, config.hardware)
        self.cost_model = CostModel(self.spec, self.hardware, config.dtype, config.block_size,
                                    config.link_bandwidth_gbps, config.link_latency_us, config.host_attention_gbps,
                                    config.host_split)
        self.clock = VirtualClock()
        self.replay = replay
        if replay is not None:                      # the recorded run's steps, one plan each
            self.summarised_plans = self.decode_runs = False
        eos = self.spec.hf_config.get("eos_token_id")
        eos_ids = eos if isinstance(eos, (list, tuple)) else ([] if eos is None else [eos])
        self._forbidden = frozenset(range(FIRST_SAFE_TOKEN_ID)) | frozenset(int(e) for e in eos_ids)
        self._forbidden_ids = [np.uint64(t) for t in sorted(self._forbidden) if t >= FIRST_SAFE_TOKEN_ID]
        self._span = self.spec.vocab_size - FIRST_SAFE_TOKEN_ID
        self._seed_key = _mix(config.seed)          # a token is _mix(_mix(seed key ^ seq_id) ^ position)
        if self._span <= len(self._forbidden):
            raise ConfigError(f"vocab_size={self.spec.vocab_size} is too small for the sim executor's token ids")
        self.num_gpu_blocks: int | None = None
        self.num_host_blocks: int | None = None
        self._last_stream = None                    # the StreamPlan the tail prefetch followed
        self._prefetch: Prefetch | None = None      # relative to the previous step's end
        self._last_end = 0.0
        self.closed = False

    # -- sizing --------------------------------------------------------------------------------
    def default_num_gpu_blocks(self, config: EngineConfig) -> int:
        hw = self.hardware if config.hardware == self.config.hardware else resolve_hardware(None, config.hardware)
        cm = CostModel(self.spec, hw, config.dtype, config.block_size)
        free = hw.gpu_memory_bytes * (1 - GPU_MEMORY_HEADROOM) - cm.weight_bytes
        block = self.spec.kv_block_bytes(config.block_size, config.dtype)
        if free < block:
            raise ConfigError(f"{self.spec.name} in {config.dtype} needs {cm.weight_bytes / 2**30:.1f} GiB of weights; "
                              f"{hw.name} has {hw.gpu_memory_gib} GiB ({GPU_MEMORY_HEADROOM:.0%} kept free): "
                              "no room for KV blocks; use a smaller model, dtype or a larger preset")
        return int(free // block)

    def memory_available(self) -> MemoryAvailable:
        """The preset's GPU memory after weights (modelled); the host tier is modelled without a bound."""
        free = self.hardware.gpu_memory_bytes * (1 - GPU_MEMORY_HEADROOM) - self.cost_model.weight_bytes
        return MemoryAvailable(int(free), None, f"{self.hardware.name} GPU memory (modelled)", "host memory")

    def initialize(self, num_gpu_blocks: int, num_host_blocks: int) -> None:
        self.num_gpu_blocks, self.num_host_blocks = num_gpu_blocks, num_host_blocks

    # -- running -------------------------------------------------------------------------------
    def execute(self, plan: StepPlan) -> StepOutput:
        if self.closed:
            raise EngineError("the sim executor is closed")
        if self.num_gpu_blocks is None:
            raise EngineError("initialize() must be called before execute()")
        if self.replay is not None:
            out = self._replayed(plan)
            self._advance(out.timing, None)
            return out
        return StepOutput(self._tokens(plan), self.time_step(plan))

    def time_step(self, plan: StepPlan, shape: StepShape | None = None) -> StepTiming:
        """Model the step (its sequences summed up in `shape`, default the plan's), advance the
        clock by its duration and keep its tail prefetch for the next step."""
        prestaged, prefetch = self._prestaged(plan)
        timing = self.cost_model.step_timing(plan, prestaged, prefetch, shape)
        self._advance(timing, plan)
        return timing

    def time_decode_step(self, plan: StepPlan) -> StepTiming:
        """A decode run's step (core/decode_run.py), timed from its summary: `time_step` without sampling."""
        if self.closed:
            raise EngineError("the sim executor is closed")
        return self.time_step(plan)

    def _advance(self, timing: StepTiming, plan: StepPlan | None) -> None:
        self.clock.advance(timing.duration)
        self._last_end = self.clock.now()
        self._prefetch = None if plan is None else self.cost_model.tail_prefetch(timing, plan)
        self._last_stream = plan.stream if self._prefetch is not None else None

    def _prestaged(self, plan: StepPlan) -> tuple[int, Prefetch | None]:
        """Layers < depth were prefetched in the previous step's tail if this step's staged set
        keeps the previous depth; blocks new since then are copied now."""
        stream = plan.stream
        if (stream is None or not stream.num_blocks or self._prefetch is None
                or self._last_stream is None or stream.depth != self._last_stream.depth):
            return 0, None
        idle = self.clock.now() - self._last_end
        prefetch = self._prefetch.shifted(-idle) if idle else self._prefetch    # x + -0.0 is x: no shift
        return len(prefetch.end), prefetch

    def token_for(self, seq_id: int, position: int, avoid: Sequence[int] = ()) -> int:
        """The token the sim 'samples' for seq_id at `position`; never an eos, special or avoided id."""
        x = _mix(_mix(self._seed_key ^ (seq_id & _MASK)) ^ position)
        for _ in range(100_000):
            tok = FIRST_SAFE_TOKEN_ID + x % self._span
            if tok not in self._forbidden and tok not in avoid:
                return tok
            x = _mix(x)
        raise EngineError(f"sequence {seq_id}: stop_token_ids leave the sim no token to produce")

    def _tokens(self, plan: StepPlan) -> dict[int, int]:
        sm = plan.summary
        ids, pos, stops = sm.sample_ids, sm.sample_positions, sm.stop_ids
        if not ids:
            return {}
        return dict(zip(ids, self.tokens_at(np.array(ids, dtype=np.int64), np.array(pos, dtype=np.int64),
                                            stops if any(stops) else None)))

    def tokens_at(self, seq_ids: np.ndarray, positions: np.ndarray,
                  stop_ids: Sequence[Sequence[int]] | None = None) -> list[int]:
        """token_for(seq_ids[i], positions[i], stop_ids[i]) for every i (None: no stop ids),
        vectorised: the first candidate in numpy, the rare rejected one again in Python."""
        x = seq_ids.astype(np.uint64)              # a new array (seq_id & _MASK), mixed in place
        x ^= np.uint64(self._seed_key)
        x = _mix_np(x)
        x ^= positions.astype(np.uint64)
        cand = _mix_np(x)
        cand %= np.uint64(self._span)
        cand += np.uint64(FIRST_SAFE_TOKEN_ID)
        toks = cand.tolist()
        redo = set()
        for bad in self._forbidden_ids:            # a candidate is >= FIRST_SAFE_TOKEN_ID: only eos ids above it
            redo.update(np.flatnonzero(cand == bad).tolist())
        if stop_ids is not None:
            redo.update(i for i, stops in enumerate(stop_ids) if stops and toks[i] in stops)
        for i in redo:
            toks[i] = self.token_for(int(seq_ids[i]), int(positions[i]), stop_ids[i] if stop_ids is not None else ())
        return toks

    def _replayed(self, plan: StepPlan) -> StepOutput:
        try:
            out = self.replay[plan.step_id]
        except (IndexError, KeyError):
            raise EngineError(f"replay has no step {plan.step_id} (recorded steps: {len(self.replay)}); "
                              "the engine diverged from the recorded run or ran longer") from None
        missing = [s.seq_id for s in plan.seqs if s.sample and s.seq_id not in out.token_ids]
        if missing:
            raise EngineError(f"replay step {plan.step_id} has no token for sequence(s) {missing}; "
                              "the engine diverged from the recorded run")
        return out

    @property
    def link(self) -> tuple[float, float]:
        cm = self.cost_model
        return (cm.link_bandwidth_gbps or self.hardware.h2d_gbps,
                self.hardware.link_latency_us if cm.link_latency_us is None else cm.link_latency_us)

    def set_link(self, bandwidth_gbps: float, latency_us: float) -> None:
        self.cost_model = self.cost_model.with_link(bandwidth_gbps, latency_us)

    def recover(self) -> None:
        """After a failed step: nothing prefetched for the next step."""
        self._prefetch, self._last_stream = None, None

    def set_host_attention(self, gbps: float | None) -> None:
        """Policy hybrid: the host's attention rate (None: the preset's cores and memory)."""
        self.cost_model = self.cost_model.with_host_attention(gbps)

    def close(self) -> None:
        self.closed = True
