"""Policy hybrid through the engine core with the numpy fake executor: the split between
host-computed and streamed host blocks never changes tokens, never leaks, and is really used."""
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from pie_lab import ConfigError, EngineConfig
from fake_executor import make_engine, run_to_completion
from test_core_engine import BASE, requests, run, stream_with_knob_changes


@pytest.mark.parametrize("changes", [
    dict(swap_budget_blocks=0, host_compute_blocks=10, offload="eager"),           # host-computed only
    dict(swap_budget_blocks=10, host_compute_blocks=10, offload="eager"),
    dict(swap_budget_blocks=0, host_compute_blocks=10_000, offload="eager"),       # every full block on the host
    dict(swap_budget_blocks=5, host_compute_blocks=30, num_gpu_blocks=40, prefetch_depth=3),   # on demand: pressure
    dict(swap_budget_blocks=5, host_compute_blocks=8, num_gpu_blocks=30),                # preempts by swap
    dict(swap_budget_blocks=5, host_compute_blocks=8, num_gpu_blocks=30, preemption_mode="recompute"),
    dict(swap_budget_blocks=4, host_compute_blocks=12, chunked_prefill=True, max_num_batched_tokens=16, offload="eager"),
])
def test_hybrid_gives_identical_tokens(changes):
    reqs = requests(12, seed=1)
    ref, _ = run(BASE, reqs)
    cfg = BASE.replace(policy="hybrid", num_host_blocks=10_000 if changes["host_compute_blocks"] > 1000 else 200)
    outs, eng = run(cfg.replace(**changes), reqs)
    assert outs == ref
    it = eng.metrics.iterations_df()
    assert it["host_computed_blocks"].max() > 0
    assert (it["host_computed_blocks"] <= changes["host_compute_blocks"]).all()


def test_split_takes_the_oldest_host_blocks_of_decoding_sequences():
    reqs = requests(6, seed=2, lo=20, hi=40)
    eng = make_engine(BASE.replace(policy="hybrid", swap_budget_blocks=6, host_compute_blocks=9, num_host_blocks=100,
                                   offload="eager"))
    for i, (p, sp) in enumerate(reqs):
        eng.add_request(p, sp, request_id=i)
    seen = 0
    real_execute = eng.executor.execute

    def check(plan):
        nonlocal seen
        staged = set(plan.stream.host_blocks) if plan.stream else set()
        for w in plan.seqs:
            host = [~b for b in w.block_table if b < 0]
            if w.host_computed:
                seen += 1
                assert len(w.token_ids) == 1
                assert not staged & set(host[:w.host_computed])
        assert plan.num_host_computed_blocks <= 9
        return real_execute(plan)

    eng.executor.execute = check
    run_to_completion(eng)
    assert seen > 0
    it = eng.metrics.iterations_df()
    assert it["streamed_blocks"].max() > 0          # the streamed share is used at the same time


def test_hybrid_knobs_are_validated():
    with pytest.raises(ConfigError, match="host_compute_blocks=-1"):
        EngineConfig(host_compute_blocks=-1)
    with pytest.raises(ConfigError, match="host_attention_gbps"):
        EngineConfig(host_attention_gbps=0)
    eng = make_engine(BASE.replace(policy="hybrid", num_host_blocks=50))
    with pytest.raises(ConfigError, match=r"host_compute_blocks=51 is out of range"):
        eng.update(host_compute_blocks=51)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), swap=st.booleans(), gpu=st.integers(24, 80), chunked=st.booleans(),
       changes=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 40), st.integers(0, 40),
                                  st.integers(1, 5), st.integers(1, 8)), max_size=8),
       offload=st.sampled_from(["eager", "on-demand"]))
def test_random_splits_and_knob_changes_never_leak_or_alter(seed, swap, gpu, chunked, changes, offload):
    stream_with_knob_changes(seed, "hybrid", swap, gpu, chunked, changes,
                             knobs=("swap_budget_blocks", "host_compute_blocks", "prefetch_depth", "max_num_seqs"),
                             swap_budget_blocks=4, host_compute_blocks=6, flexgen_fraction=0.0, offload=offload)


def test_split_rule_and_the_fitted_post_attention_line():
    from pie_lab.core.host_split import PostTimes, decide_split, split_pays
    assert not split_pays(0.0, 1.0, 0.1, 1.0)                   # no wait: nothing to hide
    assert not split_pays(0.5, 1.0, 1.0, 1.0)                   # memory-bound: a weight read for 0.5 s of wait
    assert split_pays(0.5, 0.6, 0.45, 1.0)                      # compute-bound: 0.05 s for 0.5 s
    assert not decide_split("on", 0, 1.0, 0.6, 0.45, 1.0) and decide_split("on", 3, 0.0, 1.0, 1.0, 1.0)
    assert not decide_split("off", 3, 0.5, 0.6, 0.45, 1.0) and decide_split("auto", 3, 0.5, 0.6, 0.45, 1.0)
    post = PostTimes()
    assert post(10) is None
    for rows in (10, 20, 40):
        post.add(rows, 1e-3 + 1e-5 * rows)
    assert post(30) == pytest.approx(1.3e-3) and post(0) == pytest.approx(1e-3)
