"""Continuous batching: FCFS admission, chunked prefill, preemption by recompute or by swap.

`schedule()` decides which sequences run this step and how many tokens each feeds, allocating
their GPU blocks. Moves between tiers come back as block mappings; nothing is copied here.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from ..config import EngineConfig
from .block_manager import BlockManager
from .sequence import Sequence, SeqStatus


@dataclass
class Schedule:
    work: list[tuple[Sequence, int]] = field(default_factory=list)   # (sequence, tokens fed)
    swap_out: list[tuple[int, int]] = field(default_factory=list)
    swap_in: list[tuple[int, int]] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)          # for recompute
    unfit: list[tuple[Sequence, str]] = field(default_factory=list)  # can never run here: (sequence, why)
    swapped_out: list[Sequence] = field(default_factory=list)
    admitted: list[Sequence] = field(default_factory=list)           # taken from the waiting queue

    @property
    def empty(self) -> bool:
        return not self.work


class Scheduler:
    def __init__(self, blocks: BlockManager, config: Callable[[], EngineConfig]):
        self.blocks = blocks
        self._config = config                      # the engine's current config (the knobs' owner)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.swapped: deque[Sequence] = deque()

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    @property
    def config(self) -> EngineConfig:
        """The engine's config now: max_num_seqs, max_num_batched_tokens, chunked_prefill, preemption."""
        return self._config()

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running or self.swapped)

    def _tokens_for(self, seq: Sequence, budget: int) -> int:
        remaining = seq.num_tokens - seq.num_computed_tokens
        if remaining <= budget:
            return remaining
        return budget if self.config.chunked_prefill else 0

    # -- preemption -----------------------------------------------------------------------
    def preempt(self, seq: Sequence, sched: Schedule) -> None:
        self.running.remove(seq)
        seq.num_preemptions += 1
        if self.config.swap_preemption and self.blocks.can_swap_out(seq):
            sched.swap_out.extend(self.blocks.swap_out(seq))
            seq.status = SeqStatus.SWAPPED
            seq.num_swaps += 1
            self._insert_by_arrival(self.swapped, seq)
            sched.swapped_out.append(seq)
            return
        self.blocks.free(seq)
        seq.num_computed_tokens = 0
        seq.status = SeqStatus.WAITING
        self._insert_by_arrival(self.waiting, seq)
        sched.preempted.append(seq)

    @staticmethod
    def _insert_by_arrival(queue: deque, seq: Sequence) -> None:
        i = 0
        while i < len(queue) and (queue[i].arrival_time, queue[i].seq_id) < (seq.arrival_time, seq.seq_id):
            i += 1
        queue.insert(i, seq)

    def shed_excess(self, sched: Schedule) -> None:
        """After a knob change: fewer running sequences or fewer GPU blocks than in use."""
        gpu = self.blocks.gpu
        while self.running and (len(self.running) > self.config.max_num_seqs
                                or gpu.num_used > gpu.limit - gpu.reserved):
            self.preempt(self.running[-1], sched)

    # -- one step -------------------------------------------------------------------------
    def schedule(self, sched: Schedule | None = None) -> Schedule:
        sched = sched or Schedule()
        self.shed_excess(sched)
        budget = self.config.max_num_batched_tokens
        blocks, bs = self.blocks, self.blocks.block_size
        queue = deque(self.running)
        while queue:
            seq = queue.popleft()
            n = len(seq.prompt_token_ids) + len(seq.output_token_ids) - seq.num_computed_tokens   # what remains
            if n > budget:
                n = self._tokens_for(seq, budget)
            if n == 0:
                continue
            if -(-(seq.num_computed_tokens + n) // bs) <= len(seq.block_table):   # blocks_needed == 0
                sched.work.append((seq, n))
                budget -= n
                continue
            while not blocks.can_allocate(blocks.blocks_needed(seq, n)):
                if queue:
                    self.preempt(queue.pop(), sched)
                    continue
                if len(self.running) == 1:     # alone and still no room: it fails, the rest go on
                    sched.unfit.append((seq, f"needs {self.blocks.blocks_needed(seq, n)} more GPU blocks and "
                                             f"none can be freed (GPU KV limit {self.blocks.gpu.limit} blocks, "
                                             f"{self.blocks.gpu.reserved} reserved for staging): raise num_gpu_blocks"))
                    self.remove(seq)
                    seq = None
                    break
                self.preempt(seq, sched)
                seq = None
                break
            if seq is None:
                break
            self.blocks.allocate(seq, n)
            sched.work.append((seq, n))
            budget -= n

        if not (sched.preempted or sched.swapped_out):
            budget = self._swap_in(sched, budget)
            self._admit(sched, budget)
        return sched

    def _swap_in(self, sched: Schedule, budget: int) -> int:
        while self.swapped and len(self.running) < self.config.max_num_seqs and budget > 0:
            seq = self.swapped[0]
            n = self._tokens_for(seq, budget)
            if n == 0 or not self.blocks.can_swap_in(seq, self.blocks.blocks_needed(seq, n)):
                break
            self.swapped.popleft()
            sched.swap_in.extend(self.blocks.swap_in(seq))
            self.blocks.allocate(seq, n)
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)
            sched.work.append((seq, n))
            budget -= n
        return budget

    def _admit(self, sched: Schedule, budget: int) -> None:
        while self.waiting and len(self.running) < self.config.max_num_seqs and budget > 0:
            seq = self.waiting[0]
            n = self._tokens_for(seq, budget)
            if n == 0 or not self.blocks.can_allocate(self.blocks.blocks_needed(seq, n)):
                break
            self.waiting.popleft()
            self.blocks.allocate(seq, n)
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)
            sched.work.append((seq, n))
            sched.admitted.append(seq)
            budget -= n

    def admits_any(self, budget: int, free_blocks: int) -> bool:
        """Whether `_swap_in` or `_admit` would take its queue's head with `budget` tokens left
        and `free_blocks` GPU blocks free (no preemption this step)."""
        if len(self.running) >= self.config.max_num_seqs or budget <= 0:
            return False
        for queue, swapped in ((self.swapped, True), (self.waiting, False)):
            if queue:
                seq = queue[0]
                n = self._tokens_for(seq, budget)
                need = self.blocks.blocks_needed(seq, n) + (seq.num_host_blocks() if swapped else 0)
                if n and need <= free_blocks:
                    return True
        return False

    def stall_reason(self, steps: int) -> str:
        """Why nothing has run for `steps` steps: what waits, and what the GPU pool and limits leave for it."""
        gpu = self.blocks.gpu
        head = (self.waiting or self.swapped or [None])[0]
        need = ""
        if head is not None:
            n = self.blocks.blocks_needed(head, min(head.num_tokens, self.config.max_num_batched_tokens)) \
                + head.num_host_blocks()
            need = f"; the next request needs {n} GPU blocks"
        return (f"no token for {steps} steps: {len(self.running)} running, {len(self.waiting)} waiting, "
                f"{len(self.swapped)} swapped; GPU blocks {gpu.num_used} used of limit {gpu.limit} "
                f"({gpu.reserved} reserved for staging){need}")

    def finish(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.free(seq)
        seq.status = SeqStatus.FINISHED

    def remove(self, seq: Sequence) -> None:
        """Abort or failure: take `seq` out of whichever queue holds it and free its blocks."""
        for queue in (self.running, self.waiting, self.swapped):
            if seq in queue:
                queue.remove(seq)
                break
        self.blocks.free(seq)
        seq.status = SeqStatus.FINISHED
