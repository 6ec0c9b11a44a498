"""Our paged forward against transformers on the same weights (float32, CPU)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from pie_lab.core.plan import SeqWork, StepPlan
from pie_lab.errors import ConfigError
from pie_lab.model import triton_attention
from pie_lab.model.batch import build_forward_batch
from pie_lab.model.loader import build_hf_model, load_model
from pie_lab.model_spec import NAMED_SHAPES, ModelSpec, spec_from_model
from pie_lab.sampling import SamplingParams

BS = 4
MAX_NEW = 32
PROMPT_LENS = [1, 3, 4, 5, 7, 9, 12, 17]


def _variant(base: str, name: str, **changes) -> ModelSpec:
    d = dict(NAMED_SHAPES[base], **changes)
    return ModelSpec.from_hf_config(d, name=name)


SPECS = {
    "opt-tiny": "opt-tiny",
    "llama-tiny": "llama-tiny",
    "qwen2-tiny": "qwen2-tiny",
    "llama3-rope-tiny": _variant("llama-tiny", "llama3-rope-tiny", rope_theta=500000.0, rope_scaling=dict(
        rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=64)),
    "mistral-tiny": _variant("llama-tiny", "mistral-tiny", model_type="mistral", sliding_window=8),
    # opt-350m's shape: a narrower word embedding (project_in / project_out) and post-layer-norm
    "opt-350m-tiny": _variant("opt-tiny", "opt-350m-tiny", word_embed_proj_dim=32, do_layer_norm_before=False),
}


@pytest.fixture(scope="module", params=list(SPECS))
def models(request):
    torch.manual_seed(0)
    spec = SPECS[request.param]
    hf = build_hf_model(spec, seed=1)
    with torch.no_grad():      # norms and biases off their 1/0 init, so their loading is tested
        for name, p in hf.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    ours, _ = load_model(hf)
    return ours, hf


def _prompts(vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(123)
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in PROMPT_LENS]


def paged_generate(model, prompts, max_new=MAX_NEW, chunk=5, stage=False):
    """A toy scheduler: staggered admission (sequence i joins at step 2i), chunked prefill mixed with decodes, greedy sampling.

    stage=True moves every other finished block of each sequence into a staging tensor for the step
    (zeroed in the pool). Returns generated tokens per prompt, the logits of every step, the full
    token lists, and each sequence's sampled logits rows."""
    s = model.spec
    per_seq = math.ceil((max(map(len, prompts)) + max_new) / BS)
    pool = torch.zeros(s.num_layers, per_seq * len(prompts), 2, BS, s.num_kv_heads, s.head_dim)
    tokens = [list(p) for p in prompts]
    done = [0] * len(prompts)
    out: list[list[int]] = [[] for _ in prompts]
    all_logits = []
    rows: list[list[torch.Tensor]] = [[] for _ in prompts]
    step = 0
    while any(len(o) < max_new for o in out):
        works, moved = [], []
        for i in range(min(len(prompts), step // 2 + 1)):
            if len(out[i]) == max_new:
                continue
            feed = tokens[i][done[i]:done[i] + chunk]
            table = list(range(i * per_seq, (i + 1) * per_seq))
            if stage:
                for j in range(0, done[i] // BS, 2):
                    table[j] = ~len(moved)
                    moved.append(i * per_seq + j)
            works.append(SeqWork(i, tuple(feed), done[i], tuple(table), done[i] + len(feed) == len(tokens[i]),
                                 SamplingParams(), len(out[i])))
        step += 1
        if not works:
            continue
        batch = build_forward_batch(StepPlan(step, tuple(works)), BS, "cpu")
        staged = pool[:, moved].clone() if moved else None      # [L, S, 2, bs, kvh, hd]
        pool[:, moved] = 0
        with torch.inference_mode():
            hidden = model.embed(batch)
            for l in range(s.num_layers):
                hidden = model.layer(l, hidden, batch, pool[l], None if staged is None else staged[l])
            logits = model.compute_logits(hidden, batch)
        if moved:
            pool[:, moved] = staged
        all_logits.append(logits)
        sampled = [w for w in works if w.sample]
        for w, t in zip(sampled, logits.argmax(-1).tolist()):
            tokens[w.seq_id].append(t)
            out[w.seq_id].append(t)
        for w, row in zip(sampled, logits):
            rows[w.seq_id].append(row)
        for w in works:
            done[w.seq_id] += len(w.token_ids)
    return out, all_logits, tokens, rows


@torch.inference_mode()
def test_greedy_matches_hf_generate(models):
    ours, hf = models
    prompts = _prompts(ours.spec.vocab_size)
    out, _, _, _ = paged_generate(ours, prompts)
    for p, o in zip(prompts, out):
        ref = hf.generate(torch.tensor([p]), max_new_tokens=MAX_NEW, do_sample=False, min_new_tokens=0)
        assert ref[0, len(p):].tolist() == o


@torch.inference_mode()
def test_logits_match_hf(models):
    ours, hf = models
    prompts = _prompts(ours.spec.vocab_size)
    _, _, tokens, rows = paged_generate(ours, prompts, max_new=6)
    for p, t, seq_rows in zip(prompts, tokens, rows):
        ref = hf(torch.tensor([t])).logits[0].float()           # [len, V]
        for k, mine in enumerate(seq_rows):
            torch.testing.assert_close(mine, ref[len(p) - 1 + k], atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_staged_blocks_are_bit_identical(models):
    ours, _ = models
    prompts = _prompts(ours.spec.vocab_size)
    out_a, logits_a, _, _ = paged_generate(ours, prompts, max_new=12)
    out_b, logits_b, _, _ = paged_generate(ours, prompts, max_new=12, stage=True)
    assert out_a == out_b
    assert all(torch.equal(a, b) for a, b in zip(logits_a, logits_b))


@pytest.mark.parametrize("name", ["opt-tiny", "qwen2-tiny", "llama-tiny"])
def test_load_from_save_pretrained_folder(tmp_path, name):
    hf = build_hf_model(name, seed=3)
    hf.save_pretrained(tmp_path)
    assert spec_from_model(str(tmp_path)).arch == NAMED_SHAPES[name]["model_type"]
    ours, tok = load_model(str(tmp_path))
    assert tok is None
    prompts = _prompts(ours.spec.vocab_size)[:3]
    _, _, _, rows = paged_generate(ours, prompts, max_new=1, chunk=64)
    with torch.inference_mode():
        for i, p in enumerate(prompts):
            ref = hf(torch.tensor([p])).logits[0, -1]
            torch.testing.assert_close(rows[i][0], ref, atol=1e-4, rtol=1e-4)


def test_hf_model_weights_are_shared_not_copied():
    hf = build_hf_model("llama-tiny")
    ours, _ = load_model(hf)
    assert ours.model.embed_tokens.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()


def test_named_shape_is_reproducible():
    a, _ = load_model("qwen2-tiny", seed=5)
    b, _ = load_model("qwen2-tiny", seed=5)
    c, _ = load_model("qwen2-tiny", seed=6)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)
    assert a.lm_head.weight is a.model.embed_tokens.weight     # tied


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(dict(model_type="gpt2", n_layer=2, n_embd=64)))
    with pytest.raises(ConfigError, match="gpt2.*supported: opt, llama"):
        load_model(str(tmp_path))
    with pytest.raises(ConfigError, match="opt-tiny"):
        load_model("gpt2")
    with pytest.raises(ConfigError, match="dtype"):
        load_model("opt-tiny", dtype="float64")


@pytest.mark.skipif(not triton_attention.available(), reason="needs CUDA and triton")
def test_triton_decode_matches_torch():
    from pie_lab.model.attention import _decode_attention
    torch.manual_seed(0)
    G, bs, kvh, hd, nh, B = 40, 16, 2, 64, 8, 5
    pool = torch.randn(G, 2, bs, kvh, hd, device="cuda")
    staged = torch.randn(6, 2, bs, kvh, hd, device="cuda")
    ctx = torch.tensor([1, 17, 40, 64, 33], device="cuda")
    tables = torch.randint(0, G, (B, 4), device="cuda")
    tables[1, 0], tables[3, 2], tables[4, 1] = ~0, ~5, ~3
    q = torch.randn(B, nh, hd, device="cuda")
    ref = _decode_attention(q, pool, staged, tables, ctx, int(ctx.max()), 0.125, None)
    got = triton_attention.decode_attention(q, pool, staged, tables, ctx, 0.125)
    torch.testing.assert_close(got, ref, atol=2e-3, rtol=2e-3)
