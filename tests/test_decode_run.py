"""The sim's fast paths decide exactly what plain step-by-step does.

The same workload runs twice through the benchmark driver: once with `Engine.step()` only and
full plans (a SeqWork per sequence, as the cpu and cuda executors get), once with
`Engine.step_run()`: decode runs (several decode steps at once) and summarised plans
(`BatchSummary`). Every record must be equal to the last bit: per-request results,
per-iteration records, per-layer timings and controller decisions; the thrashing workload must
really preempt, and the runs must really have covered most steps (else the test proves nothing).
"""
from __future__ import annotations

import pandas as pd
import pytest

from pie_lab import ControllerConfig, EngineConfig, SamplingParams, create_engine, named_spec
from pie_lab.bench.harness import as_requests, run_one
from pie_lab.core import decode_run
from pie_lab.executors.sim import SimExecutor
from pie_lab.workloads import sharegpt_like

MODEL = "opt-13b"
BASE = dict(hardware="H200", dtype="float16", block_size=16, max_num_seqs=64, max_num_batched_tokens=1024,
            num_gpu_blocks=900)
CONTROLLER = ControllerConfig(enabled=True, warmup_iterations=2, window=3)
CASES = {
    "none": dict(policy="none"),
    "recompute": dict(policy="recompute"),
    "vllm-swap": dict(policy="vllm-swap"),
    "pie-controller": dict(policy="pie", controller=CONTROLLER),
    "pie-eager": dict(policy="pie", swap_budget_blocks=120, offload="eager"),
    "pie-on-demand": dict(policy="pie", swap_budget_blocks=120, offload="on-demand"),
    "hybrid-controller": dict(policy="hybrid", controller=CONTROLLER, offload="eager"),   # a host share at 900 blocks too
    "hybrid-split": dict(policy="hybrid", swap_budget_blocks=80, host_compute_blocks=40, offload="eager"),
    "hybrid-split-on": dict(policy="hybrid", swap_budget_blocks=80, host_compute_blocks=40, host_split="on",
                            offload="eager"),
    "hybrid-split-off": dict(policy="hybrid", controller=CONTROLLER, host_split="off", offload="eager"),
}
# offline: everything at once into 500 GPU blocks, so the batch thrashes (preemption after preemption)
WORKLOADS = {"offline-thrashing": (None, 500), "poisson": (6.0, 900)}


def workload(rate):
    spec = named_spec(MODEL)
    return as_requests(sharegpt_like(60, seed=1, rate=rate, arrival=None if rate else "offline",
                                     vocab_size=spec.vocab_size, max_model_len=2048))


def records(engine) -> dict:
    m = engine.metrics
    return dict(requests=m.requests_df(), iterations=m.iterations_df(), layers=m.layers_df(), events=m.events_df())


@pytest.mark.parametrize("load", list(WORKLOADS))
@pytest.mark.parametrize("case", list(CASES))
def test_fast_paths_equal_step_by_step(case, load, monkeypatch):
    rate, gpu_blocks = WORKLOADS[load]
    reqs = workload(rate)
    config = EngineConfig(**{**BASE, "num_gpu_blocks": gpu_blocks}, **CASES[case])
    runs = []
    plan = decode_run.DecodeRun.plan.__func__
    monkeypatch.setattr(decode_run.DecodeRun, "plan",
                        classmethod(lambda cls, engine: runs.append(plan(cls, engine)) or runs[-1]))
    with monkeypatch.context() as full_plans:       # the reference: a SeqWork per sequence, one step at a time
        full_plans.setattr(SimExecutor, "summarised_plans", False)
        full_plans.setattr(SimExecutor, "decode_runs", False)
        step_by_step, t0, t_end = run_one(MODEL, "sim", config, reqs, decode_runs=False)
    assert not runs
    fast, f0, f_end = run_one(MODEL, "sim", config, reqs, decode_runs=True)
    assert (f0, f_end) == (t0, t_end)
    a, b = records(step_by_step), records(fast)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=name)
    assert len(a["requests"]) == len(reqs)
    it = a["iterations"]
    if load == "offline-thrashing":
        assert it["preempted"].sum() + it["swapped_out"].sum() > 10
    if case.startswith("hybrid"):
        assert it["host_computed_blocks"].sum() > 0
    in_runs = [r for r in runs if isinstance(r, decode_run.DecodeRun)]
    assert sum(len(r.ends) for r in in_runs) > 0.3 * step_by_step.metrics.totals["iterations"]
    if load == "offline-thrashing" and case in ("vllm-swap", "pie-controller", "pie-on-demand"):
        firsts = [r.first[0] for r in in_runs if r.first is not None]    # step 0 scheduled in the run
        assert any(s.swapped_out for s in firsts) and any(s.swap_in for s in firsts)
    if case.startswith("hybrid"):                   # runs with a host-computed share
        assert sum(len(r.ends) for r in in_runs if r.split) > 0
    if "controller" in case:
        assert (a["events"]["kind"] == "controller").sum() > 5
    fast.check_blocks()


def test_on_demand_offload_moves_blocks_only_under_pressure():
    """Eager offload fills the budget whatever the GPU holds; on demand moves nothing while the
    GPU pool has room and, under pressure, still lets the host tier grow the batch."""
    def run(gpu_blocks, offload):
        policy = dict(policy="none") if offload == "none" else dict(policy="pie", swap_budget_blocks=400,
                                                                    offload=offload)
        config = EngineConfig(**{**BASE, "num_gpu_blocks": gpu_blocks}, **policy)
        engine, _, _ = run_one(MODEL, "sim", config, workload(6.0))
        return engine.metrics.iterations_df()

    roomy = {mode: run(4000, mode) for mode in ("eager", "on-demand")}
    assert roomy["eager"]["offload_bytes"].sum() > 0
    assert roomy["on-demand"]["offload_bytes"].sum() == 0 and roomy["on-demand"]["stream_bytes"].sum() == 0
    tight = {mode: run(300, mode) for mode in ("eager", "on-demand", "none")}
    assert 0 < tight["on-demand"]["offload_bytes"].sum() < tight["eager"]["offload_bytes"].sum()
    assert tight["on-demand"]["batch_size"].max() > tight["none"]["batch_size"].max()


def test_switching_offload_mid_run_acts_as_a_fresh_engine_would():
    """offload is live: on-demand -> eager fills the budget at the next step, as a fresh eager engine
    fills it at its first; eager -> on-demand moves nothing more (as a fresh on-demand engine with
    GPU room) and keeps streaming what is already on the host. Tokens equal policy none's."""
    reqs = workload(None)
    budget = 120

    def run(offload, switches=None, policy="pie"):
        config = EngineConfig(**{**BASE, "num_gpu_blocks": 4000}, policy=policy, swap_budget_blocks=budget,
                              offload=offload)
        engine = create_engine(MODEL, "sim", config)
        for r in reqs:
            engine.add_request(r.prompt_token_ids, SamplingParams(max_tokens=r.max_tokens, ignore_eos=True),
                               request_id=r.request_id)
        outs, step = {}, 0
        while engine.has_unfinished():
            if step in (switches or {}):
                engine.update(offload=switches[step])
            outs.update((o.request_id, o.token_ids) for o in engine.step())
            step += 1
        engine.check_blocks()
        return outs, engine.metrics.iterations_df().set_index("step")

    reference, _ = run("on-demand", policy="none")
    _, eager = run("eager")
    _, on_demand = run("on-demand")
    filled = eager.index[eager["host_blocks_used"] == budget][0]
    assert on_demand["offload_bytes"].sum() == 0
    outs, it = run("on-demand", {20: "eager", 60: "on-demand", 90: "eager"})
    assert outs == reference
    assert it.loc[:19, "host_blocks_used"].max() == 0
    assert filled <= 20 and it.loc[20, "host_blocks_used"] == budget     # at once, as a fresh eager engine
    kept = it.loc[60:89]
    assert kept["offload_bytes"].sum() == 0 and kept["blocking_copy_bytes"].sum() == 0
    assert kept["host_blocks_used"].is_monotonic_decreasing and kept["streamed_blocks"].min() > 0
    assert it.loc[90, "host_blocks_used"] == budget


@pytest.mark.parametrize("offload", ["eager", "on-demand"])
def test_the_planners_predictions_agree_with_its_rules(offload):
    """What decode runs predict of the swap planner (offload_may_fill, steps_to_eager_offload,
    shortfall_possible) against what plan_offload and shortfall then do, step by step, before
    every step in which the whole batch decodes."""
    config = EngineConfig(**{**BASE, "num_gpu_blocks": 300}, policy="pie", swap_budget_blocks=60, offload=offload)
    engine = create_engine(MODEL, "sim", config)
    for r in workload(None):
        engine.add_request(r.prompt_token_ids, SamplingParams(max_tokens=r.max_tokens, ignore_eos=True),
                           request_id=r.request_id)
    planner, scheduler, gpu = engine.planner, engine.scheduler, engine.blocks.gpu
    seen = {"no fill": 0, "fill": 0, "before eager": 0, "no shortfall": 0, "shortfall": 0}
    while engine.has_unfinished():
        running = list(scheduler.running)
        decoding = running and all(s.num_computed_tokens == s.num_tokens - 1 for s in running)
        if decoding:
            planner.update_reserve(running)
            fill = planner.offload_may_fill()
            work = [(s, 1) for s in running]
            eager_in = planner.steps_to_eager_offload(work) if fill and offload == "eager" else None
            possible = planner.shortfall_possible(len(work), scheduler, gpu.num_free)
            short = planner.shortfall(work, scheduler)
            assert possible or short == 0
            seen["shortfall" if short else "no shortfall"] += 1
        engine.step()
        if not decoding:
            continue
        rec = engine.metrics.iterations[-1]
        quiet = rec.preempted == rec.swapped_out == 0 and rec.batch_size == len(running)
        if fill is False and quiet:
            assert rec.offload_bytes == 0
            seen["no fill"] += 1
        if fill and quiet:
            seen["fill"] += 1
        if eager_in is not None and eager_in > 0 and quiet:      # not this step
            assert rec.offload_bytes == 0
            seen["before eager"] += 1
    expected = set(seen) - ({"before eager"} if offload == "on-demand" else set())
    assert all(seen[k] for k in expected), seen           # every prediction was put to the test
