"""Step timings: what an executor reports for a step, per layer and in total.

`LayerTiming` is one layer's row; the sim reports its layers as columns (`ComputeOnlyLayers`
when nothing streamed, `StreamedLayers` otherwise) and builds a row only when one is read:
it makes millions of layers and reads few. `StepTiming` sums a per-layer figure over the layers.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from operator import attrgetter

NAN = math.nan


@dataclass(frozen=True)
class LayerTiming:
    """Seconds since the step's start. Copy fields are NaN when the layer streamed nothing."""

    layer: int
    compute_start: float
    compute_end: float
    copy_issue: float = NAN
    copy_start: float = NAN
    copy_end: float = NAN
    wait: float = 0.0            # time compute waited for this layer's copy (the stall)
    bytes: int = 0
    copy_busy: float = NAN       # link time when the copy ran in parts (prefetch + appended tail)
    host_start: float = NAN      # hybrid: the host's share of this layer's attention (queries out,
    host_end: float = NAN        # attention over host KV, partials back), NaN when it had none
    host_wait: float = 0.0       # time the device waited for the host's partials before the merge, plus,
                                 # split (core/host_split.py), the second post-attention pass's extra
    host_bytes: int = 0          # host KV the host attended for this layer
    host_window: float = 0.0     # device time from handing the queries over to reaching the merge

    @property
    def host_time(self) -> float:
        return 0.0 if math.isnan(self.host_start) else self.host_end - self.host_start

    @property
    def compute_time(self) -> float:
        return self.compute_end - self.compute_start

    @property
    def copy_time(self) -> float:
        if math.isnan(self.copy_start):
            return 0.0
        return self.copy_busy if not math.isnan(self.copy_busy) else self.copy_end - self.copy_start


@dataclass(frozen=True)
class ComputeOnlyLayers:
    """The layers of a step that streamed nothing, as one column of boundaries: layer l computes
    from bounds[l] to bounds[l + 1]. A sequence of LayerTiming, built on access (the sim makes
    millions of these and reads few)."""

    bounds: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __getitem__(self, l):
        if isinstance(l, slice):
            return tuple(self[i] for i in range(*l.indices(len(self))))
        if l < 0:
            l += len(self)
        if not 0 <= l < len(self):
            raise IndexError(l)
        return LayerTiming(l, self.bounds[l], self.bounds[l + 1], wait=0.0)

    def __iter__(self):
        return (self[l] for l in range(len(self)))

    @property
    def compute_time(self) -> float:
        b = self.bounds
        return sum(map(operator.sub, b[1:], b[:-1]))             # layer l: b[l + 1] - b[l]


@dataclass(frozen=True)
class StreamedLayers:
    """The layers of a step that streamed or had a host-computed share, as columns (one per
    LayerTiming field): layer l is LayerTiming(l, compute_start[l], compute_end[l], ...), built on
    access."""

    compute_start: tuple[float, ...]
    compute_end: tuple[float, ...]
    copy_issue: tuple[float, ...]
    copy_start: tuple[float, ...]
    copy_end: tuple[float, ...]
    wait: tuple[float, ...]
    bytes: tuple[int, ...]
    copy_busy: tuple[float, ...]
    host_start: tuple[float, ...]
    host_end: tuple[float, ...]
    host_wait: tuple[float, ...]
    host_bytes: tuple[int, ...]
    host_window: tuple[float, ...]
    host_share: bool = False        # False: the host columns hold no share (NaN times, zeros)

    def __len__(self) -> int:
        return len(self.compute_start)

    def __getitem__(self, l):
        if isinstance(l, slice):
            return tuple(self[i] for i in range(*l.indices(len(self))))
        if l < 0:
            l += len(self)
        if not 0 <= l < len(self):
            raise IndexError(l)
        return LayerTiming(l, self.compute_start[l], self.compute_end[l], self.copy_issue[l], self.copy_start[l],
                           self.copy_end[l], self.wait[l], self.bytes[l], self.copy_busy[l], self.host_start[l],
                           self.host_end[l], self.host_wait[l], self.host_bytes[l], self.host_window[l])

    def __iter__(self):
        return (self[l] for l in range(len(self)))

    def total(self, figure: str):
        """sum(getattr(layer, figure) for layer in self), from the columns (in layer order, so the
        same float sum)."""
        if figure.startswith("host_") and not self.host_share:
            return 0 if figure == "host_bytes" else 0.0          # a sum of zeros
        if figure == "compute_time":
            return sum(map(operator.sub, self.compute_end, self.compute_start))
        if figure == "copy_time":
            return sum([0.0 if s != s else (b if b == b else e - s)           # x != x: x is NaN
                        for s, e, b in zip(self.copy_start, self.copy_end, self.copy_busy)])
        if figure == "host_time":
            return sum([0.0 if s != s else e - s for s, e in zip(self.host_start, self.host_end)])
        return sum(getattr(self, figure))


@dataclass(frozen=True)
class StepTiming:
    duration: float                      # seconds, whole step
    layers: "tuple[LayerTiming, ...] | ComputeOnlyLayers | StreamedLayers" = ()
    blocking_copy_time: float = 0.0      # swap-in/out copies before the forward (vllm-swap, shrinking)
    blocking_copy_bytes: int = 0
    async_copy_bytes: int = 0            # device-to-host offload issued this step
    emulated_link: bool = False
    link_cpu_time: float = 0.0           # CPU seconds an emulated link's copies cost (0: DMA or modelled)

    def _total(self, figure: str, zero):
        """A per-layer figure summed over the layers (compute-only layers: nothing streamed or
        host-computed, so only their compute time is not `zero`)."""
        if isinstance(self.layers, ComputeOnlyLayers):
            return self.layers.compute_time if figure == "compute_time" else zero
        if isinstance(self.layers, StreamedLayers):
            return self.layers.total(figure)
        return sum(map(attrgetter(figure), self.layers))

    @property
    def stream_bytes(self) -> int:
        return self._total("bytes", 0)

    @property
    def stall(self) -> float:
        return self._total("wait", 0.0)

    @property
    def copy_time(self) -> float:
        return self._total("copy_time", 0.0)

    @property
    def compute_time(self) -> float:
        return self._total("compute_time", 0.0)

    @property
    def host_wait(self) -> float:
        return self._total("host_wait", 0.0)

    @property
    def host_time(self) -> float:
        return self._total("host_time", 0.0)

    @property
    def host_bytes(self) -> int:
        return self._total("host_bytes", 0)

    @property
    def host_window(self) -> float:
        return self._total("host_window", 0.0)


