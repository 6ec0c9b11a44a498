"""Step plans and step results: the plain data passed between the core and an executor.

A plan says what to compute and which bytes to move; an executor runs it and reports timings.
Block moves are block mappings (src block id, dst block id), never copies made by the core.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from operator import sub
from typing import NamedTuple

import numpy as np

from ..sampling import SamplingParams
from .timing import NAN, ComputeOnlyLayers, LayerTiming, StepTiming, StreamedLayers  # noqa: F401 (re-exported)


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


class CopyRange(NamedTuple):
    """`count` consecutive blocks from src..src+count-1 to dst..dst+count-1 (all layers or one).
    A NamedTuple (immutable, compared by value) because a stream plan builds dozens per step."""

    src: int
    dst: int
    count: int


def coalesce(pairs: list[tuple[int, int]] | tuple[tuple[int, int], ...]) -> tuple[CopyRange, ...]:
    """Merge block mappings into the fewest consecutive ranges (sorted by source)."""
    out: list[CopyRange] = []
    first_src = first_dst = count = 0
    for src, dst in sorted(pairs):
        if count and first_src + count == src and first_dst + count == dst:
            count += 1
            continue
        if count:
            out.append(CopyRange(first_src, first_dst, count))
        first_src, first_dst, count = src, dst, 1
    if count:
        out.append(CopyRange(first_src, first_dst, count))
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
        return cls.from_sorted(depth, np.sort(np.fromiter(host_blocks, np.int64)))

    @classmethod
    def from_sorted(cls, depth: int, host_blocks: np.ndarray) -> "StreamPlan":
        """build() for host ids already in ascending order (an int64 array)."""
        return cls(depth, tuple(host_blocks.tolist()), _runs(host_blocks))

    def new_since(self, previous: "StreamPlan | None") -> tuple[CopyRange, ...]:
        """Copies still needed when `previous`'s blocks are already staged (with the same depth)."""
        if previous is None or previous.depth != self.depth:
            return self.ranges
        if previous is self or previous.host_blocks == self.host_blocks:
            return ()
        return _runs(np.array(sorted(set(self.host_blocks).difference(previous.host_blocks)), dtype=np.int64))


def _runs(ids: np.ndarray) -> tuple[CopyRange, ...]:
    """Sorted unique ids (an int64 array) -> identity copies, one per run of consecutive ids."""
    if not len(ids):
        return ()
    bounds = [0, *(np.flatnonzero(ids[1:] - ids[:-1] != 1) + 1).tolist(), len(ids)]    # where runs start, and the end
    firsts = ids[bounds[:-1]].tolist()
    return tuple(map(CopyRange, firsts, firsts, map(sub, bounds[1:], bounds)))


@dataclass(frozen=True)
class BatchSummary:
    """A step's sequences summed up, for an executor that times a step from its shape and
    samples from (seq_id, position) alone (the sim): it stands in for the plan's SeqWork."""

    batch_size: int
    tokens: int                     # query tokens computed this step
    attn_pairs: int                 # (query, key) pairs attended, causal within a prefill chunk
    context_tokens: int             # KV positions read, the new ones included
    prefill_tokens: int
    decode_tokens: int
    sample_ids: tuple[int, ...]     # sequences that sample a token, in batch order
    sample_positions: tuple[int, ...]
    stop_ids: tuple[tuple[int, ...], ...]
    host_rows: int = 0              # hybrid: sequences with a host-computed share (sub-batch H)
    host_computed_blocks: int = 0   # hybrid: their host-computed blocks, summed

    @classmethod
    def of_work(cls, work, host_computed: dict[int, int] | None = None) -> "BatchSummary":
        """From (sequence, tokens fed) pairs and the split (seq_id -> host-computed blocks, each > 0):
        what SeqWork.context_len, is_prefill, sample and host_computed say."""
        pairs = context = prefill = decode = 0
        ids, positions, stops = [], [], []
        for seq, q in work:
            p = seq.num_computed_tokens
            end = p + q
            context += end
            if q == 1 and p > 0:                  # a decode token: it attends to its `end` positions
                decode += 1
                pairs += end
            else:
                prefill += q
                pairs += q * p + q * (q + 1) // 2
            if end == len(seq.prompt_token_ids) + len(seq.output_token_ids):
                ids.append(seq.seq_id)
                positions.append(end)
                stops.append(seq.sampling.stop_token_ids)
        hc = host_computed or {}
        return cls(len(work), prefill + decode, pairs, context, prefill, decode, tuple(ids), tuple(positions),
                   tuple(stops), len(hc), sum(hc.values()))


@dataclass(frozen=True)
class StepPlan:
    step_id: int
    seqs: tuple[SeqWork, ...]                       # empty when `summary` stands in for them
    # Block mappings, every layer. Executors apply them in this order, then run the forward:
    swap_out: tuple[tuple[int, int], ...] = ()      # (gpu, host) vllm-swap preemption: blocking copy
    swap_in: tuple[tuple[int, int], ...] = ()       # (host, gpu) back to the GPU: blocking copy
    offload: tuple[tuple[int, int], ...] = ()       # (gpu, host) full blocks to the host tier: async,
                                                    # done by the step's end (the GPU block is freed then)
    stream: StreamPlan | None = None
    released_seq_ids: tuple[int, ...] = ()           # finished or preempted: drop per-sequence state
    summary: BatchSummary | None = None             # the sequences summed up, for the sim

    @property
    def batch_size(self) -> int:
        return self.summary.batch_size if self.summary else len(self.seqs)

    @property
    def num_prefill_tokens(self) -> int:
        if self.summary:
            return self.summary.prefill_tokens
        return sum(len(s.token_ids) for s in self.seqs if s.is_prefill)

    @property
    def num_decode_tokens(self) -> int:
        if self.summary:
            return self.summary.decode_tokens
        return sum(1 for s in self.seqs if not s.is_prefill)

    @property
    def num_tokens(self) -> int:
        if self.summary:
            return self.summary.tokens
        return sum(len(s.token_ids) for s in self.seqs)

    @property
    def num_streamed_blocks(self) -> int:
        return self.stream.num_blocks if self.stream else 0

    @property
    def num_host_computed_blocks(self) -> int:
        """Host-resident blocks attended on the host this step (policy hybrid), every layer."""
        if self.summary:
            return self.summary.host_computed_blocks
        return sum(s.host_computed for s in self.seqs)


@dataclass(frozen=True)
class StepOutput:
    token_ids: dict[int, int] = field(default_factory=dict)   # seq_id -> sampled token
    timing: StepTiming = field(default_factory=lambda: StepTiming(0.0))
