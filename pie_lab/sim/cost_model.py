"""An analytical cost model of one engine step: per-layer roofline compute, link copies, stalls.

Per decoder layer: linear layers take max(2 * params * tokens / FLOP/s, weight bytes / HBM);
attention takes max(4 * heads * head_dim * (query, key) pairs / FLOP/s, KV bytes read / HBM);
plus the KV write and a fixed per-layer overhead. Embedding and lm_head (sampled positions
only) come on top. Copies cost a fixed latency per copy call plus bytes over the link.
The streaming schedule itself is `pie_lab.sim.overlap.schedule_layers`. Policy hybrid: the
device attends only the KV that is not host-computed; the host share's cost is `host_cost.py`.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace

from .overlap import schedule_columns
from ..core.plan import StepPlan, StreamPlan, coalesce
from ..core.timing import NAN, ComputeOnlyLayers, StepTiming, StreamedLayers
from ..config import SPLIT_MODES, check_field
from ..errors import check_choice
from ..model_spec import DTYPE_BYTES, ModelSpec
from .hardware import Hardware
from .host_cost import HostAttentionCost
from .calibration import KernelFit, LayerShape
from .step_shape import StepShape


def _derived():
    return field(init=False, repr=False, compare=False)


@dataclass(frozen=True)
class CostModel:
    spec: ModelSpec
    hardware: Hardware
    dtype: str = "bfloat16"
    block_size: int = 16
    link_bandwidth_gbps: float | None = None     # None: the preset's h2d_gbps / d2h_gbps
    link_latency_us: float | None = None         # None: the preset's link_latency_us
    host_attention_gbps: float | None = None     # None: the preset's host cores and memory (hybrid)
    host_split: str = "auto"                     # hybrid's within-layer split (core/host_split.py)

    # derived from the fields above by __post_init__ (per layer unless named otherwise)
    _layer_params: int = _derived()
    _flops: float = _derived()                   # matmul FLOP/s at `dtype`
    _hbm: float = _derived()                     # HBM bytes/s
    _weight_bytes_layer: int = _derived()
    _kv_bytes_token: int = _derived()
    _block_bytes_layer: int = _derived()
    _h2d: float = _derived()                     # link bytes/s, host to device
    _d2h: float = _derived()
    _latency: float = _derived()                 # seconds per copy call
    _layer_overhead: float = _derived()
    _step_overhead: float = _derived()
    _attn_flops_pair: int = _derived()           # FLOPs per (query, key) pair
    _lm_head_params: int = _derived()
    _lm_head_bytes: int = _derived()
    _embed_bytes_token: int = _derived()
    _qkv_share: float = _derived()               # of the linear time, before attention
    _host: HostAttentionCost = _derived()
    _kernels: KernelFit | None = _derived()      # measured-kernel fit (sim/calibration.py); None: roofline
    _layer_shape: LayerShape = _derived()
    _linear_memo: dict = _derived()              # tokens -> calibrated linear seconds
    _attn_flops: float = _derived()              # attention FLOP/s (the fit's cited figure, else matmul)
    _attn_hbm: float = _derived()                # attention bytes/s (the fit's cited figure, else HBM)

    def __post_init__(self):
        check_choice("dtype", self.dtype, DTYPE_BYTES)
        check_choice("host_split", self.host_split, SPLIT_MODES)
        for name in ("block_size", "link_bandwidth_gbps", "link_latency_us"):
            if getattr(self, name) is not None:
                check_field(name, getattr(self, name))
        s, hw, db = self.spec, self.hardware, DTYPE_BYTES[self.dtype]
        h, kv = s.hidden_size, s.num_kv_heads * s.head_dim
        layer_params = 2 * h * h + 2 * h * kv + (2 if s.is_opt else 3) * h * s.intermediate_size
        link = self.link_bandwidth_gbps
        set_ = object.__setattr__                # frozen: derived fields are set once, here
        fit = hw.calibration if self.dtype != "float32" else None      # measured kernels (sim/calibration.py)
        set_(self, "_kernels", fit)
        set_(self, "_layer_shape", LayerShape.of(s))
        set_(self, "_linear_memo", {})
        set_(self, "_attn_flops", fit.attention_tflops * 1e12 if fit and fit.attention_tflops else hw.matmul_flops(self.dtype))
        set_(self, "_attn_hbm", fit.attention_gbps * 1e9 if fit and fit.attention_gbps else hw.hbm_bytes_per_s)
        set_(self, "_layer_params", layer_params)
        set_(self, "_flops", hw.matmul_flops(self.dtype))
        set_(self, "_hbm", hw.hbm_bytes_per_s)
        set_(self, "_weight_bytes_layer", layer_params * db)
        set_(self, "_kv_bytes_token", s.kv_bytes_per_token_per_layer(self.dtype))
        set_(self, "_block_bytes_layer", s.kv_block_bytes(self.block_size, self.dtype) // s.num_layers)
        set_(self, "_h2d", (link or hw.h2d_gbps) * 1e9)
        set_(self, "_d2h", (link or hw.d2h_gbps) * 1e9)
        set_(self, "_latency", (hw.link_latency_us if self.link_latency_us is None else self.link_latency_us) * 1e-6)
        set_(self, "_layer_overhead", (fit.attention_fixed_us if fit else hw.layer_overhead_us) * 1e-6)
        set_(self, "_step_overhead", hw.step_overhead_us * 1e-6)
        set_(self, "_attn_flops_pair", 4 * s.num_heads * s.head_dim)
        set_(self, "_lm_head_params", s.vocab_size * h)
        set_(self, "_lm_head_bytes", s.vocab_size * h * db)
        set_(self, "_embed_bytes_token", h * db)
        set_(self, "_qkv_share", (h * h + 2 * h * kv) / layer_params)
        set_(self, "_host", HostAttentionCost(s, hw, self.dtype, self.block_size, self.host_attention_gbps))

    def with_link(self, bandwidth_gbps: float, latency_us: float) -> "CostModel":
        return replace(self, link_bandwidth_gbps=bandwidth_gbps, link_latency_us=latency_us)

    def with_host_attention(self, gbps: float | None) -> "CostModel":
        return replace(self, host_attention_gbps=gbps)

    @property
    def host(self) -> HostAttentionCost:
        return self._host

    @property
    def layer_overhead(self) -> float:
        """Seconds per layer beyond its kernels' modelled times (calibrated: the attention kernels' fixed cost)."""
        return self._layer_overhead

    @property
    def layer_params(self) -> int:
        return self._layer_params

    @property
    def block_bytes_per_layer(self) -> int:
        return self._block_bytes_layer

    @property
    def weight_bytes(self) -> int:
        return self.spec.num_params() * DTYPE_BYTES[self.dtype]

    # -- compute -------------------------------------------------------------------------------
    def layer_time(self, shape: StepShape) -> float:
        """Seconds one decoder layer computes for a step of this shape (0 tokens: 0 s)."""
        if shape.tokens == 0:
            return 0.0
        linear, attention, kv_write = self._roofline(shape)
        return linear + attention + kv_write + self._layer_overhead

    def _roofline(self, shape: StepShape) -> tuple[float, float, float]:
        linear = self.linear_time(shape.tokens)
        attention = max(self._attn_flops_pair * shape.attn_pairs / self._attn_flops,
                        shape.kv_tokens * self._kv_bytes_token / self._attn_hbm)
        return linear, attention, shape.tokens * self._kv_bytes_token / self._hbm

    def linear_time(self, tokens: int, share: float = 1.0) -> float:
        """Roofline of `share` of one layer's linears over `tokens` rows (memory-bound: the weights'
        bytes, whatever the rows; compute-bound: the rows' FLOPs)."""
        if tokens <= 0:
            return 0.0
        if self._kernels is not None:
            t = self._linear_memo.get(tokens)
            if t is None:
                t = self._linear_memo[tokens] = self._kernels.layer_time(self._layer_shape, tokens)
            return share * t
        return share * max(2.0 * self._layer_params * tokens / self._flops, self._weight_bytes_layer / self._hbm)

    def post_attention_time(self, tokens: int) -> float:
        """Output projection and MLP of one layer over `tokens` rows (hybrid's split runs two)."""
        return self.linear_time(tokens, 1.0 - self._qkv_share)

    def layer_parts(self, shape: StepShape) -> tuple[float, float]:
        """(QKV projection, attention incl. the KV write) of one layer: hybrid's host share starts
        after the first and overlaps the second."""
        if shape.tokens == 0:
            return 0.0, 0.0
        linear, attention, kv_write = self._roofline(shape)
        return linear * self._qkv_share, attention + kv_write

    def embed_time(self, shape: StepShape) -> float:
        return shape.tokens * self._embed_bytes_token / self._hbm

    def lm_head_time(self, shape: StepShape) -> float:
        """lm_head over the sampled positions only."""
        if not shape.sampled:
            return 0.0
        return max(2.0 * self._lm_head_params * shape.sampled / self._flops, self._lm_head_bytes / self._hbm)

    def head_time(self, shape: StepShape) -> float:
        """Embedding and lm_head: the step's time outside the decoder layers."""
        return self.embed_time(shape) + self.lm_head_time(shape)

    def layer_compute_times(self, plan: StepPlan) -> list[float]:
        return [self.layer_time(StepShape.of(plan, self.block_size))] * self.spec.num_layers

    # -- copies --------------------------------------------------------------------------------
    def copy_time(self, nbytes: int, calls: int = 1, direction: str = "h2d") -> float:
        """Seconds for `nbytes` over the link in `calls` copy calls (0 bytes: 0 s)."""
        if nbytes <= 0:
            return 0.0
        bw = self._h2d if direction == "h2d" else self._d2h
        return calls * self._latency + nbytes / bw

    def stream_layer_bytes(self, plan: StepPlan) -> int:
        return plan.num_streamed_blocks * self._block_bytes_layer

    def stream_copy_time(self, plan: StepPlan) -> float:
        """One layer's streaming copy: one copy call per coalesced host range."""
        if not plan.stream or not plan.stream.num_blocks:
            return 0.0
        return self.copy_time(self.stream_layer_bytes(plan), calls=len(plan.stream.ranges))

    def _moves(self, pairs, direction: str) -> tuple[float, int]:
        """Block mappings over all layers: one (strided, all-layer) copy call per coalesced range."""
        if not pairs:
            return 0.0, 0
        nbytes = len(pairs) * self._block_bytes_layer * self.spec.num_layers
        return self.copy_time(nbytes, calls=len(coalesce(pairs)), direction=direction), nbytes

    def blocking_copies(self, plan: StepPlan) -> tuple[float, int]:
        """(seconds, bytes) of the copies done before the forward: swap-out, then swap-in."""
        t_out, b_out = self._moves(plan.swap_out, "d2h")
        t_in, b_in = self._moves(plan.swap_in, "h2d")
        return t_out + t_in, b_out + b_in

    def offload_copy(self, plan: StepPlan) -> tuple[float, int]:
        """(seconds, bytes) of the async device-to-host offload; it must land by the step's end."""
        return self._moves(plan.offload, "d2h")

    # -- whole step ----------------------------------------------------------------------------
    def step_timing(self, plan: StepPlan, prestaged_layers: int = 0, prefetch: "Prefetch | None" = None,
                    shape: StepShape | None = None) -> StepTiming:
        """Model one step. Order: host overhead, blocking copies, embedding, layers, lm_head; the
        offload runs on the device-to-host link from the end of the blocking copies, and the step
        ends when both compute and offload are done.

        Layers < prestaged_layers were staged before the step: without `prefetch`, fully and in
        time; with it, its first `num_blocks` staged blocks were copied at the given times and the
        appended rest is copied at the step's start. A late prefetch holds layer 0 back (its stall)
        until every prefetched layer can start on time. `shape` (default: the plan's) lets a caller
        time a step whose sequences it summarises without building them.
        """
        shape = shape or StepShape.of(plan, self.block_size)
        n = self.spec.num_layers
        if not (plan.stream and plan.stream.num_blocks) and not shape.host_blocks:
            return self._compute_only_timing(plan, shape)
        layer = self.layer_time(shape)
        host = None if not shape.host_blocks else self._host.layer(
            shape, *self.layer_parts(shape), self._h2d, self._d2h, self._latency,
            min(self.stream_layer_bytes(plan) / layer, self._h2d) if layer > 0 else 0.0,   # the stream's DRAM draw
            self.post_attention_time, self.host_split)
        work = layer + (host.wait + host.extra if host else 0.0)     # every layer's compute
        stream = plan.stream
        depth = stream.depth if stream else 1
        pre = min(prestaged_layers, n) if stream and stream.num_blocks else 0
        tail = 0.0
        fresh = stream.new_since(prefetch.stream) if pre and prefetch is not None else ()
        if fresh:
            tail = self.copy_time(sum(r.count for r in fresh) * self._block_bytes_layer, calls=len(fresh))
        move = self.stream_copy_time(plan)
        blocking, blocking_bytes = self.blocking_copies(plan)
        start = self._step_overhead + blocking + self.embed_time(shape)
        ready = prefetch.end[:pre] if prefetch is not None else ()
        delay = max([0.0] + [r - (start + j * work) for j, r in enumerate(ready)])
        begins, ends, issues, c_starts, c_ends, waits = schedule_columns(
            [work] * n, [tail] * pre + [move] * (n - pre), depth, start=start + delay)
        busy = [NAN] * n
        if prefetch is not None:
            prefetch.merge_into(issues, c_starts, c_ends, busy, min(pre, len(prefetch.end)))
        if delay > 0:
            waits[0] += delay
        layer_bytes = (self.stream_layer_bytes(plan),) * n
        if host is None:
            nans, zeros = (NAN,) * n, (0.0,) * n
            host_columns = (nans, nans, zeros, (0,) * n, zeros)
        else:
            host_columns = (tuple([c + host.start for c in begins]), tuple([c + host.start + host.path for c in begins]),
                            (host.wait + host.extra,) * n, (host.bytes,) * n, (host.window,) * n)
        layers = StreamedLayers(tuple(begins), tuple(ends), tuple(issues), tuple(c_starts), tuple(c_ends),
                                tuple(waits), layer_bytes, tuple(busy), *host_columns, host_share=host is not None)
        end = (layers.compute_end[-1] if n else start) + self.lm_head_time(shape)
        offload_time, async_bytes = self.offload_copy(plan)
        end = max(end, self._step_overhead + blocking + offload_time)
        return StepTiming(duration=end, layers=layers,
                          blocking_copy_time=blocking, blocking_copy_bytes=blocking_bytes,
                          async_copy_bytes=async_bytes, emulated_link=True)

    def _compute_only_timing(self, plan: StepPlan, shape: StepShape) -> StepTiming:
        """step_timing when nothing streams: the layers run back to back (the same additions
        schedule_layers makes, without a LayerTiming per layer)."""
        blocking, blocking_bytes = self.blocking_copies(plan)
        start = self._step_overhead + blocking + self.embed_time(shape)
        bounds = tuple(itertools.accumulate(itertools.repeat(self.layer_time(shape), self.spec.num_layers),
                                            initial=start))
        end = bounds[-1] + self.lm_head_time(shape)
        offload_time, async_bytes = self.offload_copy(plan)
        end = max(end, self._step_overhead + blocking + offload_time)
        return StepTiming(duration=end, layers=ComputeOnlyLayers(bounds),
                          blocking_copy_time=blocking, blocking_copy_bytes=blocking_bytes,
                          async_copy_bytes=async_bytes, emulated_link=True)

    def tail_prefetch(self, timing: StepTiming, plan: StepPlan) -> "Prefetch | None":
        """The next step's copies for layers < depth, as the cpu executor issues them: layer j's
        once this step's layer L - depth + j has freed its slot, behind this step's own copies.
        Times are relative to this step's end."""
        if not plan.stream or not plan.stream.num_blocks or not timing.layers:
            return None
        layers, depth, copy = timing.layers, plan.stream.depth, self.stream_copy_time(plan)
        n = len(layers)
        compute_end, copy_end = layers.compute_end, layers.copy_end      # StreamedLayers: something streamed
        link = next((e for e in reversed(copy_end) if not math.isnan(e)), 0.0)   # copies run in layer order
        issue, begin, end = [], [], []
        for j in range(min(depth, n)):
            freed = compute_end[n - depth + j] if n - depth + j >= 0 else 0.0
            issue.append(freed - timing.duration)
            begin.append(max(freed, link) - timing.duration)
            link = max(freed, link) + copy
            end.append(link - timing.duration)
        return Prefetch(plan.stream, tuple(issue), tuple(begin), tuple(end))


@dataclass(frozen=True)
class Prefetch:
    """Copies made ahead of a step for its layers < depth (seconds relative to a reference time),
    carrying the blocks `stream` staged."""

    stream: StreamPlan
    issue: tuple[float, ...]
    start: tuple[float, ...]
    end: tuple[float, ...]

    def shifted(self, dt: float) -> "Prefetch":
        return Prefetch(self.stream, *(tuple(t + dt for t in ts) for ts in (self.issue, self.start, self.end)))

    def merge_into(self, issue: list[float], start: list[float], end: list[float], busy: list[float],
                   count: int) -> None:
        """Make the prefetch the first copy of layers < count in a step's copy columns (the cpu
        executor's convention): a layer that copied nothing itself gets the prefetch's times; one
        that copied the appended rest too spans both, busy for their sum."""
        for j in range(count):
            if not math.isnan(start[j]):
                busy[j] = (self.end[j] - self.start[j]) + (end[j] - start[j])
                end[j] = max(self.end[j], end[j])
            else:
                end[j] = self.end[j]
            issue[j], start[j] = self.issue[j], self.start[j]
