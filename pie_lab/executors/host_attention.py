"""Policy hybrid in torch: decode attention over host-resident KV computed on the host CPU.

Per step, `HostAttention.for_step` builds a `HostShare` from the plan: the decode rows whose
sequences have host-computed blocks, and those blocks' host ids. Per layer, `HostShare.attend`
(called from `paged_attention`) copies those rows' queries to the host, hands them to the host
worker, runs the device's attention over the remaining keys meanwhile, then waits for the host's
partial output and log-sum-exp (the layer's one synchronisation point), copies them to the device
and merges them exactly. The host worker is its own thread; with a `rate` it is paced like the
emulated link (latency + host KV bytes / rate) so the cpu executor behaves like a host of that speed.
"""
from __future__ import annotations

import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..core.plan import StepPlan
from ..model.attention import device_decode_partial, host_block_tables, host_decode_partial, merge_partials
from ..model.batch import ForwardBatch
from .link import sleep_until

HOST_CALL_LATENCY_US = 10.0      # paced mode: fixed cost per layer (queries out, partials back)


@dataclass
class HostLayerTiming:
    start: float                 # perf_counter: queries handed to the host
    end: float = math.nan        # partials back on the device side
    wait: float = 0.0            # device thread blocked on the partials
    window: float = 0.0          # device thread's time from handing the queries over to the merge
    nbytes: int = 0              # host KV attended


class HostAttention:
    """One per executor: the host KV pool, the worker thread and the pacing rate (None: as fast
    as the host computes)."""

    def __init__(self, host_kv: Tensor, rate_gbps: float | None = None, threads: int = 1):
        self.host_kv = host_kv                   # [L, H, 2, bs, kvh, hd], pinned on CUDA
        self.rate = None if rate_gbps is None else rate_gbps * 1e9
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pie-host-attn")

    def set_rate(self, rate_gbps: float | None) -> None:
        self.rate = None if rate_gbps is None else rate_gbps * 1e9

    @property
    def layer_block_bytes(self) -> int:
        return self.host_kv[0, 0].numel() * self.host_kv.element_size()

    def for_step(self, plan: StepPlan, batch: ForwardBatch) -> "HostShare | None":
        seqs = [i for i, w in enumerate(plan.seqs) if w.host_computed]
        if not seqs:
            return None
        bs = batch.block_size
        tables = [[~b for b in plan.seqs[i].block_table[:plan.seqs[i].host_computed]] for i in seqs]
        ids, counts = host_block_tables(tables)
        starts = [0]
        for w in plan.seqs:
            starts.append(starts[-1] + len(w.token_ids))
        rows = [starts[i] for i in seqs]
        dev = batch.input_ids.device
        seq_idx = torch.tensor(seqs, device=dev)
        return HostShare(self, torch.tensor(rows, device=dev), seq_idx, ids, counts,
                         torch.tensor([batch.context_lens_list[i] - 1 for i in seqs]),
                         (counts * bs).to(dev), max(batch.context_lens_list[i] for i in seqs),
                         int(counts.sum()) * self.layer_block_bytes)

    def run(self, fn) -> Future:
        return self._pool.submit(fn)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


@dataclass
class HostShare:
    owner: HostAttention
    rows: Tensor                 # [Bh] token rows of the decode queries with a host share (device)
    seq_idx: Tensor              # [Bh] their sequences' indices in the batch (device)
    ids: Tensor                  # [Bh, nb] host block ids (host), padded with 0
    counts: Tensor               # [Bh] valid host blocks per row (host)
    q_pos: Tensor                # [Bh] query positions (host)
    key_start: Tensor            # [Bh] first key position the device attends (device)
    max_context: int
    layer_bytes: int             # host KV bytes attended per layer
    timings: dict[int, HostLayerTiming] = field(default_factory=dict)

    def attend(self, layer: int, q: Tensor, kv_layer: Tensor, staged: Tensor | None, batch: ForwardBatch,
               scale: float, window: int | None, rest) -> Tensor:
        """q: [T, nh, hd] -> [T, nh, hd]. `rest(q)` is the ordinary paged attention; it runs for
        every row (host-computed table entries read pool block 0 there) and the rows with a host
        share are then replaced by the merged result."""
        t = HostLayerTiming(time.perf_counter(), nbytes=self.layer_bytes)
        q_rows = q[self.rows]                                                # [Bh, nh, hd]
        q_host, ready = q_rows, None
        if q.is_cuda:
            q_host = torch.empty(q_rows.shape, dtype=q_rows.dtype, pin_memory=True)
            q_host.copy_(q_rows, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
        future = self.owner.run(lambda: self._host_partial(layer, q_host, ready, scale, window, t.start))
        out = rest(q)
        dev_o, dev_lse = device_decode_partial(q_rows, kv_layer, staged, batch.block_tables[self.seq_idx],
                                               batch.context_lens[self.seq_idx], self.key_start,
                                               self.max_context, scale, window)
        w0 = time.perf_counter()
        t.window = w0 - t.start
        host_o, host_lse = future.result()                                   # the layer's one sync
        t.wait = time.perf_counter() - w0
        host_o = host_o.to(q.device, non_blocking=True)
        host_lse = host_lse.to(q.device, non_blocking=True)
        out[self.rows] = merge_partials(dev_o, dev_lse, host_o, host_lse)[0].to(out.dtype)
        t.end = time.perf_counter()
        self.timings[layer] = t
        return out

    def _host_partial(self, layer: int, q_host: Tensor, ready, scale: float, window: int | None,
                      start: float) -> tuple[Tensor, Tensor]:
        if ready is not None:
            ready.synchronize()                                              # queries landed on the host
        with torch.inference_mode():
            o, lse = host_decode_partial(q_host, self.owner.host_kv[layer], self.ids, self.counts,
                                         self.q_pos, scale, window)
        rate = self.owner.rate
        if rate is not None:
            sleep_until(start + HOST_CALL_LATENCY_US * 1e-6 + self.layer_bytes / rate)
        if self.owner.host_kv.is_pinned():
            o, lse = o.pin_memory(), lse.pin_memory()
        return o, lse
