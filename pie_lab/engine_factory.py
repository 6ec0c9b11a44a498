"""Build an engine: load the executor, size the two KV pools, hand both to the core's `Engine`.

The one place that knows both the core and the executors (the core imports no executor).
"""
from __future__ import annotations

from typing import Any

from .config import EngineConfig
from .core.engine import Engine
from .errors import ConfigError, check_fits
from .executors.base import Executor, create_executor


def create_engine(model: Any, executor: str = "cpu", config: EngineConfig | None = None,
                  **options: Any) -> Engine:
    """An engine for `model` (a named shape, a checkpoint folder, a PreTrainedModel or a ModelSpec)
    on executor "cpu", "cuda" or "sim"; `options` are EngineConfig fields when no config is given."""
    config = config or EngineConfig.from_options(**options)
    return engine_on(create_executor(executor, model, config), config)


def engine_on(ex: Executor, config: EngineConfig) -> Engine:
    """An engine on an executor already built (`create_engine` loads one by name)."""
    gpu, host = pool_sizes(config, ex)
    ex.initialize(gpu, host)
    bandwidth, latency = ex.link
    config = config.replace(link_bandwidth_gbps=config.link_bandwidth_gbps or bandwidth,
                            link_latency_us=latency if config.link_latency_us is None else config.link_latency_us)
    return Engine(config, ex, gpu, host)


def pool_sizes(config: EngineConfig, ex: Executor) -> tuple[int, int]:
    """(GPU blocks, host blocks), each checked against the memory the executor may use before anything
    is allocated: the config's numbers, else from gpu_kv_limit_gb / host_kv_limit_gb, else the
    executor's default for the GPU and (when the policy uses one) a host tier of twice the GPU pool,
    at most a share of the host memory available. The swap budget must fit in the host tier."""
    block = ex.spec.kv_block_bytes(config.block_size, config.dtype)
    mem = ex.memory_available()
    if config.num_gpu_blocks is not None:
        gpu, knob = config.num_gpu_blocks, "num_gpu_blocks"
    elif config.gpu_kv_limit_gb is not None:
        gpu, knob = int(config.gpu_kv_limit_gb * 2**30 // block), "gpu_kv_limit_gb"
        if gpu < 1:
            raise ConfigError(f"gpu_kv_limit_gb={config.gpu_kv_limit_gb} holds no KV block "
                              f"({block} bytes each); allowed: >= {block / 2**30:.3g}")
    else:
        gpu, knob = ex.default_num_gpu_blocks(config), "num_gpu_blocks"
    value = config.gpu_kv_limit_gb if knob == "gpu_kv_limit_gb" else gpu
    check_fits(knob, value, gpu * block, mem.device, mem.device_name, _allowed(knob, mem.device, block))
    host_room = mem.host if mem.host is None or not mem.shared else mem.host - gpu * block
    host = config.host_blocks(gpu, block, host_room)
    knob = "host_kv_limit_gb" if config.num_host_blocks is None and config.host_kv_limit_gb is not None \
        else "num_host_blocks"
    value = config.host_kv_limit_gb if knob == "host_kv_limit_gb" else host
    check_fits(knob, value, host * block, host_room, mem.host_name, _allowed(knob, host_room, block))
    budget = config.host_budget_blocks
    if config.budgeted and budget > host:
        what = "swap_budget_blocks" + (" + host_compute_blocks" if config.traits.host_compute else "")
        raise ConfigError(f"{what}={budget} is more than the host tier holds ({host} blocks of {block} bytes); "
                          f"allowed: {what} <= {host}, or a larger num_host_blocks / host_kv_limit_gb (a budget "
                          "is a share of the host tier, never a reason to allocate)")
    return gpu, host


def _allowed(knob: str, available: int | None, block: int) -> str:
    if available is None:
        return ""
    if knob.endswith("_gb"):
        return f"{knob} <= {max(0, available) / 2**30:.3g}"
    return f"{knob} <= {max(0, available) // block} ({block} bytes a block)"
