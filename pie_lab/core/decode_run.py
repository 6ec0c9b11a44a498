"""Decode runs: many decode-only steps at once, deciding exactly what step-by-step would.

Between two scheduling events (a request finishing, a queued one that could start, a GPU block
shortage, a swap budget change, an arrival) every running sequence feeds one token per step and
nothing else moves: the batch, its host blocks, the stream plan and the queues stay as they are.
An executor that times a step from its shape alone (the sim: `decode_runs`, `time_decode_step`)
then runs those steps without a plan per sequence: each step costs the cost model, its
IterationRecord and the controller's look at it, and the sequences' own state (tokens, new GPU
blocks, in the order step-by-step allocates them) is brought up to date in bulk
when the controller is about to decide and when the run ends; the sequences at their length
limit then finish. Policy hybrid's host-computed share (the split) stays as it is too: it follows
the host blocks and the host budget, and a run ends in the step where the controller changes a
budget. A step that changes the batch of decoding sequences, by preempting from its end where
it runs short of GPU blocks or by swapping a preempted sequence back in, starts the next run: the
engine's own scheduling takes it (`Engine._schedule`, `_moves`) and the run times and records it
as its step 0, with its blocking copies. A step that admits a prompt is the engine's own.
Each step's plan, record and finishes are the engine's own code (`Engine._plan`, `_record`,
`_finish_done`); what a run predicts of the rules sits next to them (`Scheduler.admits_any`,
`SwapPlanner.offload_may_fill`, `steps_to_eager_offload`, `shortfall_possible`).
Records, request results and controller decisions equal the step-by-step run's
(tests/test_decode_run.py).
"""
from __future__ import annotations

import bisect

import numpy as np

from .decode_batch import DecodeState, decode_state, new_blocks, step_of_block
from .plan import BatchSummary
from .scheduler import Schedule

MAX_RUN_STEPS = 4096


class DecodeRun:
    """The running batch's decode steps from now on; `steps()` runs them."""

    def __init__(self, engine, sched: Schedule, horizon: int, allocations: list[tuple[int, int]],
                 finishing: list[int], split: dict[int, int], computed: list[int]):
        self.engine = engine
        self.split = split                         # hybrid: seq_id -> host-computed blocks, every step of the run
        self.sched = sched                         # work: every running sequence, one token each
        self.seqs = [s for s, _ in sched.work]
        self.first: tuple | None = None            # step 0 scheduled by plan(): (its schedule, offload, stream)
        self.horizon = horizon                     # steps before the first event
        self.allocations = allocations             # (step, batch index) of each new GPU block, in order
        self.alloc_steps = [j for j, _ in allocations]
        self.finishing = finishing                 # batch indices of the sequences the horizon's step finishes
        self.computed = computed                   # each sequence's computed tokens at step 0
        self.context = sum(self.computed)
        self.done = 0                              # steps whose effects the sequences already show
        self.allocated = 0                         # entries of `allocations` made
        self.used_at_start = engine.blocks.gpu.num_used
        self.ends: list[float] = []

    @classmethod
    def plan(cls, engine) -> "DecodeRun | _Scheduled | None":
        """The run starting at the next step, or None when that step is not a decode step of the
        running batch (the engine then takes one ordinary step). A next step that preempts (short
        of GPU blocks) or swaps a sequence in is scheduled here as the engine's step schedules it,
        and is the run's step 0; if it admits a prompt, the engine's step runs it (`_Scheduled`)."""
        scheduler, planner, blocks = engine.scheduler, engine.planner, engine.blocks
        running, config, gpu = scheduler.running, scheduler.config, blocks.gpu
        batch = len(running)
        if not batch or batch > config.max_num_batched_tokens or batch > config.max_num_seqs:
            return None
        if planner.traits.follows_context:
            return None                            # blocks move as the context grows
        if planner.active:
            planner.update_reserve(running)        # what enforce_budget does first; constant in a run
        if gpu.num_used > gpu.limit - gpu.reserved:
            return None
        fill = planner.offload_may_fill()
        if fill is None:
            return None
        state = decode_state(running, blocks.block_size, engine.max_model_len)
        if state is None:
            return None
        first_step = state.firsts.count(0)         # sequences that need a GPU block in step 0
        if first_step <= gpu.num_free and not scheduler.admits_any(config.max_num_batched_tokens - batch,
                                                                   gpu.num_free - first_step):
            return cls._planned(engine, Schedule(work=[(s, 1) for s in running]), state, 0, fill)
        # step 0 preempts from the batch's end, or swaps a sequence in: schedule it as the engine's step would
        seqs = list(running)
        sched = engine._schedule()
        state = cls._after_step0(sched, seqs, state, blocks.block_size, engine.max_model_len)
        if state is None:
            return _Scheduled(engine, sched)       # not a decode step: the engine's own step takes it from here
        offload, split, stream = engine._moves(sched)
        run = None if offload else cls._planned(engine, sched, state, 1, planner.offload_may_fill(), split)
        if run is None:                            # offloaded, or nothing plain follows: step 0 alone
            run = cls(engine, sched, 1, [], [i for i, n in enumerate(state.left) if n == 1], split, state.computed)
        run.first = (sched, offload, stream)
        return run

    @staticmethod
    def _after_step0(sched: Schedule, seqs: list, state: "DecodeState", block_size: int,
                     max_len: int) -> "DecodeState | None":
        """The DecodeState of a scheduled step 0's work, or None unless every one decodes a token:
        the first `k` of the batch `seqs` stay (preemption takes from the end), then the swapped in."""
        if sched.unfit or sched.admitted or not sched.work or any(n != 1 for _, n in sched.work):
            return None
        k = min(len(seqs), len(sched.work))
        while k and sched.work[k - 1][0] is not seqs[k - 1]:
            k -= 1
        if any(s is not t for (s, _), t in zip(sched.work[:k], seqs)):
            return None
        joined = decode_state([s for s, _ in sched.work[k:]], block_size, max_len)
        if joined is None:
            return None
        firsts = [f or block_size for f in state.firsts[:k]]     # step 0 gave a block to each that needed one
        return DecodeState(state.left[:k] + joined.left, firsts + joined.firsts, state.computed[:k] + joined.computed)

    @classmethod
    def _planned(cls, engine, sched: Schedule, state: "DecodeState", since: int, fill: "bool | None",
                 split: dict[int, int] | None = None) -> "DecodeRun | None":
        """The run of `sched`'s decode steps, its steps < `since` already scheduled (their GPU
        blocks allocated): up to the first event, or None when step `since` has one."""
        if fill is None:
            return None
        scheduler, planner, gpu = engine.scheduler, engine.planner, engine.blocks.gpu
        left, firsts = state.left, state.firsts
        batch, bs = len(left), engine.blocks.block_size
        horizon = min(MAX_RUN_STEPS, min(left))
        if fill and not planner.on_demand:
            horizon = min(horizon, planner.steps_to_eager_offload(sched.work))     # the run ends before it
        if horizon <= since:
            return None
        free = gpu.num_free
        firsts_np = np.array(firsts, dtype=np.int64)
        if new_blocks(firsts_np, bs, horizon) > free:
            horizon = step_of_block(firsts_np, bs, horizon, free)   # that step preempts: the run ends before it
            if horizon <= since:
                return None
        if scheduler.admits_any(scheduler.config.max_num_batched_tokens - batch,
                                free - new_blocks(firsts_np, bs, since + 1)):
            return None                            # a queued request starts in step `since`
        # block b of the table is allocated in the step that writes position b * bs, in batch order
        allocations = sorted((j, i) for i, f in enumerate(firsts) for j in range(f, horizon, bs))
        if fill and planner.on_demand and planner.shortfall_possible(batch, scheduler, free - len(allocations)):
            return None                            # on-demand offload might start within the run
        return cls(engine, sched, horizon, allocations, [i for i, limit in enumerate(left) if limit == horizon],
                   planner.split(sched, []) if split is None else split, state.computed)

    def steps(self, until: float | None) -> list:
        """Run up to the horizon, stopping after the step that ends at or after `until`, or after
        the controller changed the swap budget. Returns the requests the last step finished. A
        run that ends short of GPU blocks leaves the preempting step to the next run (its step 0)."""
        engine = self.engine
        ex, planner, blocks = engine.executor, engine.planner, engine.blocks
        first_sched, offload, stream = self.first or (Schedule(), (), None)
        if self.first is None:
            stream = planner.stream(self.sched, [], self.split)
        later = Schedule()                         # steps after step 0 move nothing
        batch = len(self.seqs)
        host_rows, host_blocks = len(self.split), sum(self.split.values())
        finished = []
        for j in range(self.horizon):
            start = engine.clock.now()
            context = self.context + batch * (j + 1)
            moves = first_sched if j == 0 else later
            plan = engine._plan(moves, offload if j == 0 else (), stream, self.split,
                                BatchSummary.decoding(batch, context, host_rows, host_blocks))
            timing = ex.time_decode_step(plan)
            end = engine.clock.now()
            self.ends.append(end)
            if j == 0 and self.first is not None:
                blocks.end_step()                  # its copies are done: their source blocks free
            last = j == self.horizon - 1 or (until is not None and end >= until)
            if last:
                self._bring_up_to(j + 1)
                finished = self._finish(end) if j == self.horizon - 1 else []
                blocks.end_step()
            budgets = planner.budget, planner.host_budget
            if engine.controller is not None and engine.controller.decides_next and not last:
                self._bring_up_to(j + 1)                  # it reads the batch's full blocks
            engine._record(plan, timing, start, end, moves,
                           None if last else self.used_at_start + bisect.bisect_right(self.alloc_steps, j))
            if last or (planner.budget, planner.host_budget) != budgets:
                break
        self._bring_up_to(len(self.ends))
        blocks.end_step()
        engine._count_progress(batch)
        return finished

    def _allocate_through(self, j: int) -> None:
        """The new GPU blocks of steps <= j, in step-by-step order (no block is freed in a run)."""
        gpu = self.engine.blocks.gpu
        stop = bisect.bisect_right(self.alloc_steps, j)
        if stop > self.allocated:                  # at once: the pool hands out the same ids in the same order
            for (_, i), block in zip(self.allocations[self.allocated:stop], gpu.allocate(stop - self.allocated)):
                self.seqs[i].block_table.append(block)
            self.allocated = stop

    def _bring_up_to(self, steps: int) -> None:
        """Give the sequences the tokens and blocks of the run's first `steps` steps."""
        n = steps - self.done
        if n <= 0:
            return
        self._allocate_through(steps - 1)
        tokens = self._tokens(self.done, n)        # sequence k's are tokens[k * n:(k + 1) * n]
        if n == 1:
            for seq, token in zip(self.seqs, tokens):
                seq.num_computed_tokens += 1
                seq.output_token_ids.append(token)
        else:
            for k, seq in enumerate(self.seqs):
                seq.num_computed_tokens += n
                seq.output_token_ids.extend(tokens[k * n:(k + 1) * n])
        self.done = steps

    def _finish(self, now: float) -> list:
        """What the engine's postprocess does at the horizon: the sequences at their length limit
        finish, in batch order (the sim never samples an end-of-sequence or stop id, so no other
        sequence can)."""
        return self.engine._finish_done([self.seqs[i] for i in self.finishing], now)

    def _tokens(self, first: int, n: int) -> list[int]:
        """The tokens sampled in steps first .. first + n - 1 of the run, sequence by sequence."""
        seqs = self.seqs
        ids = np.repeat(np.array([s.seq_id for s in seqs], dtype=np.int64), n)
        pos = (np.array(self.computed, dtype=np.int64)[:, None] + (first + 1)
               + np.arange(n, dtype=np.int64)[None, :]).ravel()
        stops = [s.sampling.stop_token_ids for s in seqs for _ in range(n)] \
            if any(s.sampling.stop_token_ids for s in seqs) else None
        return self.engine.executor.tokens_at(ids, pos, stops)

class _Scheduled:
    """A step DecodeRun.plan scheduled that is not a plain decode step: the engine runs the rest."""

    def __init__(self, engine, sched: Schedule):
        self.engine, self.sched = engine, sched

    def steps(self, until: float | None) -> list:
        return self.engine._execute(self.sched)
