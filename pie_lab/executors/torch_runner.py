"""What the cpu and cuda executors share: the model, KV store, batch building, sampling, and the one
streaming loop. They differ only in the `Streams` object (emulated link or CUDA streams), the
device and the clock.

The loop, per step: blocking swap copies; the offload starts (async); the first `depth` layers'
staging copies are issued (those prefetched in the previous step's tail reused, blocks new since
then appended); then per layer l: compute waits for copy(l), runs layer l reading pool + staging
slot (ring_base + l) % depth, and the copy for layer l + depth is issued into the slot l just
freed, after l's compute (the last layers' copies are the next step's first ones, prefetched).
"""
from __future__ import annotations

import math
import time
from dataclasses import replace
from functools import partial
from typing import Any, Protocol

import torch

from ..config import EngineConfig
from ..core.plan import LayerTiming, StepOutput, StepPlan, StepTiming
from .base import ExecutorBase


class Copy(Protocol):
    issued: Any        # marks on the Streams' timeline
    start: Any
    end: Any
    nbytes: int


class Streams(Protocol):
    """The few operations the loop needs from a link and a compute timeline."""
    emulated: bool

    def mark(self) -> Any:
        """A point on the compute timeline: after everything compute has been given so far."""

    def seconds(self, a: Any, b: Any) -> float:
        """Seconds from mark a to mark b (both settled)."""

    def blocking(self, run) -> int:
        """Run the swap copies (run() returns bytes) before any compute that follows; returns bytes."""

    def offload(self, run, nbytes: int) -> Any:
        """Device-to-host copy of run() after the compute so far, overlapping what follows."""

    def fence(self) -> None:
        """Staging copies issued from now on start after the compute issued so far."""

    def stage(self, run, nbytes: int, after: Any | None) -> Copy:
        """Host-to-device copy of run() into a staging slot, once mark `after` is reached."""

    def wait(self, copies) -> None:
        """Compute goes on only once these copies landed."""

    def drain(self) -> None:
        """The host blocks until every staging copy landed (the ring is about to be replaced)."""

    def settle(self, handle: Any) -> None:
        """The host blocks until an offload handle or a mark is done."""

    def recover(self) -> None:
        """After a failed step: no copy of it can still be writing."""

    def close(self) -> None: ...

    cpu_seconds: float
    """Host CPU time the copies have cost so far (an emulated link's threads; 0 for DMA)."""


class TorchRunner(ExecutorBase):
    def __init__(self, model, tokenizer, config: EngineConfig, device: torch.device, streams: Streams):
        from ..model.sampler import Sampler
        self.model = model
        self.tokenizer = tokenizer
        self.spec = model.spec
        self.config = config
        self.device = device
        self.streams = streams
        self.sampler = Sampler(seed=config.seed)
        self.ring_base = 0        # staging slots run as one ring across steps: layer l uses (base + l) % depth
        self.kv = None
        self._prefetched: dict[int, Copy] = {}     # next step's layers < depth, copied in this step's tail
        self._prefetch_plan = None                 # the StreamPlan those copies followed
        self._link_cpu = 0.0                       # streams.cpu_seconds already reported
        self.host_rate = config.host_attention_gbps     # hybrid: pace the host's attention (None: as fast as it runs)
        self._host_attention = None

    def slot(self, layer: int) -> int:
        return (self.ring_base + layer) % self.kv.staging.shape[0]

    def batch(self, plan: StepPlan):
        from ..model.batch import build_forward_batch
        batch = build_forward_batch(plan, self.config.block_size, self.device)
        if plan.num_host_computed_blocks:
            batch.host_share = self.host_attention().for_step(plan, batch)
        return batch

    # -- policy hybrid: attention over host-computed blocks on the host's own worker -----------------
    def host_attention(self):
        if self._host_attention is None:
            from .host_attention import HostAttention
            self._host_attention = HostAttention(self.kv.host, self.host_rate, split=self.config.host_split)
        return self._host_attention

    def set_host_attention(self, gbps: float | None) -> None:
        self.host_rate = gbps
        if self._host_attention is not None:
            self._host_attention.set_rate(gbps)

    @staticmethod
    def with_host_timings(batch, layers: tuple[LayerTiming, ...], t0: float) -> tuple[LayerTiming, ...]:
        """Layer timings with the host share's lane (perf_counter seconds since t0, the step's start)."""
        share = batch.host_share
        if share is None:
            return layers
        out = []
        for l in layers:
            t = share.timings.get(l.layer)
            out.append(l if t is None else replace(l, host_start=t.start - t0, host_end=t.end - t0, host_wait=t.wait,
                                                   host_bytes=t.nbytes, host_window=t.window))
        return tuple(out)

    @torch.inference_mode()
    def sample(self, plan: StepPlan, batch, hidden: torch.Tensor) -> dict[int, int]:
        works = [w for w in plan.seqs if w.sample]
        if not works:
            return {}
        logits = self.model.compute_logits(hidden, batch)
        return dict(zip((w.seq_id for w in works), self.sampler.sample(logits, works)))

    # -- one step ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def execute(self, plan: StepPlan) -> StepOutput:
        kv, io, L = self.kv, self.streams, self.spec.num_layers
        t0, wall0 = io.mark(), time.perf_counter()     # the host share's lane is timed on the host's clock
        self.sampler.release(plan.released_seq_ids)
        swap_out, swap_in = kv.ranges(plan.swap_out), kv.ranges(plan.swap_in)
        blocking_bytes = io.blocking(lambda: kv.copy_blocks(kv.pool, kv.host, swap_out)
                                     + kv.copy_blocks(kv.host, kv.pool, swap_in)) if swap_out or swap_in else 0
        t_copied = io.mark()
        offload = kv.ranges(plan.offload)
        offload_bytes = kv.nbytes(offload, L)
        offloading = io.offload(partial(kv.copy_blocks, kv.pool, kv.host, offload, non_blocking=True),
                                offload_bytes) if offload else None
        tokens, layers = {}, ()
        if plan.seqs:
            tokens, layers = self._forward(plan, t0, wall0)
        if offloading is not None:
            io.settle(offloading)
        t_end = io.mark()
        io.settle(t_end)
        link_cpu, self._link_cpu = io.cpu_seconds - self._link_cpu, io.cpu_seconds
        return StepOutput(tokens, StepTiming(io.seconds(t0, t_end), layers, io.seconds(t0, t_copied),
                                             blocking_bytes, offload_bytes, emulated_link=io.emulated,
                                             link_cpu_time=link_cpu))

    def _forward(self, plan: StepPlan, t0, wall0: float) -> tuple[dict[int, int], tuple[LayerTiming, ...]]:
        kv, io, L, stream = self.kv, self.streams, self.spec.num_layers, plan.stream
        copies: dict[int, list[Copy]] = {}
        if stream:
            d = stream.depth
            if not kv.staging_fits(d, stream.capacity):
                io.drain()                      # prefetches still landing in the ring being replaced
            if kv.ensure_staging(d, stream.capacity):
                self._prefetched = {}
            fresh = stream.new_since(self._prefetch_plan)
            io.fence()
            for l in range(min(d, L)):
                copies[l] = [self._prefetched[l]] if l in self._prefetched else []
                rest = stream.ranges if not copies[l] else fresh
                if rest:
                    copies[l].append(self._stage(l, rest, None, l))
        self._prefetched, self._prefetch_plan = {}, None

        batch = self.batch(plan)
        hidden = self.model.embed(batch)
        marks = [io.mark()]                     # then compute start and end of every layer
        for l in range(L):
            io.wait(copies.get(l, ()))
            marks.append(io.mark())
            staged = kv.staging[self.slot(l)] if stream else None
            hidden = self.model.layer(l, hidden, batch, kv.pool[l], staged)
            marks.append(io.mark())
            if stream:
                nxt = l + stream.depth
                if nxt < L:
                    copies[nxt] = [self._stage(nxt, stream.ranges, marks[-1], nxt)]
                else:
                    self._prefetched[nxt - L] = self._stage(nxt - L, stream.ranges, marks[-1], nxt)
        if stream:
            self._prefetch_plan = stream
            self.ring_base = (self.ring_base + L) % stream.depth
        tokens = self.sample(plan, batch, hidden)
        io.settle(marks[-1])
        return tokens, self.with_host_timings(batch, self._layer_timings(t0, marks, copies), wall0)

    def _stage(self, layer: int, ranges, after, ring_layer: int) -> Copy:
        run = partial(self.kv.stage_layer, layer, self.slot(ring_layer), ranges, non_blocking=True)
        return self.streams.stage(run, self.kv.nbytes(ranges), after)

    def _layer_timings(self, t0, marks: list, copies: dict[int, list[Copy]]) -> tuple[LayerTiming, ...]:
        """Seconds since t0. A layer's wait: how long after the previous compute (or the embedding)
        ended its copy landed, up to its own start."""
        sec = partial(self.streams.seconds, t0)
        out = []
        for l in range(self.spec.num_layers):
            prev, cs, ce = sec(marks[2 * l]), sec(marks[2 * l + 1]), sec(marks[2 * l + 2])
            parts = copies.get(l)
            if not parts:
                out.append(LayerTiming(l, cs, ce))
                continue
            end = sec(parts[-1].end)
            busy = sum(sec(p.end) - sec(p.start) for p in parts) if len(parts) > 1 else math.nan
            out.append(LayerTiming(l, cs, ce, sec(parts[0].issued), sec(parts[0].start), end,
                                   max(0.0, min(cs, end) - prev), sum(p.nbytes for p in parts), busy))
        return tuple(out)

    def recover(self) -> None:
        """After a failed step: no copy still in flight, nothing prefetched for the next step."""
        self.streams.recover()
        self._prefetched, self._prefetch_plan = {}, None

    def close(self) -> None:
        self.streams.close()
        if self._host_attention is not None:
            self._host_attention.close()
            self._host_attention = None
