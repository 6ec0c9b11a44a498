"""Nothing lost or mixed up: prompts checked before queueing, unique request ids, abort, and
faults injected into the model, the link's copy thread, the controller and a request source."""
import random
import time

import pytest

from pie_lab import ConfigError, EngineConfig, LLM, SamplingParams, create_engine
from pie_lab.live import LiveRunner
from pie_lab.sources import ListSource
from pie_lab.workloads import Request

from fake_executor import make_engine

SP = SamplingParams(max_tokens=12, ignore_eos=True)
CPU = dict(block_size=4, num_gpu_blocks=64, num_host_blocks=64, max_num_seqs=2, policy="pie",
           swap_budget_blocks=6, offload="eager", link_bandwidth_gbps=5.0)   # eager: the link always copies


def prompts(n, seed=0):
    rng = random.Random(seed)
    return [[rng.randrange(3, 500) for _ in range(rng.randint(6, 20))] for _ in range(n)]


def drain(engine, max_steps=10_000):
    outs = {}
    for _ in range(max_steps):
        if not engine.has_unfinished():
            return outs
        for o in engine.step():
            outs[o.request_id] = o
        engine.check_blocks()
    raise AssertionError("engine did not finish")


# -- generate: all prompts checked first, ids never reused across calls --------------------------
def test_a_bad_prompt_leaves_nothing_queued_and_the_next_call_gets_its_own_answer():
    llm = LLM("opt-tiny", "cpu", block_size=4, num_gpu_blocks=64)
    sp = SamplingParams(max_tokens=4)
    with pytest.raises(ConfigError, match=r"prompts\[1\].*1000000000.*allowed \[0, 511\]"):
        llm.generate([[5, 6, 7], [5, 10**9]], sp)
    assert not llm.engine.has_unfinished()
    out = llm.generate([[8, 9]], sp)
    assert out[0].prompt_token_ids == [8, 9]
    assert out[0].token_ids == LLM("opt-tiny", "cpu", block_size=4, num_gpu_blocks=64).generate([[8, 9]], sp)[0].token_ids


@pytest.mark.parametrize("bad", [1.5, "7", None, 2.0])
def test_non_integer_token_ids_are_refused(bad):
    eng = make_engine(EngineConfig(block_size=4, num_gpu_blocks=32))
    with pytest.raises(ConfigError, match="token 1 is .*token ids must be integers"):
        eng.add_request([5, bad, 7], SP)
    assert not eng.has_unfinished()


def test_request_ids_are_unique_among_requests_in_flight():
    eng = make_engine(EngineConfig(block_size=4, num_gpu_blocks=32))
    eng.add_request([5, 6], SP, request_id="a")
    with pytest.raises(ConfigError, match="request_id 'a' is already in flight"):
        eng.add_request([7, 8], SP, request_id="a")
    first = drain(eng)
    assert list(first) == ["a"] and first["a"].prompt_token_ids == [5, 6]
    eng.add_request([7, 8], SP, request_id="a")          # finished ids may be used again
    assert drain(eng)["a"].prompt_token_ids == [7, 8]


# -- abort ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["pie", "vllm-swap"])
def test_abort_frees_every_block_at_the_step_boundary(policy):
    config = EngineConfig(block_size=4, num_gpu_blocks=24, num_host_blocks=40, max_num_seqs=4, policy=policy,
                          swap_budget_blocks=8)
    ps = prompts(8, seed=3)
    reference = {i: o.token_ids for i, o in drain(_filled(make_engine(config), ps)).items()}
    eng = _filled(make_engine(config), ps)
    for _ in range(200):                                 # until a request holds host blocks
        eng.step()
        on_host = [s.seq_id for s in eng.sequences if s.host_count]
        if on_host:
            break
    waiting = [s.seq_id for s in eng.sequences if s.status.value == "waiting"]
    assert on_host and waiting, "the test needs a request with host blocks and one waiting"
    victims = sorted([on_host[0], waiting[-1]])
    assert all(eng.abort(v) for v in victims) and not eng.abort("nope")
    outs = eng.step()
    aborted = [o for o in outs if o.finish_reason == "abort"]
    assert sorted(o.request_id for o in aborted) == victims
    assert all(s.seq_id not in victims for s in eng.sequences)
    eng.check_blocks()
    rest = drain(eng)
    assert {i: o.token_ids for i, o in rest.items()} == {i: t for i, t in reference.items() if i not in victims
                                                         and i in rest}
    assert set(rest) | {o.request_id for o in outs} == set(range(8))
    assert eng.blocks.gpu.num_used == 0 and eng.blocks.host.num_used == 0


def _filled(eng, ps):
    for i, p in enumerate(ps):
        eng.add_request(p, SamplingParams(max_tokens=16, ignore_eos=True), request_id=i)
    return eng


def test_runner_abort_and_cancel_queue():
    engine = create_engine("opt-13b", "sim", num_gpu_blocks=400, max_num_seqs=2, dtype="float16")
    reqs = [Request(i, tuple(range(3, 40)), 1500, 0.0) for i in range(10)]
    runner = LiveRunner(engine, ListSource(reqs))
    runner.pause()
    runner.start()
    runner.resume()
    deadline = time.monotonic() + 10
    while engine.metrics.totals["iterations"] < 3:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    runner.pause()
    assert runner.abort(0)
    cancelled = runner.cancel_queue()
    runner.resume()
    assert runner.wait_idle(timeout=20)
    runner.stop()
    reasons = {o.request_id: o.finish_reason for o in runner.outputs}
    assert set(reasons) == set(range(10))
    assert reasons[0] == "abort" and list(reasons.values()).count("abort") == cancelled + 1 >= 2
    engine.check_blocks()


# -- injected faults -----------------------------------------------------------------------------
def reference_tokens(executor, ps, **options):
    return [o.token_ids for o in LLM("opt-tiny", executor, **options).generate(ps, SP)]


def run_with_fault(engine, ps):
    for i, p in enumerate(ps):
        engine.add_request(p, SP, request_id=i)
    outs = drain(engine)
    assert engine.blocks.gpu.num_used == 0 and engine.blocks.host.num_used == 0
    return outs


def fail_once(fn, at_call, exc=RuntimeError("injected fault")):
    calls = [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == at_call:
            raise exc
        return fn(*args, **kwargs)
    return wrapped


def check_contained(outs, reference, where):
    failed = [i for i, o in outs.items() if o.finish_reason == "error"]
    assert failed, "the fault hit no request"
    assert all("injected" in outs[i].error or "thread died" in outs[i].error for i in failed)
    assert sorted(outs) == list(range(len(reference)))
    for i, o in outs.items():
        if o.finish_reason != "error":
            assert o.token_ids == reference[i], f"request {i} changed after a fault in {where}"
    return failed


def test_fault_in_a_model_layer_fails_only_that_batch():
    ps = prompts(6)
    ref = reference_tokens("cpu", ps, **CPU)
    engine = create_engine("opt-tiny", "cpu", **CPU)
    engine.executor.model.layer = fail_once(engine.executor.model.layer, at_call=2 * 7 + 1)  # layer 1, step 8
    outs = run_with_fault(engine, ps)
    failed = check_contained(outs, ref, "layer 1")
    assert len(failed) == 2 and len(engine.faults) == 1 and engine.faults[0]["where"] == "executor"


@pytest.mark.parametrize("path", ["inline", "copy thread"])
def test_fault_in_a_link_copy_is_contained(path):
    ps = prompts(6)
    ref = reference_tokens("cpu", ps, **CPU)
    engine = create_engine("opt-tiny", "cpu", **CPU)
    if path == "copy thread":
        engine.executor.streams.h2d.inline_bytes = 0
    engine.executor.kv.stage_layer = fail_once(engine.executor.kv.stage_layer, at_call=5)
    outs = run_with_fault(engine, ps)
    check_contained(outs, ref, f"the link ({path})")
    assert "emulated link copy failed" in engine.faults[0]["message"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dying_copy_thread_gives_a_bounded_wait_and_a_clear_error(monkeypatch):
    ps = prompts(6)
    ref = reference_tokens("cpu", ps, **CPU)
    engine = create_engine("opt-tiny", "cpu", **CPU)
    link = engine.executor.streams.h2d
    link.inline_bytes = 0                     # every copy goes to the thread (small ones run inline)
    real = link.duration
    calls = [0]

    def dies_on_the_worker(nbytes):
        import threading
        if threading.current_thread().name == "pie-link-h2d":
            calls[0] += 1
            if calls[0] == 5:
                raise SystemExit("copy thread killed")       # not caught by the worker: the thread ends
        return real(nbytes)
    monkeypatch.setattr(link, "duration", dies_on_the_worker)
    t = time.monotonic()
    outs = run_with_fault(engine, ps)
    assert time.monotonic() - t < 30
    check_contained(outs, ref, "a dead copy thread")
    assert "h2d copy thread died" in engine.faults[0]["message"]


@pytest.mark.parametrize("executor", ["cpu", "sim"])
def test_fault_in_the_controller_detaches_it_and_loses_nothing(executor):
    options = dict(CPU, controller=dict(enabled=True, warmup_iterations=1, window=2))
    ps = prompts(6)
    ref = reference_tokens(executor, ps, **options)
    engine = create_engine("opt-tiny", executor, **options)
    engine.controller.observe = fail_once(engine.controller.observe, at_call=4)
    outs = run_with_fault(engine, ps)
    assert [outs[i].token_ids for i in range(6)] == ref
    assert all(o.finish_reason == "length" for o in outs.values())
    assert engine.controller is None and engine.faults[0]["where"] == "controller"


def test_fault_in_the_sim_executor_fails_that_batch():
    ps = prompts(6)
    ref = reference_tokens("sim", ps, **CPU)
    engine = create_engine("opt-tiny", "sim", **CPU)
    engine.executor.execute = fail_once(engine.executor.execute, at_call=9)
    outs = run_with_fault(engine, ps)
    assert len(check_contained(outs, ref, "the sim executor")) == 2


class FailingSource(ListSource):
    def __init__(self, requests, fail_at):
        super().__init__(requests)
        self.calls, self.fail_at = 0, fail_at

    def due(self, now):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("injected source fault")
        return super().due(now)


@pytest.mark.parametrize("executor", ["cpu", "sim"])
def test_runner_contains_a_failing_source_and_step_and_reports_each_fault_once(executor):
    engine = create_engine("opt-tiny", executor, **CPU)
    engine.executor.execute = fail_once(engine.executor.execute, at_call=3)
    reqs = [Request(i, tuple(p), 12, 0.0) for i, p in enumerate(prompts(4))]
    runner = LiveRunner(engine, FailingSource(reqs, fail_at=3)).start()
    assert runner.wait_idle(timeout=30)
    snaps = [runner.snapshot(), runner.snapshot()]
    runner.stop()
    assert runner.state == "stopped" and runner.error is None
    where = sorted(f["where"] for f in snaps[0].faults)
    assert where == ["executor", "source"] and snaps[1].faults == []
    reasons = sorted(o.finish_reason for o in runner.outputs)
    assert reasons == ["error", "error", "length", "length"]
    engine.check_blocks()


def test_a_run_that_cannot_progress_reports_a_stall():
    engine = create_engine("opt-13b", "sim", num_gpu_blocks=400, max_num_seqs=4, dtype="float16")
    reqs = [Request(i, tuple(range(3, 40)), 50, 0.0) for i in range(6)]
    runner = LiveRunner(engine, ListSource(reqs), stall_steps=20)
    schedule = engine.scheduler.schedule
    engine.scheduler.schedule = lambda sched: sched        # a scheduler that never picks anything
    runner.start()
    deadline = time.monotonic() + 20
    while runner.stalled is None:
        assert time.monotonic() < deadline, "no stall reported"
        time.sleep(0.005)
    snap = runner.snapshot()
    assert "no token for" in snap.stalled and "6 waiting" in snap.stalled
    assert "stalled" in set(snap.events["kind"])
    engine.scheduler.schedule = schedule
    assert runner.wait_idle(timeout=20)
    runner.stop()
    assert runner.stalled is None and len(runner.outputs) == 6 and runner.stall_count == 1
    assert "unstalled" in set(engine.metrics.events_df()["kind"])


# -- live knobs that would leave a request no room are refused -----------------------------------
def test_live_knobs_that_leave_a_request_in_flight_no_room_are_refused():
    eng = make_engine(EngineConfig(block_size=4, num_gpu_blocks=64, max_num_batched_tokens=256, policy="pie",
                                   swap_budget_blocks=8), num_host_blocks=32)
    eng.add_request(list(range(3, 43)), SamplingParams(max_tokens=60, ignore_eos=True), request_id="long")
    eng.step()
    with pytest.raises(ConfigError, match=r"num_gpu_blocks=20 leaves 24 KV blocks.*'long'.*needs up to 25"):
        eng.update(num_gpu_blocks=20)             # 20 + budget 8 - a ring of 4

    with pytest.raises(ConfigError, match=r"max_num_batched_tokens=16 is less than the 40-token prompt"):
        eng.update(max_num_batched_tokens=16)
    eng.update(num_gpu_blocks=21, max_num_batched_tokens=40)     # 21 + 8 - 4 = 25: room enough
    drain(eng)
    eng.update(num_gpu_blocks=2)                                 # nothing in flight: fine


def test_a_staging_ring_that_does_not_fit_the_device_is_refused():
    from pie_lab.executors.base import MemoryAvailable
    eng = make_engine(EngineConfig(block_size=4, num_gpu_blocks=64, policy="pie", swap_budget_blocks=48,
                                   prefetch_depth=1), num_host_blocks=64)
    per_block = eng.block_bytes
    eng.executor.memory_available = lambda: MemoryAvailable(13 * per_block, None, "test device")
    eng.update(prefetch_depth=2)              # 4 layers: ring of 48 x 1/4 = 12 blocks -> 24, 12 more
    with pytest.raises(ConfigError, match=r"prefetch_depth=4 needs .* of test device for the staging ring"):
        eng.update(prefetch_depth=4)          # -> 48 blocks



# -- memory sized before it is allocated ----------------------------------------------------------
def test_pools_are_checked_against_memory_before_allocation(monkeypatch):
    import pie_lab.executors.base as base
    with pytest.raises(ConfigError, match=r"num_host_blocks=1000000000 needs .* GiB .* of RAM but .* available; "
                                          r"allowed: num_host_blocks <="):
        create_engine("opt-tiny", "cpu", policy="vllm-swap", num_host_blocks=10**9)
    with pytest.raises(ConfigError, match=r"num_gpu_blocks=1000000000 needs .* of RAM \(the cpu executor's GPU pool\)"):
        create_engine("opt-tiny", "cpu", num_gpu_blocks=10**9)
    with pytest.raises(ConfigError, match=r"host_kv_limit_gb=10000 needs .*allowed: host_kv_limit_gb <="):
        create_engine("opt-tiny", "cpu", policy="pie", host_kv_limit_gb=10**4)
    with pytest.raises(ConfigError, match=r"swap_budget_blocks=1000000 is more than the host tier holds \(512 blocks"):
        create_engine("opt-tiny", "cpu", policy="pie", num_gpu_blocks=256, swap_budget_blocks=10**6)
    assert create_engine("opt-tiny", "cpu", swap_budget_blocks=10**9).blocks.host.capacity == 0   # unused: none
    eng = create_engine("opt-tiny", "cpu", policy="pie", num_gpu_blocks=64, host_kv_limit_gb=0.01)
    assert eng.blocks.host.capacity == int(0.01 * 2**30 // eng.block_bytes)
    # the default host tier: twice the GPU pool, at most half the RAM left after the GPU pool
    block = create_engine("opt-tiny", "cpu", num_gpu_blocks=8).block_bytes
    monkeypatch.setattr(base, "mem_available_bytes", lambda: int((100 * block + 8 * block) / base.HOST_SHARE))
    import pie_lab.executors.cpu as cpu
    monkeypatch.setattr(cpu, "mem_available_bytes", base.mem_available_bytes)
    assert create_engine("opt-tiny", "cpu", policy="pie", num_gpu_blocks=8).blocks.host.capacity == 16
    assert create_engine("opt-tiny", "cpu", policy="pie", num_gpu_blocks=80).blocks.host.capacity == 14
    with pytest.raises(ConfigError, match=r"num_gpu_blocks=200 needs"):
        create_engine("opt-tiny", "cpu", num_gpu_blocks=200)


def test_sim_pools_are_checked_against_the_preset():
    with pytest.raises(ConfigError, match=r"num_gpu_blocks=1000000 needs .* of H200 GPU memory \(modelled\)"):
        create_engine("opt-13b", "sim", num_gpu_blocks=10**6, dtype="float16")


def test_a_request_that_can_no_longer_fit_fails_alone():
    eng = make_engine(EngineConfig(block_size=4, num_gpu_blocks=8, max_num_batched_tokens=64))
    eng.add_request(list(range(3, 23)), SamplingParams(max_tokens=12, ignore_eos=True), request_id="big")
    eng.add_request([5, 6], SamplingParams(max_tokens=2, ignore_eos=True), request_id="small")
    eng.step()
    eng.blocks.gpu.limit = 6                  # below what "big" will need (as a shrinking budget could do)
    outs = drain(eng)
    assert outs["big"].finish_reason == "error" and "more GPU blocks" in outs["big"].error
    assert outs["small"].finish_reason == "length" and len(outs["small"].token_ids) == 2
    assert eng.faults[-1]["where"] == "scheduler"
