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

    @classmethod
    def of(cls, seq, n: int, fresh: dict[int, int], host_computed: dict[int, int]) -> "SeqWork":
        """Sequence `seq`'s next `n` tokens; `fresh`: host refs (~id) of blocks offloaded this step ->
        their GPU blocks, still read there; `host_computed`: the split (seq_id -> blocks)."""
        start, table, out = seq.num_computed_tokens, seq.block_table, seq.output_token_ids
        num_tokens = len(seq.prompt_token_ids) + len(out)
        if fresh and seq.host_count:                # host blocks are the table's first entries
            table = [fresh.get(b, b) for b in table[:seq.host_count]] + table[seq.host_count:]
        tokens = (seq.last_token,) if n == 1 and start == num_tokens - 1 else tuple(seq.token_ids[start:start + n])
        return cls(seq.seq_id, tokens, start, tuple(table), start + n == num_tokens,
                   seq.sampling, len(out), host_computed.get(seq.seq_id, 0))

    @property
    def context_len(self) -> int:
        return self.start_pos + len(self.token_ids)


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


def attn_pairs(start: int, tokens: int) -> int:
    """(query, key) pairs `tokens` new tokens after `start` attend: causal within the chunk
    (a decode token: start + 1)."""
    return tokens * start + tokens * (tokens + 1) // 2


class BatchSummary(NamedTuple):
    """A step's sequences summed up, built once per plan: what the cost model, the iteration
    record and the plan's properties read. For an executor that takes summarised plans (the sim)
    it stands in for the plan's SeqWork: it samples from (seq_id, position) alone. A NamedTuple:
    decode runs build one per step."""

    batch_size: int
    tokens: int                     # query tokens computed this step
    attn_pairs: int                 # (query, key) pairs attended, causal within a prefill chunk
    context_tokens: int             # KV positions read, the new ones included
    prefill_tokens: int             # tokens of prefill chunks (a chunk from position 0, or of > 1 token)
    decode_tokens: int              # sequences decoding one token
    sampled: int                    # positions that sample a token
    sample_ids: tuple[int, ...]     # sequences that sample a token, in batch order (a decode run's: none,
    sample_positions: tuple[int, ...]   # its tokens are sampled in bulk)
    stop_ids: tuple[tuple[int, ...], ...]
    host_rows: int = 0              # hybrid: sequences with a host-computed share (sub-batch H)
    host_computed_blocks: int = 0   # hybrid: their host-computed blocks, summed

    @classmethod
    def of_work(cls, work, host_computed: dict[int, int] | None = None) -> "BatchSummary":
        """From (sequence, tokens fed) pairs and the split (seq_id -> host-computed blocks, each > 0)."""
        pairs = context = prefill = decode = 0
        ids, positions, stops = [], [], []
        for seq, q in work:
            p = seq.num_computed_tokens
            end = p + q
            context += end
            if q == 1 and p > 0:                  # a decode token (the rule of of_seqs below)
                decode += 1
                pairs += end                      # attn_pairs(p, 1), without the call
            else:
                prefill += q
                pairs += attn_pairs(p, q)
            if end == len(seq.prompt_token_ids) + len(seq.output_token_ids):
                ids.append(seq.seq_id)
                positions.append(end)
                stops.append(seq.sampling.stop_token_ids)
        hc = host_computed or {}
        return cls(len(work), prefill + decode, pairs, context, prefill, decode, len(ids), tuple(ids),
                   tuple(positions), tuple(stops), len(hc), sum(hc.values()))

    @classmethod
    def of_seqs(cls, seqs: "tuple[SeqWork, ...]") -> "BatchSummary":
        """From a plan's SeqWork: what of_work gives for the sequences they were built from."""
        pairs = context = prefill = decode = rows = blocks = 0
        ids, positions, stops = [], [], []
        for s in seqs:
            p, q = s.start_pos, len(s.token_ids)
            context += p + q
            pairs += attn_pairs(p, q)
            if q == 1 and p > 0:
                decode += 1
            else:
                prefill += q
            if s.sample:
                ids.append(s.seq_id)
                positions.append(p + q)
                stops.append(s.sampling.stop_token_ids)
            if s.host_computed:
                rows += 1
                blocks += s.host_computed
        return cls(len(seqs), prefill + decode, pairs, context, prefill, decode, len(ids), tuple(ids),
                   tuple(positions), tuple(stops), rows, blocks)

    @classmethod
    def decoding(cls, batch: int, context_tokens: int, host_rows: int = 0, host_blocks: int = 0) -> "BatchSummary":
        """A decode run's step: `batch` sequences decoding one token each over `context_tokens` KV
        positions (its tokens are sampled in bulk, core/decode_run.py: no sample ids here)."""
        return cls(batch, batch, context_tokens, context_tokens, 0, batch, batch, (), (), (), host_rows, host_blocks)


@dataclass(frozen=True)
class StepPlan:
    step_id: int
    seqs: tuple[SeqWork, ...]                       # empty when `summary` stands in for them (the sim)
    # Block mappings, every layer. Executors apply them in this order, then run the forward:
    swap_out: tuple[tuple[int, int], ...] = ()      # (gpu, host) vllm-swap preemption: blocking copy
    swap_in: tuple[tuple[int, int], ...] = ()       # (host, gpu) back to the GPU: blocking copy
    offload: tuple[tuple[int, int], ...] = ()       # (gpu, host) full blocks to the host tier: async,
                                                    # done by the step's end (the GPU block is freed then)
    stream: StreamPlan | None = None
    released_seq_ids: tuple[int, ...] = ()           # finished or preempted: drop per-sequence state
    summary: BatchSummary | None = None             # the sequences summed up (None: from `seqs`)

    def __post_init__(self):
        if self.summary is None:                    # a plan built without one: its SeqWork summed up
            object.__setattr__(self, "summary", BatchSummary.of_seqs(self.seqs))

    @property
    def batch_size(self) -> int:
        return self.summary.batch_size

    @property
    def num_prefill_tokens(self) -> int:
        return self.summary.prefill_tokens

    @property
    def num_decode_tokens(self) -> int:
        return self.summary.decode_tokens

    @property
    def num_tokens(self) -> int:
        return self.summary.tokens

    @property
    def num_streamed_blocks(self) -> int:
        return self.stream.num_blocks if self.stream else 0

    @property
    def num_host_computed_blocks(self) -> int:
        """Host-resident blocks attended on the host this step (policy hybrid), every layer."""
        return self.summary.host_computed_blocks


@dataclass(frozen=True)
class StepOutput:
    token_ids: dict[int, int] = field(default_factory=dict)   # seq_id -> sampled token
    timing: StepTiming = field(default_factory=lambda: StepTiming(0.0))
