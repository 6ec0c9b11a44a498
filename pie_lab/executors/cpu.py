"""cpu executor: the real model on the CPU, the "GPU" pool a bounded CPU tensor, and an emulated
host link (copies paced to a configured bandwidth, small ones inline, large ones on worker threads;
their CPU time reported per step as `link_cpu_time`). Labelled as emulated.
The streaming loop is TorchRunner's, the same the cuda executor runs.
"""
from __future__ import annotations

import math
import os
from typing import Any

import torch

from ..config import EngineConfig
from ..model import cpu_kernels
from ..model.linears import pack_linears
from .base import HOST_SHARE, MemoryAvailable, WallClock, mem_available_bytes
from .kv_store import KVStore
from .link import EmulatedStreams
from .torch_runner import TorchRunner


# The emulated link's default: an H200's pinned host-to-device rate over PCIe gen5 (pie-design.md, section 4).
DEFAULT_LINK_GBPS = 55.5
DEFAULT_LINK_LATENCY_US = 10.0
# Policy hybrid: the host's attention is paced like the link, by default to the H200 host's measured rate
# (torch CPU decode attention over host KV, 16 threads: 61-73 GB/s; data/hardware_presets.yaml).
DEFAULT_HOST_ATTENTION_GBPS = 65.6


class CPUExecutor(TorchRunner):
    name = "cpu"
    emulated_link = True

    def __init__(self, model, tokenizer, config: EngineConfig, threads: int | None = None):
        link = (config.link_bandwidth_gbps or DEFAULT_LINK_GBPS,
                DEFAULT_LINK_LATENCY_US if config.link_latency_us is None else config.link_latency_us)
        super().__init__(model, tokenizer, config, torch.device("cpu"), EmulatedStreams(*link))
        self.clock = WallClock()
        self.link = link
        self.threads = threads
        self.host_rate = config.host_attention_gbps or DEFAULT_HOST_ATTENTION_GBPS

    @classmethod
    def load(cls, model: Any, config: EngineConfig, threads: int | None = None) -> "CPUExecutor":
        from ..model.loader import load_model
        # Leave a core to the link threads: OpenMP workers spinning on every core stall them badly.
        # With no host pool (policy none or recompute) the link never copies: use every core.
        cores = os.cpu_count() or 2
        torch.set_num_threads(threads or (cores if config.host_blocks(None) == 0 else max(1, cores - 1)))
        decoder, tokenizer = load_model(model, dtype=config.dtype, device="cpu", seed=config.seed)
        pack_linears(decoder)
        cpu_kernels.load()
        return cls(decoder, tokenizer, config, threads)

    def default_num_gpu_blocks(self, config: EngineConfig) -> int:
        per_seq = math.ceil(min(self.spec.max_position_embeddings, 2048) / config.block_size)
        return max(64, config.max_num_seqs * per_seq // 4)

    def memory_available(self) -> MemoryAvailable:
        free = mem_available_bytes()
        room = None if free is None else int(free * HOST_SHARE)
        return MemoryAvailable(room, room, "RAM (the cpu executor's GPU pool)", "RAM", shared=True)

    def initialize(self, num_gpu_blocks: int, num_host_blocks: int) -> None:
        self.kv = KVStore(self.spec, self.config.block_size, self.config.dtype, self.device, pin_host=False)
        self.kv.allocate(num_gpu_blocks, num_host_blocks)

    def set_link(self, bandwidth_gbps: float, latency_us: float) -> None:
        self.link = (bandwidth_gbps, latency_us)
        self.streams.set(bandwidth_gbps, latency_us)

    def set_host_attention(self, gbps: float | None) -> None:
        super().set_host_attention(gbps or DEFAULT_HOST_ATTENTION_GBPS)
