"""The executor protocol, clocks, and the registry that builds an executor by name.

An executor owns the model and the KV tensors. It runs a StepPlan and reports a StepOutput;
it never decides what to run. This module imports no torch.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from ..config import EngineConfig, EXECUTORS
from ..core.plan import StepOutput, StepPlan, StepTiming
from ..errors import ConfigError, EngineError, check_choice
from ..model_spec import ModelSpec


@dataclass(frozen=True)
class MemoryAvailable:
    """What an executor may allocate now. None: unbounded here (the sim models memory, allocates none)."""
    device: int | None
    host: int | None
    device_name: str = "GPU memory"
    host_name: str = "host memory"
    shared: bool = False          # device and host pools come out of the same memory (the cpu executor)


# Shares of the memory reported free that pools may take (the rest: activations, allocator, the OS).
DEVICE_SHARE = 0.9
HOST_SHARE = 0.9
PINNED_SHARE = 0.75               # page-locked memory cannot be swapped out: leave more to the OS


def mem_available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class Clock(Protocol):
    def now(self) -> float: ...
    def sleep_until(self, t: float) -> None: ...


class WallClock:
    def now(self) -> float:
        return time.perf_counter()

    def sleep_until(self, t: float) -> None:
        delay = t - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


class VirtualClock:
    """Simulated time: advanced by the sim executor's modelled step durations and by idle waits."""

    def __init__(self, start: float = 0.0):
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt

    def sleep_until(self, t: float) -> None:
        self.t = max(self.t, t)


@runtime_checkable
class Executor(Protocol):
    name: str
    spec: ModelSpec
    clock: Clock
    emulated_link: bool            # True where link timings are emulated or modelled, not measured
    link: tuple[float, float]      # the link in effect: (bandwidth GB/s, latency us)
    # what the engine may ask of it, read once when the engine is built:
    summarised_plans: bool         # takes StepPlan.summary instead of a SeqWork per sequence
    decode_runs: bool              # times decode steps from their sums (`time_decode_step`, `tokens_at`)

    def default_num_gpu_blocks(self, config: EngineConfig) -> int:
        """Device-tier KV blocks when the config gives neither num_gpu_blocks nor gpu_kv_limit_gb."""

    def memory_available(self) -> "MemoryAvailable":
        """Bytes the KV pools and the staging ring may take now, checked before each allocation."""

    def initialize(self, num_gpu_blocks: int, num_host_blocks: int) -> None:
        """Allocate the KV pools. Called once by the engine before the first step."""

    def execute(self, plan: StepPlan) -> StepOutput: ...

    def set_link(self, bandwidth_gbps: float, latency_us: float) -> None:
        """Change the (emulated or modelled) link; the cuda executor raises ConfigError."""

    def set_host_attention(self, gbps: float | None) -> None:
        """Policy hybrid: the host's attention rate over host KV (None: the executor's own)."""

    def recover(self) -> None:
        """After execute() raised: wait out or drop the failed step's copies and forget its prefetch."""

    def time_decode_step(self, plan: StepPlan) -> StepTiming:
        """decode_runs: time a decode run's step (and take the clock through it) from its summary
        (`BatchSummary.decoding`), its copies and its stream; it samples nothing."""

    def tokens_at(self, seq_ids: np.ndarray, positions: np.ndarray,
                  stop_ids: Sequence[Sequence[int]] | None = None) -> list[int]:
        """decode_runs: the tokens sampled for seq_ids[i] at positions[i] (stop_ids[i] avoided)."""

    def close(self) -> None: ...


class ExecutorBase:
    """What an executor need not do: the optional capabilities off, their methods no-ops or errors."""

    summarised_plans = False
    decode_runs = False

    def set_host_attention(self, gbps: float | None) -> None:
        """No host attention here: nothing to change."""

    def recover(self) -> None:
        """Nothing in flight outlives a step here."""

    def time_decode_step(self, plan: StepPlan) -> StepTiming:
        raise EngineError(f"executor {self.name!r} does not run decode runs (decode_runs is False)")

    def tokens_at(self, seq_ids, positions, stop_ids=None) -> list[int]:
        raise EngineError(f"executor {self.name!r} does not run decode runs (decode_runs is False)")

    def close(self) -> None:
        """Nothing to release."""


EXECUTOR_REGISTRY: dict[str, str] = {
    "cpu": "pie_lab.executors.cpu:CPUExecutor",
    "cuda": "pie_lab.executors.cuda:CUDAExecutor",
    "sim": "pie_lab.executors.sim:SimExecutor",
}


def create_executor(name: str, model: Any, config: EngineConfig, **kwargs: Any) -> Executor:
    """Build executor `name` for `model` (a named shape, a checkpoint folder, a PreTrainedModel, a ModelSpec)."""
    check_choice("executor", name, EXECUTORS)
    module_name, cls_name = EXECUTOR_REGISTRY[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise ConfigError(f"executor {name!r} is not available here: {exc}") from exc
    cls = getattr(module, cls_name)
    return getattr(cls, "load", cls)(model, config, **kwargs)
