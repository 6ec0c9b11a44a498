"""Decode runs: many decode-only steps at once, deciding exactly what step-by-step would.

Between two scheduling events (a request finishing, a queued one that could start, a GPU block
shortage, a swap budget change, an arrival) every running sequence feeds one token per step and
nothing else moves: the batch, its host blocks, the stream plan and the queues stay as they are.
An executor that times a step from its shape alone (the sim: `times_decode_runs`, `time_decode_step`)
then runs those steps without a plan per sequence: each step costs the cost model, its
IterationRecord and the controller's look at it, and the sequences' own state (tokens, token
times, new GPU blocks, in the order step-by-step allocates them) is brought up to date in bulk
when the controller is about to decide and when the run ends; the sequences at their length
limit then finish. Policy hybrid's host-computed share (the split) stays as it is too: it follows
the host blocks and the host budget, and a run ends in the step where the controller changes a
budget. Where the run ends short of GPU blocks, the engine's own step preempts.
Records, request results and controller decisions equal the step-by-step run's
(tests/test_decode_run.py).
"""
from __future__ import annotations

import bisect
from operator import attrgetter

import numpy as np

from .metrics import IterationRecord
from .plan import StepPlan
from .scheduler import Schedule
from .sequence import host_count_of

MAX_RUN_STEPS = 4096


class DecodeRun:
    """The running batch's decode steps from now on; `steps()` runs them."""

    def __init__(self, engine, sched: Schedule, horizon: int, allocations: list[tuple[int, int]],
                 short: bool = False, finishing: list[int] | None = None, split: dict[int, int] | None = None):
        self.engine = engine
        self.split = split or {}                   # hybrid: seq_id -> host-computed blocks, every step of the run
        self.short = short                         # the step after the horizon runs out of GPU blocks
        self.sched = sched                         # work: every running sequence, one token each
        self.seqs = [s for s, _ in sched.work]
        self.horizon = horizon                     # steps before the first event
        self.allocations = allocations             # (step, batch index) of each new GPU block, in order
        self.alloc_steps = [j for j, _ in allocations]
        self.finishing = finishing or []           # batch indices of the sequences the horizon's step finishes
        self.context = sum(map(attrgetter("num_computed_tokens"), self.seqs))
        self.done = 0                              # steps whose effects the sequences already show
        self.allocated = 0                         # entries of `allocations` made
        self.used_at_start = engine.blocks.gpu.num_used
        self.ends: list[float] = []

    @classmethod
    def plan(cls, engine) -> "DecodeRun | None":
        """The run starting at the next step, or None when that step is not a plain decode step
        (the engine then takes one ordinary step)."""
        scheduler, planner, blocks = engine.scheduler, engine.planner, engine.blocks
        running, config, gpu = scheduler.running, scheduler.config, blocks.gpu
        batch = len(running)
        if not batch or batch > config.max_num_batched_tokens or batch > config.max_num_seqs:
            return None
        if planner.policy not in ("none", "recompute", "vllm-swap", "pie", "hybrid"):
            return None                            # flexgen's share follows the context
        if planner.active:
            planner.update_reserve(running)        # what enforce_budget does first; constant in a run
        if gpu.num_used > gpu.limit - gpu.reserved:
            return None
        fill = False                               # under the budget: plan_offload may move blocks
        if config.budgeted:
            host = planner.resident             # the batch's host blocks, as update_reserve just counted them
            fill = host < planner.total_budget and blocks.host.num_free > 0
            if host > planner.total_budget:
                return None                        # enforce_budget moves blocks
            if fill and not planner.on_demand and planner.depth >= planner.num_layers:
                return None                        # eager offload bounded by the GPU's headroom
        token_budget = config.max_num_batched_tokens - batch
        if scheduler.admits_any(token_budget, gpu.num_free - batch):
            return None                            # a queued request starts next step, whatever it allocates
        bs, max_len = blocks.block_size, engine.max_model_len
        # the checks below at step 0 first, cheaply: a block shortage, or a queued request that starts
        first_step = sum([len(s.block_table) * bs == s.num_computed_tokens for s in running])
        if first_step > gpu.num_free or scheduler.admits_any(token_budget, gpu.num_free - first_step):
            return None
        left, firsts = [], []           # per sequence: steps until it finishes; the step that writes its next block's first slot
        for s in running:
            computed, generated = s.num_computed_tokens, len(s.output_token_ids)
            num_tokens = len(s.prompt_token_ids) + generated
            if computed != num_tokens - 1 or s.first_token_time is None:
                return None
            left.append(min(s.sampling.max_tokens - generated, max_len - num_tokens))
            firsts.append(len(s.block_table) * bs - computed)
        horizon = min(MAX_RUN_STEPS, min(left))
        if fill and not planner.on_demand:
            # eager offload moves a sequence's next block in the step that first sees it full: the run ends before
            horizon = min(horizon, min((s.host_count + 1) * bs - s.num_computed_tokens for s in running))
        if horizon < 1:
            return None
        free = gpu.num_free
        firsts_np = np.array(firsts, dtype=np.int64)
        short = _new_blocks(firsts_np, bs, horizon) > free
        if short:
            horizon = _step_of_block(firsts_np, bs, horizon, free)   # that step preempts: the run ends before it
            if horizon < 1:
                return None
        if scheduler.admits_any(token_budget, free - _new_blocks(firsts_np, bs, 1)):
            return None
        # block b of the table is allocated in the step that writes position b * bs, in batch order
        allocations = sorted((j, i) for i, f in enumerate(firsts) for j in range(f, horizon, bs))
        if fill and planner.on_demand and planner.next_step_need((), scheduler) + batch > free - len(allocations):
            return None                            # on-demand offload might start within the run
        sched = Schedule(work=[(s, 1) for s in running])
        return cls(engine, sched, horizon, allocations, short, [i for i, limit in enumerate(left) if limit == horizon],
                   planner.split(sched, []))

    def steps(self, until: float | None) -> list:
        """Run up to the horizon, stopping after the step that ends at or after `until`, or after
        the controller changed the swap budget. Returns the requests the last step finished. A
        run that ends short of GPU blocks takes the next (preempting) step too, unless `until` is due."""
        engine = self.engine
        ex, planner, blocks, metrics = engine.executor, engine.planner, engine.blocks, engine.metrics
        stream = planner.stream(self.sched, [], self.split)
        batch = len(self.seqs)
        host_rows, host_blocks = len(self.split), sum(self.split.values())
        released, engine._released = tuple(engine._released), []
        state = dict(gpu_blocks_limit=blocks.gpu.limit, staging_blocks=blocks.gpu.reserved,
                     prefetch_depth=planner.depth, preempted=0, swapped_out=0,
                     swap_space_blocks=sum(map(host_count_of, engine.scheduler.swapped)),
                     waiting=len(engine.scheduler.waiting),
                     host_compute_budget=planner.host_budget if planner.policy == "hybrid" else 0)
        finished = []
        for j in range(self.horizon):
            start = engine.clock.now()
            context = self.context + batch * (j + 1)
            plan = StepPlan(engine._step_id, (), stream=stream, released_seq_ids=released if j == 0 else ())
            timing = ex.time_decode_step(plan, batch, context, host_rows, host_blocks)
            end = engine.clock.now()
            self.ends.append(end)
            last = j == self.horizon - 1 or (until is not None and end >= until)
            if last:
                self._bring_up_to(j + 1)
                finished = self._finish(end) if j == self.horizon - 1 else []
                blocks.end_step()
            used = blocks.gpu.num_used if last else \
                self.used_at_start + bisect.bisect_right(self.alloc_steps, j)
            rec = IterationRecord.of(
                timing, step=engine._step_id, start=start, end=end, batch_size=batch, prefill_tokens=0,
                decode_tokens=batch, streamed_blocks=stream.num_blocks if stream else 0, context_tokens=context,
                host_computed_blocks=host_blocks,
                gpu_blocks_used=used, host_blocks_used=blocks.host.num_used, swap_budget=planner.budget, **state)
            metrics.add_iteration(rec, timing)
            budgets = planner.budget, planner.host_budget
            if engine.controller is not None and engine.controller.decides_next and not last:
                self._bring_up_to(j + 1)                  # it reads the batch's full blocks
            engine._observe(rec)
            engine._step_id += 1
            if last or (planner.budget, planner.host_budget) != budgets:
                break
        self._bring_up_to(len(self.ends))
        blocks.end_step()
        engine._count_progress(batch)
        if self.short and len(self.ends) == self.horizon and (until is None or self.ends[-1] < until):
            finished = finished + engine.step()
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
        """Give the sequences the tokens, token times and blocks of the run's first `steps` steps."""
        n = steps - self.done
        if n <= 0:
            return
        self._allocate_through(steps - 1)
        times = self.ends[self.done:steps]
        for seq, toks in zip(self.seqs, self._tokens(self.done, n)):
            seq.num_computed_tokens += n
            seq.output_token_ids.extend(toks)
            seq.token_times.extend(times)
        self.done = steps

    def _finish(self, now: float) -> list:
        """What the engine's postprocess does at the horizon: the sequences at their length limit
        finish, in batch order (the sim never samples an end-of-sequence or stop id, so no other
        sequence can)."""
        engine, finished = self.engine, []
        for i in self.finishing:
            seq = self.seqs[i]
            reason = engine._finish_reason(seq, seq.output_token_ids[-1])
            if reason:
                engine.scheduler.finish(seq)
                finished.append(engine._retire(seq, reason, now))
        return finished

    def _tokens(self, first: int, n: int) -> list[list[int]]:
        """Per sequence, the tokens sampled in steps first .. first + n - 1 of the run."""
        seqs = self.seqs
        ids = np.repeat(np.array([s.seq_id for s in seqs], dtype=np.int64), n)
        pos = (np.array([s.num_computed_tokens for s in seqs], dtype=np.int64)[:, None] + 1 + (first - self.done)
               + np.arange(n, dtype=np.int64)[None, :]).ravel()
        stops = [s.sampling.stop_token_ids for s in seqs for _ in range(n)] \
            if any(s.sampling.stop_token_ids for s in seqs) else None
        flat = self.engine.executor.tokens_at(ids, pos, stops)
        return [flat[k * n:(k + 1) * n] for k in range(len(seqs))]

def _new_blocks(firsts: np.ndarray, block_size: int, steps: int) -> int:
    """GPU blocks the batch allocates in its first `steps` steps; sequence i allocates one in
    steps firsts[i], firsts[i] + block_size, ..."""
    return int(np.maximum(0, (steps - firsts + block_size - 1) // block_size).sum())


def _step_of_block(firsts: np.ndarray, block_size: int, horizon: int, n: int) -> int:
    """The step (< horizon) in which the batch allocates its (n + 1)-th new GPU block."""
    lo, hi = 0, horizon - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if _new_blocks(firsts, block_size, mid + 1) > n:
            hi = mid
        else:
            lo = mid + 1
    return lo

