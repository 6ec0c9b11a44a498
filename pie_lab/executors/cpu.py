"""cpu executor: the real model on the CPU, the "GPU" pool a bounded CPU tensor, and an emulated
host link (copies on worker threads, paced to a configured bandwidth). Labelled as emulated.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any

import torch

from ..config import EngineConfig
from ..core.plan import LayerTiming, StepOutput, StepPlan, StepTiming
from .base import HOST_SHARE, MemoryAvailable, WallClock, mem_available_bytes
from .kv_store import KVStore
from .link import CopyJob, EmulatedLink, sleep_until
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
        super().__init__(model, tokenizer, config, torch.device("cpu"))
        self.clock = WallClock()
        self.link = (config.link_bandwidth_gbps or DEFAULT_LINK_GBPS,
                     DEFAULT_LINK_LATENCY_US if config.link_latency_us is None else config.link_latency_us)
        self.h2d = EmulatedLink(*self.link, "h2d")
        self.d2h = EmulatedLink(*self.link, "d2h")
        self.threads = threads
        self._prefetched: dict[int, CopyJob] = {}     # next step's layers < depth, copied in this step's tail
        self._prefetch_plan = None                    # the StreamPlan those copies followed
        self.host_rate = config.host_attention_gbps or DEFAULT_HOST_ATTENTION_GBPS

    @classmethod
    def load(cls, model: Any, config: EngineConfig, threads: int | None = None) -> "CPUExecutor":
        from ..model.loader import load_model
        # Leave a core to the link threads: OpenMP workers spinning on every core stall them badly.
        torch.set_num_threads(threads or max(1, (os.cpu_count() or 2) - 1))
        decoder, tokenizer = load_model(model, dtype=config.dtype, device="cpu", seed=config.seed)
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
        self.h2d.set(bandwidth_gbps, latency_us)
        self.d2h.set(bandwidth_gbps, latency_us)

    # -- one step ---------------------------------------------------------------------------
    @torch.inference_mode()
    def execute(self, plan: StepPlan) -> StepOutput:
        kv = self.kv
        t0 = time.perf_counter()
        self.sampler.release(plan.released_seq_ids)
        blocking_bytes = kv.copy_blocks(kv.pool, kv.host, kv.ranges(plan.swap_out))
        blocking_bytes += kv.copy_blocks(kv.host, kv.pool, kv.ranges(plan.swap_in))
        blocking_time = self.h2d.duration(blocking_bytes) if blocking_bytes else 0.0
        if blocking_bytes:
            sleep_until(t0 + blocking_time)
        offload_ranges = kv.ranges(plan.offload)
        offload_bytes = len(plan.offload) * kv.layer_block_bytes * self.spec.num_layers
        offload_job = self.d2h.submit(_inference(kv.copy_blocks, kv.pool, kv.host, offload_ranges),
                                      offload_bytes) if offload_ranges else None

        stream, L = plan.stream, self.spec.num_layers
        jobs: dict[int, list[CopyJob]] = {}
        if stream:
            d = stream.depth
            if not kv.staging_fits(d, stream.capacity):
                for job in self._prefetched.values():       # let them land before the ring is replaced
                    job.wait()
            if kv.ensure_staging(d, stream.capacity):
                self._prefetched = {}
            fresh = stream.new_since(self._prefetch_plan)
            for l in range(min(d, L)):
                jobs[l] = [self._prefetched[l]] if l in self._prefetched else []
                rest = stream.ranges if not jobs[l] else fresh
                if rest:
                    jobs[l].append(self._stage(l, rest))
        self._prefetched, self._prefetch_plan = {}, None

        batch = self.batch(plan)
        hidden = self.model.embed(batch)
        layers = []
        for l in range(L):
            waiting = jobs.get(l, [])
            wait = sum(job.wait() for job in waiting)
            c0 = time.perf_counter()
            staged = kv.staging[self.slot(l)] if stream else None
            hidden = self.model.layer(l, hidden, batch, kv.pool[l], staged)
            c1 = time.perf_counter()
            if stream:
                nxt = l + stream.depth
                if nxt < L:
                    jobs[nxt] = [self._stage(nxt, stream.ranges)]
                else:
                    self._prefetched[nxt - L] = self._stage(nxt - L, stream.ranges, ring_layer=nxt)
            layers.append(_layer_timing(l, t0, c0, c1, wait, waiting))
        if stream:
            self._prefetch_plan = stream
        self.ring_base = (self.ring_base + L) % stream.depth if stream else 0
        layers = self.with_host_timings(batch, layers, t0)
        tokens = self.sample(plan, batch, hidden)
        if offload_job:
            offload_job.wait()
        duration = time.perf_counter() - t0
        return StepOutput(tokens, StepTiming(duration, tuple(layers), blocking_time, blocking_bytes,
                                             offload_bytes, emulated_link=True))

    def _stage(self, layer: int, ranges, ring_layer: int | None = None) -> CopyJob:
        slot = self.slot(layer if ring_layer is None else ring_layer)
        nbytes = sum(r.count for r in ranges) * self.kv.layer_block_bytes
        return self.h2d.submit(_inference(self.kv.stage_layer, layer, slot, ranges), nbytes)

    def recover(self) -> None:
        """After a failed step: no copy still in flight, nothing prefetched for the next step."""
        for link in (self.h2d, self.d2h):
            try:
                link.quiesce()
            except Exception:       # a dead worker: its jobs never run, a new one starts on demand
                pass
        self._prefetched, self._prefetch_plan = {}, None

    def set_host_attention(self, gbps: float | None) -> None:
        super().set_host_attention(gbps or DEFAULT_HOST_ATTENTION_GBPS)

    def close(self) -> None:
        self.h2d.close()
        self.d2h.close()
        super().close()


def _layer_timing(l: int, t0: float, c0: float, c1: float, wait: float, jobs: list[CopyJob]) -> LayerTiming:
    if not jobs:
        return LayerTiming(l, c0 - t0, c1 - t0)
    busy = sum(j.end - j.start for j in jobs) if len(jobs) > 1 else float("nan")
    return LayerTiming(l, c0 - t0, c1 - t0, jobs[0].issued - t0, jobs[0].start - t0, jobs[-1].end - t0, wait,
                       sum(j.nbytes for j in jobs), busy)


def _inference(fn, *args):
    """A job for a link thread: tensors made under inference mode may only be written under it."""
    def run():
        with torch.inference_mode():
            fn(*args)
    return run
