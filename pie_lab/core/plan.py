"""Step plans and step results: the plain data passed between the core and an executor.

A plan says what to compute and which bytes to move; an executor runs it and reports timings.
Block moves are block mappings (src block id, dst block id), never copies made by the core.
"""
from __future__ import annotations

import math
from operator import attrgetter
from dataclasses import dataclass, field

from ..sampling import SamplingParams


@dataclass(frozen=True)
class SeqWork:
    """One sequence's share of a step: a prefill chunk or a single decode token.

    block_table entries: >= 0 a GPU pool block; < 0 host block ~v, staged this step at index ~v
    of the layer's staging slot. Policy hybrid: the first `host_computed` entries (host blocks,
    never staged) are attended on the host over host memory; the device attends the rest, and
    the two partial results are merged by log-sum-exp. Only decode tokens use it.
    """

    seq_id: int
    token_ids: tuple[int, ...]
    start_pos: int
    block_table: tuple[int, ...]
    sample: bool                    # sample a token from the last position of this chunk
    sampling: SamplingParams
    num_generated: int              # output tokens so far (sampler offsets, stop checks)
    host_computed: int = 0          # leading block-table entries whose attention runs on the host

    @property
    def context_len(self) -> int:
        return self.start_pos + len(self.token_ids)

    @property
    def is_prefill(self) -> bool:
        return self.start_pos == 0 or len(self.token_ids) > 1


@dataclass(frozen=True)
class CopyRange:
    """`count` consecutive blocks from src..src+count-1 to dst..dst+count-1 (all layers or one)."""

    src: int
    dst: int
    count: int


def coalesce(pairs: list[tuple[int, int]] | tuple[tuple[int, int], ...]) -> tuple[CopyRange, ...]:
    """Merge block mappings into the fewest consecutive ranges (sorted by source)."""
    out: list[CopyRange] = []
    for src, dst in sorted(pairs):
        if out and out[-1].src + out[-1].count == src and out[-1].dst + out[-1].count == dst:
            last = out[-1]
            out[-1] = CopyRange(last.src, last.dst, last.count + 1)
        else:
            out.append(CopyRange(src, dst, 1))
    return tuple(out)


@dataclass(frozen=True)
class StreamPlan:
    """Layer-wise streaming of host-resident blocks into a staging ring of `depth` slots.

    A staged block sits at its host id: layer l's slot holds host block h at index h, so block
    tables keep their host entries (~h) and a block keeps its place for as long as it stays
    staged. Copies are runs of consecutive host ids (the host allocator keeps ids compact), the
    same for every layer; an executor that prefetched the next step's first layers during this
    step's tail copies only the blocks that are new since then (`new_since`).
    """

    depth: int
    host_blocks: tuple[int, ...]           # sorted
    ranges: tuple[CopyRange, ...]

    @property
    def num_blocks(self) -> int:
        return len(self.host_blocks)

    @property
    def capacity(self) -> int:
        """Staging entries a slot needs (the highest staged host id + 1)."""
        return self.host_blocks[-1] + 1 if self.host_blocks else 0

    @classmethod
    def build(cls, depth: int, host_blocks) -> "StreamPlan":
        blocks = tuple(sorted(host_blocks))
        return cls(depth, blocks, _runs(blocks))

    def new_since(self, previous: "StreamPlan | None") -> tuple[CopyRange, ...]:
        """Copies still needed when `previous`'s blocks are already staged (with the same depth)."""
        if previous is None or previous.depth != self.depth:
            return self.ranges
        if previous.host_blocks == self.host_blocks:
            return ()
        had = set(previous.host_blocks)
        return _runs([h for h in self.host_blocks if h not in had])


def _runs(ids) -> tuple[CopyRange, ...]:
    """Sorted unique ids -> identity copies, one per run of consecutive ids."""
    if ids and ids[-1] - ids[0] == len(ids) - 1:          # one run (the host allocator keeps ids compact)
        return (CopyRange(ids[0], ids[0], len(ids)),)
    out: list[CopyRange] = []
    start = prev = None
    for h in ids:
        if prev is not None and h == prev + 1:
            prev = h
            continue
        if start is not None:
            out.append(CopyRange(start, start, prev - start + 1))
        start = prev = h
    if start is not None:
        out.append(CopyRange(start, start, prev - start + 1))
    return tuple(out)


@dataclass(frozen=True)
class StepPlan:
    step_id: int
    seqs: tuple[SeqWork, ...]
    # Block mappings, every layer. Executors apply them in this order, then run the forward:
    swap_out: tuple[tuple[int, int], ...] = ()      # (gpu, host) vllm-swap preemption: blocking copy
    swap_in: tuple[tuple[int, int], ...] = ()       # (host, gpu) back to the GPU: blocking copy
    offload: tuple[tuple[int, int], ...] = ()       # (gpu, host) full blocks to the host tier: async,
                                                    # done by the step's end (the GPU block is freed then)
    stream: StreamPlan | None = None
    released_seq_ids: tuple[int, ...] = ()           # finished or preempted: drop per-sequence state

    @property
    def num_prefill_tokens(self) -> int:
        return sum(len(s.token_ids) for s in self.seqs if s.is_prefill)

    @property
    def num_decode_tokens(self) -> int:
        return sum(1 for s in self.seqs if not s.is_prefill)

    @property
    def num_tokens(self) -> int:
        return sum(len(s.token_ids) for s in self.seqs)

    @property
    def num_streamed_blocks(self) -> int:
        return self.stream.num_blocks if self.stream else 0

    @property
    def num_host_computed_blocks(self) -> int:
        """Host-resident blocks attended on the host this step (policy hybrid), every layer."""
        return sum(s.host_computed for s in self.seqs)


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
    host_wait: float = 0.0       # time the device waited for the host's partials before the merge
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
        return sum(b[l + 1] - b[l] for l in range(len(b) - 1))


@dataclass(frozen=True)
class StepTiming:
    duration: float                      # seconds, whole step
    layers: "tuple[LayerTiming, ...] | ComputeOnlyLayers" = ()
    blocking_copy_time: float = 0.0      # swap-in/out copies before the forward (vllm-swap, shrinking)
    blocking_copy_bytes: int = 0
    async_copy_bytes: int = 0            # device-to-host offload issued this step
    emulated_link: bool = False
    link_cpu_time: float = 0.0           # CPU seconds an emulated link's copy threads spent (0: DMA or modelled)

    def _total(self, figure: str, zero):
        """A per-layer figure summed over the layers (compute-only layers: nothing streamed or
        host-computed, so only their compute time is not `zero`)."""
        if isinstance(self.layers, ComputeOnlyLayers):
            return self.layers.compute_time if figure == "compute_time" else zero
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


@dataclass(frozen=True)
class StepOutput:
    token_ids: dict[int, int] = field(default_factory=dict)   # seq_id -> sampled token
    timing: StepTiming = field(default_factory=lambda: StepTiming(0.0))
