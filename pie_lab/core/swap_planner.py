"""Which full KV blocks of the running batch live on the host, and what streams each layer.

policy "pie": up to `budget` host-resident blocks across the running batch, the oldest full blocks
first: on demand (the default: only as many as the next step would otherwise lack GPU blocks for,
the batch's next blocks and the queued requests it could start) or eagerly (fill the budget at
once); when the budget
shrinks, blocks come back to the GPU where there is room, otherwise their sequence is preempted
(its preemption mode). policy "flexgen": a static fraction of every running sequence's full blocks. policy "hybrid": as pie with `budget + host_budget` host-resident
blocks, split each step: up to `host_budget` of them, the oldest blocks of decoding sequences, are
attended on the host where they live (`host_computed`), the rest stream as in pie. Every other host
block a scheduled sequence reads is streamed layer by layer into a staging ring of `depth` slots;
the ring's memory is withheld from the GPU pool.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..config import EngineConfig, PolicyTraits

from .block_manager import BlockManager
from .plan import StreamPlan
from .scheduler import Schedule, Scheduler
from .sequence import Sequence, host_count_of


class SwapPlanner:
    def __init__(self, blocks: BlockManager, num_layers: int, config: Callable[[], EngineConfig]):
        self.blocks = blocks
        self.num_layers = num_layers
        self._config = config                  # the engine's current config (the knobs' owner)
        self._stream_key, self._stream = None, None     # stream(): the last plan and what it was made from
        self._resident = 0                     # host blocks of the running batch, as the reserve last saw them

    @property
    def traits(self) -> PolicyTraits:
        return self._config().traits

    @property
    def budget(self) -> int:
        return self._config().swap_budget_blocks

    @property
    def depth(self) -> int:
        return self._config().prefetch_depth

    @property
    def fraction(self) -> float:
        return self._config().flexgen_fraction

    @property
    def host_budget(self) -> int:
        return self._config().host_compute_blocks

    @property
    def on_demand(self) -> bool:
        return self._config().offload == "on-demand"

    @property
    def active(self) -> bool:
        return self._config().traits.host_resident

    @property
    def total_budget(self) -> int:
        """Host-resident blocks the running batch may hold (pie, hybrid)."""
        return self._config().host_budget_blocks

    def staging_blocks(self, host_blocks: int, depth: int | None = None) -> int:
        """GPU blocks' worth of memory for a ring of `depth` layer slots holding `host_blocks` blocks each."""
        return math.ceil(min(depth or self.depth, self.num_layers) * host_blocks / self.num_layers)

    @property
    def resident(self) -> int:
        """Host blocks of the running batch when `update_reserve` last counted them."""
        return self._resident

    def update_reserve(self, running) -> None:
        """The staging ring holds the running batch's host-resident blocks: withhold its memory."""
        self._reserve_for(sum(map(host_count_of, running)) if self.active else 0)

    def _reserve_for(self, resident: int) -> None:
        """update_reserve for a running batch holding `resident` host blocks."""
        self._resident = resident
        if self.traits.host_compute:            # the host-computed share is never staged
            resident -= min(resident, self.host_budget)
        self.blocks.gpu.reserved = self.staging_blocks(resident)

    def _target(self, seq: Sequence) -> int:
        return math.floor(self.fraction * seq.num_full_blocks(self.blocks.block_size))

    # -- before scheduling: shrink to the budget --------------------------------------------
    def enforce_budget(self, scheduler: Scheduler, sched: Schedule) -> None:
        if not self.active:
            return
        self.update_reserve(scheduler.running)
        if self._config().budgeted:
            over = self._resident - self.total_budget
            for seq in reversed(list(scheduler.running)):
                if over <= 0:
                    break
                over -= self._give_back(scheduler, sched, seq, min(over, seq.num_host_blocks()))
        else:
            for seq in reversed(list(scheduler.running)):
                excess = seq.num_host_blocks() - self._target(seq)
                if excess > 0:
                    self._give_back(scheduler, sched, seq, excess)

    def _give_back(self, scheduler: Scheduler, sched: Schedule, seq: Sequence, n: int) -> int:
        """Bring n host blocks of seq back to the GPU (newest first), or preempt seq. Returns host blocks
        released. The staging ring shrinks with them, so the next give-back and the scheduler see its room."""
        if self.blocks.gpu.num_free >= n:
            sched.swap_in.extend(self.blocks.bring_back(seq, n))
            released = n
        else:
            released = seq.num_host_blocks()
            scheduler.preempt(seq, sched)
        self._reserve_for(self._resident - released)   # seq held them in the running batch, which lost them
        return released

    # -- after scheduling: fill up to the budget, and stream --------------------------------
    def plan_offload(self, sched: Schedule, scheduler: Scheduler | None = None) -> list[tuple[int, int]]:
        if not self.active:
            return []
        moves: list[tuple[int, int]] = []
        seqs = [s for s, _ in sched.work]
        held = sum(map(host_count_of, seqs))
        room = self.total_budget - held if self._config().budgeted else None
        if room is not None and room > 0 and self.on_demand:
            room = min(room, self.shortfall(sched.work, scheduler))
        # With depth >= num_layers the staging ring costs what offloading saves: offload only
        # while the GPU has headroom, never in a way that starves the batch of blocks.
        headroom = None if self.depth < self.num_layers else self.blocks.gpu.num_free - len(sched.work) - 1
        for seq in seqs:
            if room is not None and room <= 0:
                break                           # the budget is full: nothing more moves
            want = room if room is not None else self._target(seq) - seq.num_host_blocks()
            if headroom is not None:
                want = min(want, headroom)
            n = min(want, self.blocks.host.num_free, seq.num_full_blocks(self.blocks.block_size) - seq.host_count)
            if n > 0:
                moves += self.blocks.offload(seq, n)
                want -= n
                headroom = None if headroom is None else headroom - n
            if room is not None:
                room = want
        self._reserve_for(held + len(moves))       # update_reserve(seqs): each move is one more host block
        return moves

    # -- what decode runs predict of the rules above (core/decode_run.py) ------------------------
    def offload_may_fill(self) -> "bool | None":
        """For the running batch as `update_reserve` last counted it, decoding: whether plan_offload
        may move blocks (pie, hybrid: under the host budget, with host room), or None when blocks
        move whatever the batch does (over budget: enforce_budget; eager offload bounded by the
        GPU's headroom, depth >= num_layers)."""
        config = self._config()
        if not config.budgeted:
            return False
        total = config.host_budget_blocks
        if self._resident > total:
            return None
        fill = self._resident < total and self.blocks.host.num_free > 0
        if fill and config.offload != "on-demand" and config.prefetch_depth >= self.num_layers:
            return None
        return fill

    def steps_to_eager_offload(self, work) -> int:
        """Decode steps of `work` (every sequence one token a step) before eager offload moves a
        block: plan_offload moves a sequence's next block in the step that first sees it full."""
        bs = self.blocks.block_size
        return min((s.host_count + 1) * bs - s.num_computed_tokens for s, _ in work)

    def shortfall_possible(self, batch: int, scheduler: Scheduler, free: int) -> bool:
        """Whether `shortfall` may be > 0 in a step where `batch` sequences decode and `free` GPU
        blocks (or more) are free: not while one block for each and the queue's need fit."""
        return self.queue_need(scheduler) + batch > free

    def shortfall(self, work, scheduler: Scheduler | None) -> int:
        """Host blocks to offload now so the next step finds the GPU blocks it needs: each running
        sequence's next blocks and the queued requests', less the free ones, over what one host block
        frees net of the staging ring it costs (0 when the ring costs all it frees)."""
        free = self.blocks.gpu.num_free
        queued = self.queue_need(scheduler) if scheduler is not None else 0
        if queued + len(work) <= free and not self._config().chunked_prefill:
            return 0          # without chunks every running sequence's next step is one token: one block at most
        short = self.next_step_need(work, None) + queued - free
        saved = 1 - min(self.depth, self.num_layers) / self.num_layers
        return math.ceil(short / saved) if short > 0 and saved > 0 else 0

    def next_step_need(self, work, scheduler: Scheduler | None) -> int:
        """GPU blocks the next step asks for: the `work` sequences' next ones (after this step's
        tokens) and those of the queued sequences it could start (see `queue_need`)."""
        bs = self.blocks.block_size
        need = 0
        for seq, n in work:
            done = seq.num_computed_tokens + n
            need += max(0, -(-(done + max(1, seq.num_tokens - done)) // bs) - len(seq.block_table))
        return need + (self.queue_need(scheduler) if scheduler is not None else 0)

    def queue_need(self, scheduler: Scheduler) -> int:
        """GPU blocks of the queued sequences (swapped, then waiting, in order) that the next step
        could start if the GPU had room: as many as the batch has free slots and tokens for, after
        one decode token per running sequence."""
        limits = scheduler.config
        slots = limits.max_num_seqs - len(scheduler.running)
        tokens = limits.max_num_batched_tokens - len(scheduler.running)
        need = 0
        for queue in (scheduler.swapped, scheduler.waiting):
            for seq in queue:
                n = min(seq.num_tokens - seq.num_computed_tokens, tokens) if limits.chunked_prefill \
                    else seq.num_tokens - seq.num_computed_tokens
                if slots <= 0 or n <= 0 or n > tokens:
                    return need
                need += self.blocks.blocks_needed(seq, n) + seq.num_host_blocks()
                slots -= 1
                tokens -= n
        return need

    def split(self, sched: Schedule, offloaded: list[tuple[int, int]]) -> dict[int, int]:
        """hybrid: seq_id -> leading host blocks attended on the host this step, up to host_budget
        over the batch, oldest first. Decode tokens only (a prefill chunk streams its context);
        blocks offloaded this step are still read from the GPU, so they are never host-computed."""
        if not self.traits.host_compute or self.host_budget <= 0:
            return {}
        fresh = {h for _, h in offloaded}
        left, out = self.host_budget, {}
        for seq, n in sched.work:
            if left <= 0:
                break
            if n != 1 or seq.num_computed_tokens != seq.num_tokens - 1 or not seq.host_count:
                continue
            settled = next((i for i, b in enumerate(seq.block_table[:seq.host_count]) if ~b in fresh),
                           seq.host_count)
            k = min(left, settled)
            if k:
                out[seq.seq_id] = k
                left -= k
        return out

    def stream(self, sched: Schedule, offloaded: list[tuple[int, int]],
               host_computed: dict[int, int] | None = None) -> StreamPlan | None:
        """Host blocks the step reads on the device; blocks offloaded this step are still read from
        the GPU, and host-computed ones (hybrid) from host memory by the host."""
        if not offloaded:       # the same host-holding sequences and split, no table changed: the same plan
            key = (self.blocks.host_moves, self.depth, [id(seq) for seq, _ in sched.work if seq.host_count],
                   host_computed or None)
            if key != self._stream_key:
                self._stream_key, self._stream = key, self._stream_of(sched, offloaded, host_computed)
            return self._stream
        return self._stream_of(sched, offloaded, host_computed)

    def _stream_of(self, sched: Schedule, offloaded: list[tuple[int, int]],
                   host_computed: dict[int, int] | None) -> StreamPlan | None:
        fresh = {h for _, h in offloaded}
        hc = host_computed or {}
        refs = []                                   # host block refs (~id) the batch reads on the device
        for seq, _ in sched.work:
            if seq.host_count:
                refs += seq.block_table[hc.get(seq.seq_id, 0):seq.host_count]
        if not refs:
            return None
        ids = np.invert(np.array(refs, dtype=np.int64))
        ids.sort()                                  # ascending host ids
        if fresh:
            ids = ids[~np.isin(ids, np.fromiter(fresh, np.int64, len(fresh)))]
        return StreamPlan.from_sorted(min(self.depth, self.num_layers), ids) if len(ids) else None
