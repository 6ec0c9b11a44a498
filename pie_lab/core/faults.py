"""Fault containment: what fails is recorded and its requests end with finish_reason "error"; the
engine goes on with the rest.

A request the scheduler finds can never fit, an executor that raises in a step (every request the
plan touched fails, its blocks are freed, the executor recovers), a controller that raises (it is
detached, the budget kept): each becomes an entry of `engine.faults` and an "error" event.
"""
from __future__ import annotations

from ..errors import EngineError
from .plan import StepPlan
from .scheduler import Schedule


def record_fault(engine, where: str, exc: BaseException, request_ids: list, note: str = "") -> None:
    fault = dict(step=engine.step_id, where=where, message=f"{type(exc).__name__}: {exc}",
                 requests=len(request_ids), note=note)
    engine.faults.append(fault)
    engine.fault_count += 1
    engine.metrics.add_event(engine.clock.now(), "error", **fault)


def fail_unfit(engine, sched: Schedule) -> list:
    """Requests the scheduler found can never fit (blocks already freed): failed, not fatal."""
    outs = []
    for seq, why in sched.unfit:
        out = engine._retire(seq, "error", engine.clock.now(), f"EngineError: request {seq.seq_id} {why}")
        record_fault(engine, "scheduler", EngineError(f"request {seq.seq_id} {why}"), [out.request_id])
        outs.append(out)
    return outs


def fail_step(engine, sched: Schedule, plan: StepPlan, exc: Exception) -> list:
    """The executor raised: every request the plan touched fails and its blocks are freed."""
    now = engine.clock.now()
    running = engine.scheduler.running
    hit = [seq for seq, _ in sched.work] + list(sched.swapped_out)
    filled = {g for _, g in sched.swap_in}          # blocks a copy should have filled, maybe did not
    hit += [s for s in running if s not in hit and filled.intersection(s.block_table)]
    engine._released.extend(plan.released_seq_ids)   # the sampler may not have dropped them
    engine.steps_without_token = 0
    for seq in hit:
        engine.scheduler.remove(seq)
    engine.blocks.end_step()
    engine.executor.recover()
    outs = [engine._retire(seq, "error", now, f"{type(exc).__name__}: {exc}") for seq in hit]
    record_fault(engine, "executor", exc, [o.request_id for o in outs])
    engine.step_id += 1
    return outs
