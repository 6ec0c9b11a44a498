"""Policy hybrid on the cpu executor: the host share's attention runs on its own worker, paced to a
host rate, merged by log-sum-exp; greedy tokens equal the no-swap run and transformers' generate."""
import pytest

from pie_lab import LLM, ControllerConfig, SamplingParams
from test_generate_equivalence import generate, prompts, reference  # noqa: F401 (fixture)


@pytest.mark.parametrize("options", [
    dict(swap_budget_blocks=0, host_compute_blocks=20, offload="eager"),         # host-computed only
    dict(swap_budget_blocks=8, host_compute_blocks=12, offload="eager"),         # both shares
    dict(swap_budget_blocks=4, host_compute_blocks=1996, num_host_blocks=2000, offload="eager"),   # every full block
    dict(swap_budget_blocks=6, host_compute_blocks=10, num_gpu_blocks=40, num_host_blocks=400,
         preemption_mode="swap"),                                                # under memory pressure, on demand
    dict(swap_budget_blocks=4, host_compute_blocks=12, chunked_prefill=True, max_num_batched_tokens=24, offload="eager"),
    dict(swap_budget_blocks=8, host_compute_blocks=12, host_split="on", offload="eager"),   # sub-batches D, H
    dict(swap_budget_blocks=4, host_compute_blocks=12, chunked_prefill=True, max_num_batched_tokens=24,
         host_split="on", offload="eager"),                                      # D holds prefill rows
], ids=["host-only", "split", "all", "pressure", "chunked", "sub-batches", "sub-batches-chunked"])
def test_hybrid_tokens_equal_transformers_generate(reference, options):  # noqa: F811
    name, _, ps, refs = reference
    options = {"num_gpu_blocks": 400, "link_bandwidth_gbps": 50.0, "host_attention_gbps": 50.0, **options}
    toks, llm = generate(name, ps, policy="hybrid", **options)
    assert toks == refs
    it = llm.engine.metrics.iterations_df()
    assert it["host_computed_blocks"].max() > 0 and (it["host_time"] > 0).any()
    layers = llm.engine.metrics.layers_df()
    lane = layers.dropna(subset=["host_start"])
    assert len(lane) and (lane["host_end"] >= lane["host_start"]).all() and (lane["host_bytes"] > 0).all()
    if options.get("swap_budget_blocks") == 8:               # the dashboard draws the host lane
        from widgets.charts import timeline_rows
        kinds = {r["kind"] for r in timeline_rows(layers[layers.step.isin(lane.step.unique()[-3:])])}
        assert {"compute", "host attention"} <= kinds


def test_sub_batches_run_d_before_the_merge_and_widen_the_host_window():
    """host_split="on": D's post-attention pass runs before the wait, so the window the host gets
    (handing queries over -> merge) holds it; both passes are measured for "auto"'s rule."""
    runs = {}
    for mode in ("off", "on"):
        llm = LLM("opt-tiny", "cpu", block_size=4, max_num_seqs=16, policy="hybrid", num_gpu_blocks=400,
                  swap_budget_blocks=0, host_compute_blocks=6, offload="eager", host_attention_gbps=50.0,
                  host_split=mode)
        toks = [o.token_ids for o in llm.generate(prompts(8, seed=5), SamplingParams(max_tokens=12, ignore_eos=True))]
        share = llm.engine.executor.host_attention()
        runs[mode] = toks, len(share.post.samples)
        llm.close()
    assert runs["on"][0] == runs["off"][0]
    assert runs["on"][1] > runs["off"][1] > 0          # split: two measured passes per layer


def test_host_attention_is_paced_to_its_rate():
    """At a slow host rate the device waits for the partials; the controller then shrinks the host
    share (each decision an event naming its share and rule)."""
    llm = LLM("opt-tiny", "cpu", block_size=4, max_num_seqs=16, policy="hybrid", num_gpu_blocks=400,
              swap_budget_blocks=0, host_compute_blocks=40, offload="eager", host_attention_gbps=0.002,
              controller=ControllerConfig(enabled=True, window=2, warmup_iterations=1))
    llm.generate(prompts(8, seed=3), SamplingParams(max_tokens=24, ignore_eos=True))
    it = llm.engine.metrics.iterations_df()
    paced = it[it.host_bytes > 0]
    # each layer's host path takes at least bytes / rate
    assert (paced.host_time >= paced.host_bytes / 0.002e9 * 0.95).all()
    assert paced.host_wait.sum() > 0
    ev = llm.engine.metrics.events_df().query("kind == 'controller' and share == 'host'")
    assert (ev.new_budget < ev.old_budget).any() and ev.rule.str.contains("backoff|trim").any()
    llm.close()
