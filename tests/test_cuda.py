"""CUDA executor. Everywhere: its own code (CudaStreams, block tables, ring slots, the order of
records and waits, timings assembly) runs on the CPU against a stand-in for torch.cuda's stream
and event calls (tests/fake_cuda.py). On a GPU only (skipped elsewhere): the same tokens as
transformers and the cpu executor, with swapping on, on real streams."""
import random

import pytest
import torch

from fake_cuda import FakeCuda
from pie_lab import LLM, EngineConfig, SamplingParams
from pie_lab.engine_factory import engine_on
from pie_lab.executors.cuda import CUDAExecutor, CudaStreams
from pie_lab.model.loader import load_model

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible)")
EPS = 1e-9


def prompts(n=8, seed=0):
    rng = random.Random(seed)
    return [[rng.randrange(3, 500) for _ in range(rng.randint(2, 40))] for _ in range(n)]


# offload "eager" throughout: the 400-block GPU pool has room, and these tests are about the streams
def tokens(model, executor, **options):
    llm = LLM(model, executor, **{"block_size": 4, "num_gpu_blocks": 400, "offload": "eager", **options})
    out = [o.token_ids for o in llm.generate(prompts(), SamplingParams(max_tokens=32, ignore_eos=True))]
    llm.engine.check_blocks()
    llm.close()
    return out


def stand_in_run(fake: FakeCuda, model="opt-tiny", **options):
    """The cuda executor on the CPU, its torch.cuda calls answered by `fake`: (tokens, engine)."""
    config = EngineConfig(**{"block_size": 4, "num_gpu_blocks": 400, "offload": "eager", **options})
    decoder, tokenizer = load_model(model, dtype=config.dtype, device="cpu", seed=config.seed)
    engine = engine_on(CUDAExecutor(decoder, tokenizer, config, torch.device("cpu"), cuda=fake), config)
    for i, p in enumerate(prompts()):
        engine.add_request(p, SamplingParams(max_tokens=32, ignore_eos=True), request_id=i)
    out = {}
    while engine.has_unfinished():
        out.update((o.request_id, o.token_ids) for o in engine.step())
        engine.check_blocks()
    return [out[i] for i in range(len(out))], engine


def misordered(engine, depth: int) -> tuple[int, int]:
    """(layers that started computing before their copy landed, copies that started before the
    layer last reading their staging slot finished), over every step."""
    layers = engine.metrics.layers_df()
    copied = layers.dropna(subset=["copy_end"])
    early_compute = int((copied["compute_start"] < copied["copy_end"] - EPS).sum())
    early_copy = 0
    for _, step in layers.groupby("step"):
        end = step.set_index("layer")["compute_end"]
        later = step[(step["layer"] >= depth) & step["copy_start"].notna()]
        early_copy += int((later["copy_start"].values < end[later["layer"] - depth].values - EPS).sum())
    return early_compute, early_copy


@pytest.fixture(scope="module")
def reference():
    return tokens("opt-tiny", "cpu")


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_cuda_executor_code_on_the_stand_in_matches_the_cpu_executor(reference, depth):
    got, eng = stand_in_run(FakeCuda(), policy="pie", swap_budget_blocks=2000, num_host_blocks=2000,
                            prefetch_depth=depth)
    assert got == reference and not eng.faults
    it = eng.metrics.iterations_df()
    assert it["stream_bytes"].sum() > 0 and it["offload_bytes"].sum() > 0 and not it["emulated_link"].any()
    assert misordered(eng, depth) == (0, 0)


def test_cuda_executor_swaps_whole_sequences_on_the_stand_in(reference):
    got, eng = stand_in_run(FakeCuda(), policy="vllm-swap", num_gpu_blocks=60, num_host_blocks=400)
    assert got == reference and not eng.faults
    assert eng.metrics.iterations_df()["blocking_copy_bytes"].sum() > 0       # swap_out and swap_in ran


@pytest.mark.parametrize("split", ["off", "on"])
def test_cuda_executor_runs_the_hybrid_host_share_on_the_stand_in(reference, split):
    got, eng = stand_in_run(FakeCuda(), policy="hybrid", swap_budget_blocks=8, host_compute_blocks=12,
                            host_split=split)
    assert got == reference and not eng.faults
    assert eng.metrics.iterations_df()["host_computed_blocks"].max() > 0


@pytest.mark.parametrize("bound", ["copy", "compute"])
def test_waits_order_the_streams(bound):
    """Copy-bound: compute must wait for each copy. Compute-bound (the host runs ahead of the
    device): each copy must wait for its slot's last reader. The stand-in's clocks show both."""
    fake = FakeCuda(copy_rate=40.0) if bound == "copy" else FakeCuda(compute_rate=40.0)
    _, eng = stand_in_run(fake, policy="pie", swap_budget_blocks=2000, num_host_blocks=2000, prefetch_depth=1)
    assert misordered(eng, 1) == (0, 0) and not eng.faults
    waits = {e[:2] for e in fake.log}
    assert ("wait_event", "compute") in waits and ("wait_event", "copy1") in waits     # copy1: the h2d stream
    if bound == "copy":
        assert eng.metrics.iterations_df()["stall"].sum() > 0


def test_the_stand_in_catches_a_missing_wait(monkeypatch):
    """Drop either wait and the stand-in says so: the step fails reading a copy's event that has
    not completed when the layers have, or the timings show a copy landing after its layer began,
    or starting before its slot's last reader ended."""
    monkeypatch.setattr(CudaStreams, "wait", lambda self, copies: None)
    _, eng = stand_in_run(FakeCuda(copy_rate=40.0), policy="pie", swap_budget_blocks=2000,
                          num_host_blocks=2000, prefetch_depth=1)
    assert misordered(eng, 1)[0] > 0 or any("before it completed" in f["message"] for f in eng.faults)
    monkeypatch.undo()
    stage = CudaStreams.stage
    monkeypatch.setattr(CudaStreams, "stage", lambda self, run, nbytes, after: stage(self, run, nbytes, None))
    _, eng = stand_in_run(FakeCuda(compute_rate=40.0), policy="pie", swap_budget_blocks=2000,
                          num_host_blocks=2000, prefetch_depth=1)
    assert misordered(eng, 1)[1] > 0


# -- on a GPU --------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["opt-tiny", "llama-tiny"])
@pytest.mark.cuda
@needs_gpu
def test_cuda_equals_transformers_generate(model):
    from pie_lab.model.loader import build_hf_model
    hf = build_hf_model(model, seed=0).cuda()
    refs = [hf.generate(torch.tensor([p], device="cuda"), max_new_tokens=32, min_new_tokens=32,
                        do_sample=False)[0, len(p):].tolist() for p in prompts()]
    assert tokens(model, "cuda") == refs


@pytest.mark.parametrize("depth", [1, 2, 4])
@pytest.mark.parametrize("model", ["opt-tiny", "llama-tiny"])
@pytest.mark.cuda
@needs_gpu
def test_cuda_swapping_changes_nothing(model, depth):
    reference = tokens(model, "cuda")
    assert tokens(model, "cuda", policy="pie", swap_budget_blocks=2000, num_host_blocks=2000,
                  prefetch_depth=depth) == reference
    assert tokens(model, "cuda", policy="vllm-swap", num_host_blocks=400) == reference


@pytest.mark.cuda
@needs_gpu
def test_cuda_half_precision_runs_and_streams():
    llm = LLM("llama-tiny", "cuda", dtype="bfloat16", block_size=16, policy="pie", swap_budget_blocks=64,
              offload="eager", num_host_blocks=256, num_gpu_blocks=256)
    outs = llm.generate(prompts(16), SamplingParams(max_tokens=48, ignore_eos=True))
    it = llm.engine.metrics.iterations_df()
    assert all(len(o.token_ids) == 48 for o in outs)
    assert it["stream_bytes"].sum() > 0 and not it["emulated_link"].any()
    layers = llm.engine.metrics.layers_df()
    assert (layers["copy_end"].dropna() >= layers["copy_start"].dropna()).all()


@pytest.mark.parametrize("model", ["opt-tiny", "llama-tiny"])
@pytest.mark.cuda
@needs_gpu
def test_cuda_hybrid_host_attention_changes_nothing(model):
    """Policy hybrid: the host-computed share attended by torch on the CPU over pinned host KV,
    merged on the GPU; one wait per layer; the host lane in the layer timings."""
    reference = tokens(model, "cuda")
    llm = LLM(model, "cuda", block_size=4, num_gpu_blocks=400, policy="hybrid", swap_budget_blocks=8,
              host_compute_blocks=1992, num_host_blocks=2000, offload="eager")
    out = [o.token_ids for o in llm.generate(prompts(), SamplingParams(max_tokens=32, ignore_eos=True))]
    layers = llm.engine.metrics.layers_df().dropna(subset=["host_start"])
    llm.close()
    assert out == reference
    assert len(layers) and (layers["host_bytes"] > 0).all() and (layers["host_end"] >= layers["host_start"]).all()
