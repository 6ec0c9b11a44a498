"""CUDA executor: the same tokens as transformers and as the cpu executor, with swapping on. Skips without a GPU."""
import random

import pytest
import torch

from pie_lab import LLM, SamplingParams

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible)")]


def prompts(n=8, seed=0):
    rng = random.Random(seed)
    return [[rng.randrange(3, 500) for _ in range(rng.randint(2, 40))] for _ in range(n)]


def tokens(model, executor, **options):
    llm = LLM(model, executor, block_size=4, num_gpu_blocks=400, **options)
    out = [o.token_ids for o in llm.generate(prompts(), SamplingParams(max_tokens=32, ignore_eos=True))]
    llm.engine.check_blocks()
    llm.close()
    return out


@pytest.mark.parametrize("model", ["opt-tiny", "llama-tiny"])
def test_cuda_equals_transformers_generate(model):
    from pie_lab.model.loader import build_hf_model
    hf = build_hf_model(model, seed=0).cuda()
    refs = [hf.generate(torch.tensor([p], device="cuda"), max_new_tokens=32, min_new_tokens=32,
                        do_sample=False)[0, len(p):].tolist() for p in prompts()]
    assert tokens(model, "cuda") == refs


@pytest.mark.parametrize("depth", [1, 2, 4])
@pytest.mark.parametrize("model", ["opt-tiny", "llama-tiny"])
def test_cuda_swapping_changes_nothing(model, depth):
    reference = tokens(model, "cuda")
    assert tokens(model, "cuda", policy="pie", swap_budget_blocks=10_000, num_host_blocks=2000,
                  prefetch_depth=depth) == reference
    assert tokens(model, "cuda", policy="vllm-swap", num_host_blocks=400) == reference


def test_cuda_half_precision_runs_and_streams():
    llm = LLM("llama-tiny", "cuda", dtype="bfloat16", block_size=16, policy="pie", swap_budget_blocks=64,
              num_host_blocks=256, num_gpu_blocks=256)
    outs = llm.generate(prompts(16), SamplingParams(max_tokens=48, ignore_eos=True))
    it = llm.engine.metrics.iterations_df()
    assert all(len(o.token_ids) == 48 for o in outs)
    assert it["stream_bytes"].sum() > 0 and not it["emulated_link"].any()
    layers = llm.engine.metrics.layers_df()
    assert (layers["copy_end"].dropna() >= layers["copy_start"].dropna()).all()


@pytest.mark.parametrize("model", ["opt-tiny", "llama-tiny"])
def test_cuda_hybrid_host_attention_changes_nothing(model):
    """Policy hybrid: the host-computed share attended by torch on the CPU over pinned host KV,
    merged on the GPU; one wait per layer; the host lane in the layer timings."""
    reference = tokens(model, "cuda")
    llm = LLM(model, "cuda", block_size=4, num_gpu_blocks=400, policy="hybrid", swap_budget_blocks=8,
              host_compute_blocks=10_000, num_host_blocks=2000)
    out = [o.token_ids for o in llm.generate(prompts(), SamplingParams(max_tokens=32, ignore_eos=True))]
    layers = llm.engine.metrics.layers_df().dropna(subset=["host_start"])
    llm.close()
    assert out == reference
    assert len(layers) and (layers["host_bytes"] > 0).all() and (layers["host_end"] >= layers["host_start"]).all()
