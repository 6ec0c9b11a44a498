"""cuda executor: the real model on a GPU, a pinned host pool, a copy stream per direction, and CUDA
events around every layer's compute and copy (stall = time compute waited for a copy).

Streaming: copy for layer l waits (on the copy stream) for the event "layer l - depth finished"
(its slot is free), the compute stream waits for "copy l landed" before layer l. Nothing on the
host side blocks until the step's tokens are read back.
"""
from __future__ import annotations

import time
from typing import Any

import torch

from ..config import EngineConfig
from ..core.plan import LayerTiming, StepOutput, StepPlan, StepTiming
from ..errors import ConfigError
from .base import DEVICE_SHARE, PINNED_SHARE, MemoryAvailable, WallClock, mem_available_bytes
from .kv_store import KVStore
from .torch_runner import TorchRunner


class CUDAExecutor(TorchRunner):
    name = "cuda"
    emulated_link = False

    def __init__(self, model, tokenizer, config: EngineConfig, device: torch.device):
        super().__init__(model, tokenizer, config, device)
        self.clock = WallClock()
        self.h2d = torch.cuda.Stream(device)
        self.d2h = torch.cuda.Stream(device)
        self._prefetched: dict[int, tuple] = {}      # next step's layers < depth, copied in this step's tail
        self._prefetch_plan = None

    @classmethod
    def load(cls, model: Any, config: EngineConfig, device: str = "cuda") -> "CUDAExecutor":
        if not torch.cuda.is_available():
            raise ConfigError("executor='cuda' needs a CUDA GPU and none is visible; use 'cpu' or 'sim'")
        from ..model.loader import load_model
        decoder, tokenizer = load_model(model, dtype=config.dtype, device=device, seed=config.seed)
        return cls(decoder, tokenizer, config, torch.device(device))

    def default_num_gpu_blocks(self, config: EngineConfig) -> int:
        free, _ = torch.cuda.mem_get_info(self.device)
        block = self.spec.kv_block_bytes(config.block_size, config.dtype)
        return max(1, int(free * 0.85 // block))

    def memory_available(self) -> MemoryAvailable:
        free, _ = torch.cuda.mem_get_info(self.device)
        host = mem_available_bytes()
        return MemoryAvailable(int(free * DEVICE_SHARE), None if host is None else int(host * PINNED_SHARE),
                               f"GPU memory ({torch.cuda.get_device_name(self.device)})", "pinned host memory")

    def initialize(self, num_gpu_blocks: int, num_host_blocks: int) -> None:
        self.kv = KVStore(self.spec, self.config.block_size, self.config.dtype, self.device, pin_host=True)
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

    def recover(self) -> None:
        """After a failed step: every stream drained, nothing prefetched for the next step."""
        torch.cuda.synchronize(self.device)
        self._prefetched, self._prefetch_plan = {}, None

    def _event(self) -> torch.cuda.Event:
        return torch.cuda.Event(enable_timing=True)

    def _stage(self, layer: int, ranges, slot_free: torch.cuda.Event | None, ring_layer: int):
        """Queue layer `layer`'s copy of `ranges` on the H2D stream; returns (issue, start, end, bytes)."""
        issue, start, end = self._event(), self._event(), self._event()
        with torch.cuda.stream(self.h2d):
            if slot_free is not None:
                self.h2d.wait_event(slot_free)
            issue.record(self.h2d)
            start.record(self.h2d)
            nbytes = self.kv.stage_layer(layer, self.slot(ring_layer), ranges, non_blocking=True)
            end.record(self.h2d)
        return issue, start, end, nbytes

    @torch.inference_mode()
    def execute(self, plan: StepPlan) -> StepOutput:
        kv, L = self.kv, self.spec.num_layers
        compute = torch.cuda.current_stream(self.device)
        t0 = self._event()
        t0.record(compute)
        wall0 = time.perf_counter()             # the host share's lane is timed on the host's clock
        self.sampler.release(plan.released_seq_ids)
        blocking_bytes = kv.copy_blocks(kv.pool, kv.host, kv.ranges(plan.swap_out))
        blocking_bytes += kv.copy_blocks(kv.host, kv.pool, kv.ranges(plan.swap_in))
        t_copied = self._event()
        t_copied.record(compute)
        offload_done = None
        if plan.offload:
            self.d2h.wait_stream(compute)
            with torch.cuda.stream(self.d2h):
                offload_bytes = kv.copy_blocks(kv.pool, kv.host, kv.ranges(plan.offload), non_blocking=True)
                offload_done = self._event()
                offload_done.record(self.d2h)
        else:
            offload_bytes = 0

        stream = plan.stream
        copies: dict[int, list[tuple]] = {}
        if stream:
            d = stream.depth
            if not kv.staging_fits(d, stream.capacity):
                self.h2d.synchronize()          # prefetches still landing in the ring being replaced
            if kv.ensure_staging(d, stream.capacity):
                self._prefetched = {}
            fresh = stream.new_since(self._prefetch_plan)
            self.h2d.wait_stream(compute)
            for l in range(min(d, L)):
                copies[l] = [self._prefetched[l]] if l in self._prefetched else []
                rest = stream.ranges if not copies[l] else fresh
                if rest:
                    copies[l].append(self._stage(l, rest, None, l))
        self._prefetched, self._prefetch_plan = {}, None

        batch = self.batch(plan)
        hidden = self.model.embed(batch)
        c_start, c_end = [], []
        for l in range(L):
            for _, _, landed, _ in copies.get(l, ()):
                compute.wait_event(landed)
            s, e = self._event(), self._event()
            s.record(compute)
            staged = kv.staging[self.slot(l)] if stream else None
            hidden = self.model.layer(l, hidden, batch, kv.pool[l], staged)
            e.record(compute)
            c_start.append(s)
            c_end.append(e)
            if stream:
                nxt = l + stream.depth
                if nxt < L:
                    copies[nxt] = [self._stage(nxt, stream.ranges, e, nxt)]
                else:
                    self._prefetched[nxt - L] = self._stage(nxt - L, stream.ranges, e, nxt)
        if stream:
            self._prefetch_plan = stream
        self.ring_base = (self.ring_base + L) % stream.depth if stream else 0
        tokens = self.sample(plan, batch, hidden)       # reads tokens back: synchronises compute
        t_end = self._event()
        t_end.record(compute)
        if offload_done is not None:
            offload_done.synchronize()
        t_end.synchronize()
        ms = lambda ev: t0.elapsed_time(ev) / 1e3    # noqa: E731 - seconds since step start
        layers = []
        for l in range(L):
            cs, ce = ms(c_start[l]), ms(c_end[l])
            if copies.get(l):
                parts = [(ms(i), ms(st), ms(en), n) for i, st, en, n in copies[l]]
                end = parts[-1][2]
                prev_end = ms(c_end[l - 1]) if l else ms(t_copied)
                wait = max(0.0, min(cs, end) - prev_end)
                busy = sum(en - st for _, st, en, _ in parts) if len(parts) > 1 else float("nan")
                layers.append(LayerTiming(l, cs, ce, parts[0][0], parts[0][1], end, wait,
                                          sum(p[3] for p in parts), busy))
            else:
                layers.append(LayerTiming(l, cs, ce))
        layers = self.with_host_timings(batch, layers, wall0)
        return StepOutput(tokens, StepTiming(ms(t_end), tuple(layers), ms(t_copied), blocking_bytes,
                                             offload_bytes, emulated_link=False))
