"""The cpu executor's emulated link: transparent below the link limit, stalls as predicted above it."""
import statistics
import time

import pytest
import torch

from pie_lab import create_engine, EngineError, ModelSpec, SamplingParams
from pie_lab.executors.link import CopyJob, EmulatedLink, PacedCopy
from pie_lab.sim.overlap import schedule_layers
from pie_lab.executors.kv_store import KVStore
from pie_lab.model_spec import NAMED_SHAPES

# Heavy enough per layer (a few ms of weight reads per decode step) that timer noise is small,
# with GQA so a layer's KV copy is cheap to perform for real and the pacing decides its time.
SPEC = ModelSpec.from_hf_config({**NAMED_SHAPES["llama-tiny"], "num_hidden_layers": 8, "hidden_size": 1024,
                                 "num_attention_heads": 16, "num_key_value_heads": 2,
                                 "intermediate_size": 2816}, name="llama-8x1024")
LATENCY_US = 20.0


def run_steps(engine, n):
    for _ in range(n):
        engine.step()
    return engine.metrics.iterations_df(last=n), engine.metrics.layers_df(last_steps=n)


@pytest.fixture(scope="module")
def engine():
    eng = create_engine(SPEC, "cpu", policy="pie", block_size=16, num_gpu_blocks=256, num_host_blocks=512,
                        swap_budget_blocks=512, offload="eager", prefetch_depth=2, max_num_seqs=16,
                        link_bandwidth_gbps=1000.0, link_latency_us=LATENCY_US)
    for i in range(16):
        eng.add_request([5 + (i + j) % 400 for j in range(60)], SamplingParams(max_tokens=200, ignore_eos=True))
    run_steps(eng, 6)                            # prefill, then decode with every full block on the host
    yield eng
    eng.close()


def per_layer(engine, steps=4):
    it, layers = run_steps(engine, steps)
    compute = statistics.median(layers["compute_end"] - layers["compute_start"])
    layer_bytes = int(it["stream_bytes"].iloc[-1] / SPEC.num_layers)
    return compute, layer_bytes


def test_below_the_link_limit_the_copies_hide(engine):
    compute, layer_bytes = per_layer(engine)
    assert layer_bytes > 0
    copy = 0.5 * compute                                    # per-layer copy half the per-layer compute
    engine.update(link_bandwidth_gbps=layer_bytes / (copy - LATENCY_US * 1e-6) / 1e9)
    it, _ = run_steps(engine, 12)
    it = it.iloc[2:]                                        # the change applies, the ring refills
    assert it["copy_time"].sum() > 0.3 * SPEC.num_layers * compute * len(it)
    assert it["stall"].sum() <= 0.05 * it["copy_time"].sum()
    # the emulation's own cost: the copies' CPU time, reported per step, a share of the step
    assert (it["link_cpu_time"] > 0).all() and it["link_cpu_time"].sum() < it["duration"].sum()


def test_above_the_link_limit_the_stall_follows_the_excess(engine):
    compute, layer_bytes = per_layer(engine)
    copy = 3.0 * compute
    engine.update(link_bandwidth_gbps=layer_bytes / (copy - LATENCY_US * 1e-6) / 1e9)
    _, layers = run_steps(engine, 10)
    layers = layers[layers["step"] > layers["step"].min()].sort_values(["step", "layer"])
    # Steps chain on the link (the next step's first layers are prefetched in this step's tail),
    # so predict over the whole run: layers back to back, the time between steps folded into the
    # layer before it, and each copy as long as the link's bandwidth and latency say.
    begin = (layers["step_start"] + layers["compute_start"]).to_numpy()
    end = (layers["step_start"] + layers["compute_end"]).to_numpy()
    wait = layers["wait"].to_numpy()
    busy = [begin[i + 1] - begin[i] - wait[i + 1] for i in range(len(begin) - 1)] + [end[-1] - begin[-1]]
    nominal = [LATENCY_US * 1e-6 + b * (copy - LATENCY_US * 1e-6) / layer_bytes for b in layers["bytes"]]
    predicted = schedule_layers(busy, nominal, 2, prestaged=2)
    skip = SPEC.num_layers                       # the first step starts with whatever the link held
    measured_stall = layers["wait"].iloc[skip:].sum()
    predicted_stall = sum(l.wait for l in predicted[skip:])
    print(f"stall measured {measured_stall:.4f}s predicted {predicted_stall:.4f}s")
    assert predicted_stall > 0.5 * compute * (len(layers) - skip)     # clearly link-bound
    assert measured_stall == pytest.approx(predicted_stall, rel=0.2)


def test_host_blocks_survive_round_trips_bit_exactly():
    store = KVStore(SPEC, 16, "bfloat16", torch.device("cpu"), pin_host=False)
    store.allocate(8, 8)
    torch.manual_seed(0)
    store.pool.normal_()
    original = store.pool.clone()
    for _ in range(20):
        store.copy_blocks(store.pool, store.host, store.ranges([(g, 7 - g) for g in range(8)]))
        store.pool.zero_()
        store.copy_blocks(store.host, store.pool, store.ranges([(7 - g, g) for g in range(8)]))
    assert torch.equal(store.pool, original)
    store.ensure_staging(2, 8)
    for layer in range(SPEC.num_layers):
        store.stage_layer(layer, layer % 2, store.ranges([(h, h) for h in range(8)]))
        assert torch.equal(store.staging[layer % 2], store.host[layer])


def test_small_copies_run_inline_and_keep_the_links_fifo_pacing():
    link = EmulatedLink(bandwidth_gbps=0.1, latency_us=100.0, name="h2d", inline_bytes=1 << 20)
    src, dst = torch.arange(2**19, dtype=torch.float32), torch.zeros(2**19)      # 2 MiB
    small = 2**16                                                                # 256 KiB
    try:
        a = link.submit(lambda: dst[:small].copy_(src[:small]), 4 * small)
        assert isinstance(a, PacedCopy) and torch.equal(dst[:small], src[:small])   # done on this thread
        b = link.submit(lambda: None, 4 * small)
        assert b.start == max(a.end, b.issued)                    # queued behind a on the link's timeline
        assert b.end - b.start == pytest.approx(link.duration(4 * small))
        big = link.submit(lambda: dst.copy_(src), 4 * src.numel())                 # too big: the thread
        after = link.submit(lambda: None, 0)                      # small, but behind a copy on the thread
        assert isinstance(big, CopyJob) and isinstance(after, CopyJob)
        after.wait()
        assert big.start >= b.end and after.start >= big.end and torch.equal(dst, src)
        c = link.submit(lambda: None, 0)
        assert isinstance(c, PacedCopy) and c.start >= after.end
        assert c.wait() >= 0 and time.perf_counter() >= c.end
        assert link.cpu_seconds > 0
    finally:
        link.close()


def test_an_inline_copy_that_fails_reports_at_its_wait():
    link = EmulatedLink(bandwidth_gbps=1.0, latency_us=10.0, name="d2h")
    job = link.submit(lambda: torch.zeros(2).copy_(torch.zeros(3)), 8)
    with pytest.raises(EngineError, match="emulated link copy failed: RuntimeError"):
        job.wait()
