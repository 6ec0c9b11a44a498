"""The cost of policy hybrid's host share in one decode layer: queries out, attention over host KV on
the host CPU, partials back, against the device's own attention it overlaps with.

Per layer, once the device has its queries (after the QKV projection) it copies the rows with a
host share to the host (device-to-host), the host attends over their host-computed blocks at its
attention rate, and the partial outputs and log-sum-exps come back (host-to-device); the device
meanwhile attends over its own and streamed blocks. The merge waits for the later of the two: the
device's wait is the host path minus the device's attention time. Host memory bandwidth is shared:
the link's streaming reads and the host's attention draw on the same DRAM.
The host and its queries are modelled one layer at a time: layer l + 1 needs layer l's output.
With the within-layer split (`core/host_split.py`) the rows without a host share run their
post-attention linears before the merge: the window grows by that time and the rows with one run
a second post-attention pass (its extra device time from the cost model's roofline per sub-batch).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core.host_split import decide_split, split_cost
from ..config import check_field
from ..model_spec import DTYPE_BYTES, ModelSpec
from .hardware import Hardware
from .step_shape import StepShape

PARTIAL_LSE_BYTES = 4            # float32 log-sum-exp per query head


@dataclass(frozen=True)
class HostLayer:
    """One layer's host share (seconds relative to the layer's compute start)."""

    start: float                 # queries leave the device (end of the QKV projection)
    path: float                  # queries out + host attention + partials back
    wait: float                  # the device's wait at the merge
    window: float                # device time before the merge: attention (+ D's post-attention, split)
    bytes: int                   # host KV attended
    split: bool = False          # sub-batch D ran its post-attention linears before the merge
    extra: float = 0.0           # split: the second post-attention pass's extra device time


@dataclass(frozen=True)
class HostAttentionCost:
    spec: ModelSpec
    hardware: Hardware
    dtype: str
    block_size: int
    rate_gbps: float | None = None      # None: the preset's cores and memory (Hardware.host_attention_gbps)

    def __post_init__(self):
        if self.rate_gbps is not None:
            check_field("host_attention_gbps", self.rate_gbps)

    @property
    def rate(self) -> float:
        """Host attention over host KV, bytes/s, when nothing else reads host memory."""
        return (self.rate_gbps or self.hardware.host_attention_gbps) * 1e9

    @property
    def block_bytes_per_layer(self) -> int:
        return self.spec.kv_block_bytes(self.block_size, self.dtype) // self.spec.num_layers

    def attention_time(self, host_bytes: int, streamed_bytes_per_s: float = 0.0) -> float:
        """Seconds the host attends `host_bytes` of KV while the link streams from host memory at
        `streamed_bytes_per_s`: bounded by the cores' rate and by what DRAM has left."""
        if host_bytes <= 0:
            return 0.0
        dram = self.hardware.host_memory_gbps * 1e9
        left = max(dram - streamed_bytes_per_s, 0.05 * dram)
        return host_bytes / min(self.rate, left)

    def layer(self, shape: StepShape, qkv_time: float, device_attention_time: float,
              h2d_bytes_per_s: float, d2h_bytes_per_s: float, latency: float,
              streamed_bytes_per_s: float = 0.0, post=None, split: str = "off") -> HostLayer | None:
        """The host share of one decode layer of a step of `shape` (None when it has none): its
        host rows and blocks, its token rows. `post(rows)`: the device's post-attention seconds for
        `rows` token rows; `split`: the host_split mode."""
        blocks, rows, tokens = shape.host_blocks, shape.host_rows, shape.tokens
        if not blocks:
            return None
        s, db = self.spec, DTYPE_BYTES[self.dtype]
        q_bytes = rows * s.num_heads * s.head_dim * db
        partial_bytes = rows * s.num_heads * (s.head_dim * db + PARTIAL_LSE_BYTES)
        nbytes = blocks * self.block_bytes_per_layer
        path = (2 * latency + q_bytes / d2h_bytes_per_s + partial_bytes / h2d_bytes_per_s
                + self.attention_time(nbytes, streamed_bytes_per_s))
        wait = max(0.0, path - device_attention_time)
        if post is not None and split != "off":
            p_d, p_h, p_all = post(tokens - rows), post(rows), post(tokens)
            if decide_split(split, tokens - rows, wait, p_d, p_h, p_all):
                w, extra = split_cost(wait, p_d, p_h, p_all)
                return HostLayer(qkv_time, path, w, device_attention_time + p_d, nbytes, True, extra)
        return HostLayer(qkv_time, path, wait, device_attention_time, nbytes)


def hybrid_bound(cm, batch: int, context: int) -> dict:
    """Per decode step of `batch` sequences at `context` tokens: how much host-resident KV (GB, all
    layers) each host path can serve without stalling the device, and which bound limits hybrid.

    stream: the link over a whole device layer; host: the host's attention rate over the device's
    attention time (the window one batch leaves it: queries exist only after the QKV projection and
    the next layer needs the merged output); both read host DRAM, which caps their sum. `issue_host`
    is the looser figure that lets the host overlap the whole layer (host rate x layer time).
    `device` is the KV the device itself reads per step, for scale.

    Pipelining, drawn next to it (KV per second against the unsplit hybrid's, the throughput ratio
    at equal context): `split_*` the within-layer split the executors run (window + D's
    post-attention linears, a second post-attention pass for the H rows), `pipeline_*` NEO's
    cross-layer asymmetric pipeline (window: D's whole layer; every linear of the layer twice),
    analysed only. H rows: as many as the host-computed KV fills at `context`."""
    shape = StepShape.decode(max(1, batch), max(1, context))
    n, hw = cm.spec.num_layers, cm.hardware
    layer = cm.layer_time(shape)
    _, window = cm.layer_parts(shape)
    link_rate, dram_rate, host_rate = (cm.link_bandwidth_gbps or hw.h2d_gbps), hw.host_memory_gbps, cm.host.rate / 1e9
    link = link_rate * layer * n
    host = host_rate * window * n
    dram = dram_rate * layer * n
    extra = min(dram, link + host)
    limit = "host memory bandwidth" if dram < link + host else \
        "link" if link >= host else "host attention (cores)" if cm.host.rate / 1e9 < hw.host_memory_gbps \
        else "host memory bandwidth"
    device = shape.kv_tokens * cm.spec.kv_bytes_per_token_per_layer(cm.dtype) * n / 1e9
    row_gb = device / shape.tokens                       # one sequence's KV at `context`, all layers
    unsplit = (device + extra) / layer

    def pipelined(window_of, time_of) -> tuple[float, float, float]:
        """(extra GB, device seconds per layer, window) at the H rows the host share fills."""
        rows, gb, t, w = 0, 0.0, layer, window
        for _ in range(50):                              # rows <-> host share: a fixed point
            t, w = time_of(rows), window_of(rows)
            gb = min(dram_rate * t * n, link_rate * t * n + host_rate * w * n)
            new = min(shape.tokens - 1, int(min(host_rate * w * n, gb) / row_gb))
            if new == rows:
                break
            rows = new
        return gb, t, w

    post = cm.post_attention_time
    split_gb, split_t, split_w = pipelined(lambda h: window + post(shape.tokens - h),
                                           lambda h: layer + post(shape.tokens - h) + post(h) - post(shape.tokens))
    pipe_gb, pipe_t, pipe_w = pipelined(
        lambda h: window + cm.linear_time(shape.tokens - h),
        lambda h: layer + cm.linear_time(shape.tokens - h) + cm.linear_time(h) - cm.linear_time(shape.tokens))
    return {"layer_ms": layer * 1e3, "attention_ms": window * 1e3, "stream_gb": link,
            "host_gb": host, "dram_gb": dram, "hybrid_gb": extra, "pie_gb": min(link, dram),
            "issue_host_gb": cm.host.rate / 1e9 * layer * n, "device_kv_gb": device, "limit": limit,
            "split_window_ms": split_w * 1e3, "split_layer_ms": split_t * 1e3, "split_gb": split_gb,
            "split_ratio": (device + split_gb) / split_t / unsplit,
            "pipeline_window_ms": pipe_w * 1e3, "pipeline_layer_ms": pipe_t * 1e3, "pipeline_gb": pipe_gb,
            "pipeline_ratio": (device + pipe_gb) / pipe_t / unsplit}
