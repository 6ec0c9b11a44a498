"""cuda executor: the real model on a GPU, a pinned host pool, a copy stream per direction, and CUDA
events around every layer's compute and copy (stall = time compute waited for a copy).

The streaming loop is TorchRunner's, the same the cpu executor runs; `CudaStreams` gives it CUDA
streams and events: a staging copy waits (on the copy stream) for the event "layer l - depth
finished" (its slot is free), the compute stream waits for "copy l landed" before layer l. Nothing
on the host side blocks until the step's tokens are read back. `cuda` is `torch.cuda`, or a
stand-in with the same few calls (tests run this code on the CPU with one).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..config import EngineConfig
from ..errors import ConfigError
from .base import DEVICE_SHARE, PINNED_SHARE, MemoryAvailable, WallClock, mem_available_bytes
from .kv_store import KVStore
from .torch_runner import TorchRunner


@dataclass
class StreamCopy:
    issued: Any       # events on the copy stream
    start: Any
    end: Any
    nbytes: int


class CudaStreams:
    emulated = False
    cpu_seconds = 0.0            # DMA engines copy; the host spends nothing

    def __init__(self, device: torch.device, cuda: Any = torch.cuda):
        self.cuda, self.device = cuda, device
        self.compute = cuda.current_stream(device)
        self.h2d = cuda.Stream(device)
        self.d2h = cuda.Stream(device)

    def _event(self):
        return self.cuda.Event(enable_timing=True)

    def mark(self):
        ev = self._event()
        ev.record(self.compute)
        return ev

    def seconds(self, a, b) -> float:
        return a.elapsed_time(b) / 1e3

    def blocking(self, run) -> int:
        return run()                            # on the compute stream, before what follows

    def offload(self, run, nbytes: int):
        self.d2h.wait_stream(self.compute)
        with self.cuda.stream(self.d2h):
            run()
            done = self._event()
            done.record(self.d2h)
        return done

    def fence(self) -> None:
        self.h2d.wait_stream(self.compute)

    def stage(self, run, nbytes: int, after) -> StreamCopy:
        issue, start, end = self._event(), self._event(), self._event()
        with self.cuda.stream(self.h2d):
            if after is not None:
                self.h2d.wait_event(after)
            issue.record(self.h2d)
            start.record(self.h2d)
            run()
            end.record(self.h2d)
        return StreamCopy(issue, start, end, nbytes)

    def wait(self, copies) -> None:
        for c in copies:
            self.compute.wait_event(c.end)

    def drain(self) -> None:
        self.h2d.synchronize()

    def settle(self, handle) -> None:
        handle.synchronize()

    def recover(self) -> None:
        self.cuda.synchronize(self.device)

    def close(self) -> None:
        pass


class CUDAExecutor(TorchRunner):
    name = "cuda"
    emulated_link = False

    def __init__(self, model, tokenizer, config: EngineConfig, device: torch.device, cuda: Any = torch.cuda):
        super().__init__(model, tokenizer, config, device, CudaStreams(device, cuda))
        self.clock = WallClock()

    @classmethod
    def load(cls, model: Any, config: EngineConfig, device: str = "cuda") -> "CUDAExecutor":
        if not torch.cuda.is_available():
            raise ConfigError("executor='cuda' needs a CUDA GPU and none is visible; use 'cpu' or 'sim'")
        from ..model.loader import load_model
        decoder, tokenizer = load_model(model, dtype=config.dtype, device=device, seed=config.seed)
        return cls(decoder, tokenizer, config, torch.device(device))

    def default_num_gpu_blocks(self, config: EngineConfig) -> int:
        free, _ = self.streams.cuda.mem_get_info(self.device)
        block = self.spec.kv_block_bytes(config.block_size, config.dtype)
        return max(1, int(free * 0.85 // block))

    def memory_available(self) -> MemoryAvailable:
        cuda = self.streams.cuda
        free, _ = cuda.mem_get_info(self.device)
        host = mem_available_bytes()
        return MemoryAvailable(int(free * DEVICE_SHARE), None if host is None else int(host * PINNED_SHARE),
                               f"GPU memory ({cuda.get_device_name(self.device)})", "pinned host memory")

    def initialize(self, num_gpu_blocks: int, num_host_blocks: int) -> None:
        self.kv = KVStore(self.spec, self.config.block_size, self.config.dtype, self.device,
                          pin_host=self.device.type == "cuda")
        self.kv.allocate(num_gpu_blocks, num_host_blocks)

    @property
    def link(self) -> tuple[float, float]:
        """The preset's figure for this card, for display; copies run at whatever the bus gives."""
        from ..sim.hardware import load_preset
        hw = load_preset(self.config.hardware)
        return hw.h2d_gbps, hw.link_latency_us

    def set_link(self, bandwidth_gbps: float, latency_us: float) -> None:
        raise ConfigError("the cuda executor measures its real link; link_bandwidth_gbps and "
                          "link_latency_us are knobs of the cpu and sim executors")
