"""The sim executor, fed a cpu run's measured timings, makes the cpu run's scheduling decisions.

One engine core, two executors: the cpu executor runs the real (tiny) model with an emulated link;
the sim executor replays that run's StepOutputs (`SimExecutor(..., replay=...)`). Every StepPlan
(sequence ids, tokens, start positions, block tables, swap-out / swap-in / offload mappings, stream
plans, released ids) and every controller decision must be the same, step for step, for recompute
preemption (policy none under memory pressure), vllm-swap and pie with the adaptive controller.

Offline workload (everything added before the first step), ignore_eos with fixed max_tokens, so
wall-clock arrival timing plays no part.

The replayed durations are the ones the cpu *engine* observed for each iteration (its clock around
`execute`), not `StepTiming.duration` as measured inside `execute`: the controller judges
stall / (end - start) of each IterationRecord, and on a wall clock that interval is a few
microseconds longer than the executor's own figure. Replaying the executor's figure would feed the
controller slightly different numbers (harmless, but not the run being replayed).
"""
from __future__ import annotations

import dataclasses
import random

import pytest

from pie_lab import ControllerConfig, Engine, SamplingParams, create_engine
from pie_lab.core.plan import StepOutput, StepPlan
from pie_lab.executors.sim import SimExecutor

MODEL = "opt-tiny"
NEW_TOKENS = 24


def prompts(n: int = 12, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, 500) for _ in range(rng.randint(3, 40))] for _ in range(n)]


CASES = {
    # ~12 sequences of up to 64 tokens in 4-token blocks need ~150 blocks: 48 forces recompute preemption
    "none-preempt": dict(policy="none", num_gpu_blocks=48),
    "vllm-swap": dict(policy="vllm-swap", num_gpu_blocks=48, num_host_blocks=400),
    # a slow emulated link makes streaming stall, so the controller grows, backs off and holds
    "pie-controller": dict(policy="pie", num_gpu_blocks=64, num_host_blocks=400, link_bandwidth_gbps=0.05,
                           controller=ControllerConfig(enabled=True, warmup_iterations=2, window=3)),
    # on-demand offload: blocks go to the host only when the next step would lack GPU blocks
    "pie-on-demand": dict(policy="pie", num_gpu_blocks=48, num_host_blocks=400, swap_budget_blocks=64,
                          offload="on-demand"),
}


def record(engine: Engine) -> tuple[list[StepPlan], list[StepOutput]]:
    """Wrap the engine's executor so every plan and output is kept."""
    plans, outs = [], []
    execute = engine.executor.execute

    def recording(plan: StepPlan) -> StepOutput:
        out = execute(plan)
        plans.append(plan)
        outs.append(out)
        return out

    engine.executor.execute = recording
    return plans, outs


def drive(engine: Engine, ps: list[list[int]]) -> dict:
    t = 0.0 if engine.executor.name == "sim" else engine.clock.now()
    for i, p in enumerate(ps):
        engine.add_request(p, SamplingParams(max_tokens=NEW_TOKENS, ignore_eos=True), request_id=i, arrival_time=t)
    done = {}
    while engine.has_unfinished():
        for o in engine.step():
            done[o.request_id] = o.token_ids
    engine.check_blocks()
    return done


def controller_decisions(engine: Engine) -> list[dict]:
    ev = engine.metrics.events_df()
    if not len(ev) or "rule" not in ev.columns:
        return []
    ev = ev[ev["kind"] == "controller"]
    return ev[["step", "last_step", "count", "old_budget", "new_budget", "rule"]].to_dict("records")


def summary(plan: StepPlan) -> dict:
    """The parts of a plan the issue names, for a readable first difference."""
    return {"step": plan.step_id,
            "seqs": [(s.seq_id, len(s.token_ids), s.start_pos, s.block_table, s.sample) for s in plan.seqs],
            "swap_out": plan.swap_out, "swap_in": plan.swap_in, "offload": plan.offload,
            "stream": None if plan.stream is None else (plan.stream.depth, plan.stream.host_blocks,
                                                        plan.stream.ranges),
            "released": plan.released_seq_ids}


@pytest.fixture(scope="module", params=sorted(CASES))
def runs(request):
    options = dict(block_size=4, max_num_seqs=8, max_num_batched_tokens=256, **CASES[request.param])
    cpu = create_engine(MODEL, "cpu", **options)
    config = cpu.config                                    # with the link figures the cpu executor set
    gpu, host = cpu.blocks.gpu.capacity, cpu.blocks.host.capacity
    cpu_plans, cpu_outs = record(cpu)
    cpu_tokens = drive(cpu, prompts())
    cpu.close()

    its = cpu.metrics.iterations_df().set_index("step")
    assert list(its.index) == list(range(len(cpu_outs))), "metrics kept every iteration"
    observed = (its["end"] - its["start"]).to_numpy()
    replay = [dataclasses.replace(o, timing=dataclasses.replace(o.timing, duration=float(d)))
              for o, d in zip(cpu_outs, observed)]

    sim_ex = SimExecutor(MODEL, config, replay=replay)
    sim_ex.initialize(gpu, host)
    sim = Engine(config, sim_ex, gpu, host)
    sim_plans, _ = record(sim)
    sim_tokens = drive(sim, prompts())
    return request.param, cpu, cpu_plans, cpu_tokens, sim, sim_plans, sim_tokens


def test_same_step_plans(runs):
    name, cpu, cpu_plans, cpu_tokens, sim, sim_plans, sim_tokens = runs
    assert len(sim_plans) == len(cpu_plans)
    for a, b in zip(cpu_plans, sim_plans):
        assert summary(b) == summary(a), f"{name}: first difference at step {a.step_id}"
        assert b == a, f"{name}: step {a.step_id} differs outside the summarised fields"
    assert sim_tokens == cpu_tokens
    assert all(len(t) == NEW_TOKENS for t in cpu_tokens.values())


def test_same_controller_decisions(runs):
    name, cpu, *_, sim, _, _ = runs
    assert controller_decisions(sim) == controller_decisions(cpu)
    assert sim.config.swap_budget_blocks == cpu.config.swap_budget_blocks


def test_the_cases_exercise_what_they_claim(runs):
    """Guards against a case that silently stops testing its mechanism."""
    name, cpu, cpu_plans, *_ = runs
    its = cpu.metrics.iterations_df()
    if name == "none-preempt":
        assert its["preempted"].sum() > 0
    elif name == "vllm-swap":
        assert any(p.swap_out for p in cpu_plans) and any(p.swap_in for p in cpu_plans)
    else:
        assert any(p.offload for p in cpu_plans) and any(p.stream for p in cpu_plans)
        if name == "pie-on-demand":
            return
        decisions = controller_decisions(cpu)
        assert decisions and any(d["new_budget"] != d["old_budget"] for d in decisions)
        assert any(str(d["rule"]).startswith("grow") for d in decisions)
