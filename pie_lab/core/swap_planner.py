"""Which full KV blocks of the running batch live on the host, and what streams each layer.

policy "pie": up to `budget` host-resident blocks across the running batch, filled eagerly with the
oldest full blocks; when the budget shrinks, blocks come back to the GPU where there is room,
otherwise their sequence is preempted (its preemption mode). policy "flexgen": a static fraction of every
running sequence's full blocks. Every host block a scheduled sequence reads is streamed layer by
layer into a staging ring of `depth` slots; the ring's memory is withheld from the GPU pool.
"""
from __future__ import annotations

import math
from typing import Callable

from ..config import EngineConfig

from .block_manager import BlockManager
from .plan import StreamPlan
from .scheduler import Schedule, Scheduler
from .sequence import Sequence


class SwapPlanner:
    def __init__(self, blocks: BlockManager, num_layers: int, config: Callable[[], EngineConfig]):
        self.blocks = blocks
        self.num_layers = num_layers
        self._config = config                  # the engine's current config (the knobs' owner)

    @property
    def policy(self) -> str:
        return self._config().policy

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
    def active(self) -> bool:
        return self.policy in ("pie", "flexgen")

    def staging_blocks(self, host_blocks: int) -> int:
        """GPU blocks' worth of memory for a ring of `depth` layer slots holding `host_blocks` blocks each."""
        return math.ceil(min(self.depth, self.num_layers) * host_blocks / self.num_layers)

    def update_reserve(self, running) -> None:
        """The staging ring holds the running batch's host-resident blocks: withhold its memory."""
        resident = sum(s.num_host_blocks() for s in running) if self.active else 0
        self.blocks.gpu.reserved = self.staging_blocks(resident)

    def _target(self, seq: Sequence) -> int:
        return math.floor(self.fraction * seq.num_full_blocks(self.blocks.block_size))

    # -- before scheduling: shrink to the budget --------------------------------------------
    def enforce_budget(self, scheduler: Scheduler, sched: Schedule) -> None:
        if not self.active:
            return
        self.update_reserve(scheduler.running)
        if self.policy == "pie":
            over = sum(s.num_host_blocks() for s in scheduler.running) - self.budget
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
        """Bring n host blocks of seq back to the GPU (newest first), or preempt seq. Returns host blocks released."""
        if self.blocks.gpu.num_free >= n:
            first = seq.host_count - n
            sched.swap_in.extend(self.blocks.bring_back(seq, i) for i in reversed(range(first, seq.host_count)))
            return n
        held = seq.num_host_blocks()
        scheduler.preempt(seq, sched)
        return held

    # -- after scheduling: fill up to the budget, and stream --------------------------------
    def plan_offload(self, sched: Schedule) -> list[tuple[int, int]]:
        if not self.active:
            return []
        moves: list[tuple[int, int]] = []
        room = self.budget - sum(s.num_host_blocks() for s, _ in sched.work) if self.policy == "pie" else None
        # With depth >= num_layers the staging ring costs what offloading saves: offload only
        # while the GPU has headroom, never in a way that starves the batch of blocks.
        headroom = None if self.depth < self.num_layers else self.blocks.gpu.num_free - len(sched.work) - 1
        for seq, _ in sched.work:
            want = room if room is not None else self._target(seq) - seq.num_host_blocks()
            if headroom is not None:
                want = min(want, headroom)
            host_free = self.blocks.host.num_free
            for i in range(seq.host_count, seq.num_full_blocks(self.blocks.block_size)):
                if want <= 0 or host_free == 0:
                    break
                moves.append(self.blocks.offload(seq, i))
                want -= 1
                host_free -= 1
                headroom = None if headroom is None else headroom - 1
            if room is not None:
                room = want
        self.update_reserve(s for s, _ in sched.work)
        return moves

    def stream(self, sched: Schedule, offloaded: list[tuple[int, int]]) -> StreamPlan | None:
        """Host blocks the step reads; blocks offloaded this step are still read from the GPU."""
        fresh = {h for _, h in offloaded}
        staged = [~b for seq, _ in sched.work if seq.host_count
                  for b in seq.block_table[:seq.host_count] if ~b not in fresh]
        return StreamPlan.build(min(self.depth, self.num_layers), staged) if staged else None
