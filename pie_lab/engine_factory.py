"""Build an engine: load the executor, size the two KV pools, hand both to the core's `Engine`.

The one place that knows both the core and the executors (the core imports no executor).
"""
from __future__ import annotations

from typing import Any

from .config import EngineConfig
from .core.engine import Engine
from .errors import ConfigError
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
    """(GPU blocks, host blocks): GPU from num_gpu_blocks, else gpu_kv_limit_gb, else the
    executor's default; host from `EngineConfig.host_blocks`."""
    block_bytes = ex.spec.kv_block_bytes(config.block_size, config.dtype)
    if config.num_gpu_blocks is not None:
        gpu = config.num_gpu_blocks
    elif config.gpu_kv_limit_gb is not None:
        gpu = int(config.gpu_kv_limit_gb * 2**30 // block_bytes)
        if gpu < 1:
            raise ConfigError(f"gpu_kv_limit_gb={config.gpu_kv_limit_gb} holds no KV block "
                              f"({block_bytes} bytes each); allowed: >= {block_bytes / 2**30:.3g}")
    else:
        gpu = ex.default_num_gpu_blocks(config)
    return gpu, config.host_blocks(gpu)
