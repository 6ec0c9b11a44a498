"""Policy hybrid in torch: decode attention over host-resident KV computed on the host CPU.

Per step, `HostAttention.for_step` builds a `HostShare` from the plan: the decode rows whose
sequences have host-computed blocks (sub-batch H), those blocks' host ids, and whether the layers
run split (`core/host_split.py`). Per layer, `HostShare.layer` (called from the model's `layer`
after the QKV projection) copies H's queries to the host and hands them to the host worker; the
device meanwhile attends the other rows (sub-batch D) and H's device partials (its own and
streamed blocks only), and, split, runs D's output projection and MLP; then it waits for the
host's partial output and log-sum-exp (the layer's one synchronisation point), merges them exactly
and runs the post-attention part of the rows not yet done. The host worker is its own thread; with
a `rate` it is paced like the emulated link (latency + host KV bytes / rate) so the cpu executor
behaves like a host of that speed. "auto" splits from measurements: the unsplit wait (host path
end - device attention end) and a line fitted to the post-attention times of past layers; on CUDA
those host-clock times are kernel launches, so "auto" does not split there ("on" does).
"""
from __future__ import annotations

import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..core.host_split import PostTimes, decide_split
from ..core.plan import StepPlan
from ..model.attention import (DecodeRows, device_decode_partial, host_block_tables, host_decode_partial,
                               merge_partials, paged_attention)
from ..model.batch import ForwardBatch
from .link import sleep_until

HOST_CALL_LATENCY_US = 10.0      # paced mode: fixed cost per layer (queries out, partials back)
WAIT_EMA = 0.2                   # weight of a layer's measured unsplit wait in the running estimate


@dataclass
class HostLayerTiming:
    start: float                 # perf_counter: queries handed to the host
    end: float = math.nan        # partials back on the device side
    wait: float = 0.0            # device thread blocked on the partials (+ the split's second-pass extra)
    window: float = 0.0          # device thread's time from handing the queries over to the merge
    nbytes: int = 0              # host KV attended
    host_done: float = math.nan  # perf_counter: the host worker finished


class HostAttention:
    """One per executor: the host KV pool, the worker thread and the pacing rate (None: as fast
    as the host computes)."""

    def __init__(self, host_kv: Tensor, rate_gbps: float | None = None, threads: int = 1, split: str = "auto"):
        self.host_kv = host_kv                   # [L, H, 2, bs, kvh, hd], pinned on CUDA
        self.rate = None if rate_gbps is None else rate_gbps * 1e9
        self.split = split                       # EngineConfig.host_split
        self.post = PostTimes()                  # measured post-attention seconds per layer vs rows
        self.unsplit_wait = 0.0                  # running estimate of an unsplit layer's wait (s)
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
        host_set, host_rows = set(seqs), set(rows)
        d_seqs = [i for i in batch.decode_seqs if i not in host_set]
        d_rows = [r for r in range(starts[-1]) if r not in host_rows]
        dev = batch.input_ids.device
        post = [self.post(n) for n in (len(d_rows), len(rows), starts[-1])]
        if self.split == "auto" and dev.type == "cuda":
            # the host clock times kernel launches, not the GPU's work: no measurement to decide by
            post = [None]
        split = decide_split(self.split, len(d_rows), self.unsplit_wait, *post) if None not in post \
            else self.split == "on" and bool(d_rows)
        return HostShare(self, torch.tensor(rows, device=dev), torch.tensor(seqs, device=dev), ids, counts,
                         torch.tensor([batch.context_lens_list[i] - 1 for i in seqs]),
                         (counts * bs).to(dev), max(batch.context_lens_list[i] for i in seqs),
                         int(counts.sum()) * self.layer_block_bytes,
                         DecodeRows(torch.tensor(d_seqs, device=dev, dtype=torch.long),
                                    torch.tensor([starts[i] for i in d_seqs], device=dev, dtype=torch.long), d_seqs),
                         torch.tensor(d_rows, device=dev, dtype=torch.long), split)

    def observe(self, t: "HostLayerTiming", attention_end: float) -> None:
        """A layer's unsplit wait: how long past the device's attention the host's path ran."""
        self.unsplit_wait += WAIT_EMA * (max(0.0, t.host_done - attention_end) - self.unsplit_wait)

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
    device_rows: DecodeRows      # sub-batch D's decode rows (every prefill row is D's too)
    d_rows: Tensor               # [T - Bh] token rows of sub-batch D (device)
    split: bool                  # D's post-attention runs before the merge
    timings: dict[int, HostLayerTiming] = field(default_factory=dict)

    def layer(self, layer: int, q: Tensor, hidden: Tensor, kv_layer: Tensor, staged: Tensor | None,
              batch: ForwardBatch, model) -> Tensor:
        """Layer `layer` from its queries q [T, nh, hd] on: hidden [T, H] -> [T, H]. The device
        attends D's rows and H's own keys only (H's host-computed keys are the host's)."""
        scale, window = model.attn_scale, model.window
        t = HostLayerTiming(time.perf_counter(), nbytes=self.layer_bytes)
        q_rows = q[self.rows]                                                # [Bh, nh, hd]
        q_host, ready = q_rows, None
        if q.is_cuda:
            q_host = torch.empty(q_rows.shape, dtype=q_rows.dtype, pin_memory=True)
            q_host.copy_(q_rows, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
        future = self.owner.run(lambda: self._host_partial(layer, q_host, ready, scale, window, t))
        o = paged_attention(q, kv_layer, staged, batch, scale, window, self.device_rows)   # H rows unset
        dev_o, dev_lse = device_decode_partial(q_rows, kv_layer, staged, batch.block_tables[self.seq_idx],
                                               batch.context_lens[self.seq_idx], self.key_start,
                                               self.max_context, scale, window)
        attention_end = time.perf_counter()
        if self.split:
            hidden_d = model.post_attention(layer, hidden[self.d_rows], o[self.d_rows])    # [T - Bh, H]
            self.owner.post.add(len(self.d_rows), time.perf_counter() - attention_end)
        w0 = time.perf_counter()
        t.window = w0 - t.start
        host_o, host_lse = future.result()                                   # the layer's one sync
        t.wait = time.perf_counter() - w0
        host_o = host_o.to(q.device, non_blocking=True)
        host_lse = host_lse.to(q.device, non_blocking=True)
        merged = merge_partials(dev_o, dev_lse, host_o, host_lse)[0].to(o.dtype)       # [Bh, nh, hd]
        p0 = time.perf_counter()
        if self.split:
            out = torch.empty_like(hidden)
            out[self.d_rows] = hidden_d
            out[self.rows] = model.post_attention(layer, hidden[self.rows], merged)
            p1 = time.perf_counter()
            self.owner.post.add(len(self.rows), p1 - p0)
            # what the second pass cost over one pass of every row: the host share's, like the wait
            t.wait += max(0.0, (w0 - attention_end) + (p1 - p0) - self.owner.post(hidden.shape[0]))
        else:
            o[self.rows] = merged
            out = model.post_attention(layer, hidden, o)
            self.owner.post.add(hidden.shape[0], time.perf_counter() - p0)
        t.end = p0
        self.owner.observe(t, attention_end)
        self.timings[layer] = t
        return out

    def _host_partial(self, layer: int, q_host: Tensor, ready, scale: float, window: int | None,
                      t: HostLayerTiming) -> tuple[Tensor, Tensor]:
        if ready is not None:
            ready.synchronize()                                              # queries landed on the host
        with torch.inference_mode():
            o, lse = host_decode_partial(q_host, self.owner.host_kv[layer], self.ids, self.counts,
                                         self.q_pos, scale, window)
        rate = self.owner.rate
        if rate is not None:
            sleep_until(t.start + HOST_CALL_LATENCY_US * 1e-6 + self.layer_bytes / rate)
        if self.owner.host_kv.is_pinned():
            o, lse = o.pin_memory(), lse.pin_memory()
        t.host_done = time.perf_counter()
        return o, lse
