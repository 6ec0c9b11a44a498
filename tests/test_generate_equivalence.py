"""Greedy tokens equal transformers' own generate, on every policy, budget and prefetch depth."""
import random

import pytest
import torch

from pie_lab import LLM, ConfigError, SamplingParams
from pie_lab.model.loader import build_hf_model

NEW_TOKENS = 32


def prompts(n=10, seed=0):
    rng = random.Random(seed)
    return [[rng.randrange(3, 500) for _ in range(rng.randint(2, 40))] for _ in range(n)]


@pytest.fixture(scope="module", params=["opt-tiny", "llama-tiny"])
def reference(request):
    name = request.param
    hf = build_hf_model(name, seed=0)
    ps = prompts()
    refs = []
    for p in ps:
        g = hf.generate(torch.tensor([p]), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
        refs.append(g[0, len(p):].tolist())
    return name, hf, ps, refs


def generate(model, ps, **options):
    llm = LLM(model, "cpu", block_size=4, max_num_seqs=16, **options)
    outs = llm.generate(ps, SamplingParams(max_tokens=NEW_TOKENS, ignore_eos=True))
    llm.engine.check_blocks()
    llm.close()
    return [o.token_ids for o in outs], llm


def test_equals_transformers_generate(reference):
    name, _, ps, refs = reference
    assert generate(name, ps, num_gpu_blocks=400)[0] == refs


def test_equals_transformers_from_saved_folder(reference, tmp_path):
    name, hf, ps, refs = reference
    hf.save_pretrained(tmp_path / "ckpt")
    assert generate(str(tmp_path / "ckpt"), ps, num_gpu_blocks=400)[0] == refs


def test_equals_transformers_from_model_object(reference):
    name, hf, ps, refs = reference
    assert generate(hf, ps, num_gpu_blocks=400)[0] == refs


@pytest.mark.parametrize("options", [
    dict(num_gpu_blocks=40),                                        # recompute preemption
    dict(num_gpu_blocks=400, chunked_prefill=True, max_num_batched_tokens=24),
    dict(num_gpu_blocks=40, chunked_prefill=True, max_num_batched_tokens=16),
], ids=["pressure", "chunked", "pressure+chunked"])
def test_equal_under_pressure_and_chunked_prefill(reference, options):
    name, _, ps, refs = reference
    toks, llm = generate(name, ps, **options)
    assert toks == refs
    if options["num_gpu_blocks"] == 40:
        assert llm.engine.metrics.iterations_df()["preempted"].sum() > 0


@pytest.mark.parametrize("policy, options", [
    ("pie", dict(swap_budget_blocks=8, offload="eager")),                # streams with GPU room to spare
    ("pie", dict(swap_budget_blocks=2000, num_host_blocks=2000, offload="eager")),         # every full block
    ("pie", dict(swap_budget_blocks=2000, num_host_blocks=2000, num_gpu_blocks=60, offload="eager")),
    ("vllm-swap", dict(num_gpu_blocks=40, num_host_blocks=400)),
    ("pie", dict(swap_budget_blocks=16, num_gpu_blocks=40, num_host_blocks=400)),        # on demand, preempts by swap
    ("pie", dict(swap_budget_blocks=16, num_gpu_blocks=40, num_host_blocks=400, preemption_mode="recompute")),
    ("recompute", dict(num_gpu_blocks=40)),
    ("flexgen", dict(flexgen_fraction=0.5)),
    ("none", dict()),
])
def test_equal_across_policies(reference, policy, options):
    name, _, ps, refs = reference
    options = {"num_gpu_blocks": 400, "link_bandwidth_gbps": 50.0, **options}
    toks, llm = generate(name, ps, policy=policy, **options)
    assert toks == refs
    it = llm.engine.metrics.iterations_df()
    if policy in ("pie", "flexgen"):
        assert it["streamed_blocks"].max() > 0
    if policy == "vllm-swap":
        assert it["swapped_out"].sum() > 0


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_equal_for_every_prefetch_depth(reference, depth):
    name, _, ps, refs = reference
    toks, llm = generate(name, ps, policy="pie", swap_budget_blocks=2000, num_host_blocks=2000, offload="eager",
                         num_gpu_blocks=400, prefetch_depth=depth, link_bandwidth_gbps=50.0)
    assert toks == refs
    assert llm.engine.metrics.iterations_df()["prefetch_depth"].eq(depth).all()


def test_opt_350m_shape_equals_transformers_with_every_block_on_the_host():
    from pie_lab.model_spec import NAMED_SHAPES, ModelSpec
    spec = ModelSpec.from_hf_config(dict(NAMED_SHAPES["opt-tiny"], word_embed_proj_dim=32, do_layer_norm_before=False),
                                    name="opt-350m-tiny")
    hf = build_hf_model(spec, seed=0)
    assert hf.model.decoder.project_in is not None and hf.model.decoder.final_layer_norm is None
    ps = prompts()
    refs = [hf.generate(torch.tensor([p]), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                        do_sample=False)[0, len(p):].tolist() for p in ps]
    toks, llm = generate(spec, ps, policy="pie", swap_budget_blocks=2000, num_host_blocks=2000, offload="eager",
                         num_gpu_blocks=400, prefetch_depth=2, link_bandwidth_gbps=50.0)
    assert toks == refs
    assert llm.engine.metrics.iterations_df()["streamed_blocks"].max() > 0


def test_string_prompt_needs_tokenizer():
    llm = LLM("opt-tiny", "cpu")
    with pytest.raises(ConfigError, match="tokenizer"):
        llm.generate("hello")


def test_unknown_model_and_architecture_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown model name 'opt-99b'"):
        LLM("opt-99b", "cpu")
    from transformers import GPT2Config
    GPT2Config(n_layer=1, n_embd=16, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="gpt2.*supported: opt, llama"):
        LLM(str(tmp_path), "cpu")


def test_prompt_longer_than_context_window():
    llm = LLM("opt-tiny", "cpu", max_model_len=64)
    with pytest.raises(ConfigError, match="at most 63 tokens"):
        llm.generate([[5] * 100])


def test_string_prompts_with_a_checkpoint_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    words = ["<pad>", "<unk>", "</s>"] + [f"w{i}" for i in range(509)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")
    build_hf_model("opt-tiny", seed=0).save_pretrained(tmp_path)
    fast.save_pretrained(tmp_path)
    llm = LLM(str(tmp_path), "cpu", block_size=4, num_gpu_blocks=64)
    by_text, by_ids = llm.generate(["w2 w3 w4", [5, 6, 7]], SamplingParams(max_tokens=8, ignore_eos=True))
    assert by_text.prompt_token_ids == [5, 6, 7] and by_text.token_ids == by_ids.token_ids
    assert by_text.text == " ".join(words[t] for t in by_text.token_ids if t > 2)
