"""pie_lab's CPU kernels (model/cpu_kernels.py) against the plain torch code they replace: RoPE and the
K/V write bit-identical, attention / RMSNorm / silu within float rounding, bad tables refused, and an
engine's greedy tokens the same with the kernels on and off, swapping or not."""
import pytest
import torch
import torch.nn.functional as F

from pie_lab import LLM, SamplingParams
from pie_lab.model import cpu_kernels
from pie_lab.model.attention import _decode_attention, write_kv
from pie_lab.model.llama import RMSNorm, apply_rope

pytestmark = pytest.mark.skipif(cpu_kernels.why_unavailable() is not None,
                                reason=f"CPU kernels cannot be built here: {cpu_kernels.why_unavailable()}")


@pytest.fixture(scope="module", autouse=True)
def built():
    assert cpu_kernels.load(), cpu_kernels.status()       # a compiler is here: the build must work


def pool_and_tables(dtype, G=40, bs=16, kvh=3, hd=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    pool = torch.randn(G, 2, bs, kvh, hd, generator=g).to(dtype)
    staged = torch.randn(4, 2, bs, kvh, hd, generator=g).to(dtype)
    ctx = torch.tensor([1, 5, 16, 17, 40, 64, 33])
    tables = torch.randint(0, G, (7, 4), generator=g)
    tables[2, 0], tables[5, 3], tables[6, 2] = ~1, ~3, ~0           # staged blocks read in place too
    return pool, staged, tables, ctx


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 2e-6), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("nh, kvh, hd", [(9, 3, 64), (8, 2, 128), (8, 1, 64), (4, 4, 64),
                                      (4, 4, 32), (6, 2, 40)])    # register-blocked paths, then the general loop
@pytest.mark.parametrize("window", [None, 7])
def test_decode_attention_equals_gather_and_sdpa(dtype, tol, nh, kvh, hd, window):
    pool, staged, tables, ctx = pool_and_tables(dtype, kvh=kvh, hd=hd)
    q = torch.randn(len(ctx), nh, hd).to(dtype)
    ref = _decode_attention(q, pool, staged, tables, ctx, int(ctx.max()), hd ** -0.5, window)
    got = cpu_kernels.paged_decode_attention(q, pool, staged, tables, ctx, hd ** -0.5, window)
    assert got.dtype == dtype and got.shape == ref.shape
    torch.testing.assert_close(got.float(), ref.float(), rtol=tol, atol=tol)


def test_decode_attention_without_staged_blocks():
    pool, _, tables, ctx = pool_and_tables(torch.float32)
    tables = tables.clamp(min=0)
    q = torch.randn(len(ctx), 9, 64)
    ref = _decode_attention(q, pool, None, tables, ctx, int(ctx.max()), 0.125, None)
    torch.testing.assert_close(cpu_kernels.paged_decode_attention(q, pool, None, tables, ctx, 0.125, None), ref,
                               rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_and_kv_write_are_bit_identical(dtype):
    nh, kvh, hd, T = 9, 3, 64, 6
    pool, _, _, _ = pool_and_tables(dtype)
    qkv = torch.randn(T, (nh + 2 * kvh) * hd).to(dtype)
    cos, sin = torch.randn(T, 1, hd // 2).to(dtype), torch.randn(T, 1, hd // 2).to(dtype)
    slots = torch.tensor([3, 100, 17, 639, 250, 16])
    ref_pool, got_pool = pool.clone(), pool.clone()
    q, k, v = qkv.split([nh * hd, kvh * hd, kvh * hd], -1)
    ref_q = apply_rope(q.view(T, nh, hd), cos, sin)
    write_kv(ref_pool, apply_rope(k.view(T, kvh, hd), cos, sin), v.view(T, kvh, hd), slots)
    got_q = cpu_kernels.rope_write_kv(qkv, nh, kvh, cos, sin, got_pool, slots)
    assert torch.equal(got_q, ref_q) and torch.equal(got_pool, ref_pool)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.bfloat16, 1e-2)])
def test_rms_norm_and_silu_mul(dtype, tol):
    norm = RMSNorm(576, 1e-5).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(576))
    x, gu = torch.randn(11, 576).to(dtype), (4 * torch.randn(11, 2 * 100)).to(dtype)
    with cpu_kernels.disabled():
        ref = norm(x)
    torch.testing.assert_close(cpu_kernels.rms_norm(x, norm.weight.detach(), 1e-5).float(), ref.float(),
                               rtol=tol, atol=tol)
    gate, up = gu.chunk(2, -1)
    torch.testing.assert_close(cpu_kernels.silu_mul(gu).float(), (F.silu(gate) * up).float(), rtol=tol, atol=tol)


def test_bad_tables_and_slots_are_refused_with_the_value():
    pool, staged, tables, ctx = pool_and_tables(torch.float32)
    q = torch.randn(len(ctx), 9, 64)
    bad = tables.clone()
    bad[4, 1] = 40                                                    # pool has 40 blocks: 0..39
    with pytest.raises(RuntimeError, match=r"tables\[4, 1\]=40 reads outside pool \[0, 40\)"):
        cpu_kernels.paged_decode_attention(q, pool, staged, bad, ctx, 0.125, None)
    with pytest.raises(RuntimeError, match=r"context_lens\[0\]=65 is outside \[0, 64\]"):
        cpu_kernels.paged_decode_attention(q, pool, staged, tables, ctx.clone().fill_(65), 0.125, None)
    qkv = torch.randn(1, 15 * 64)
    with pytest.raises(RuntimeError, match=r"slot 640 of token 0 is outside \[0, 640\)"):
        cpu_kernels.rope_write_kv(qkv, 9, 3, torch.ones(1, 32), torch.ones(1, 32), pool, torch.tensor([640]))


def test_disabled_switches_the_model_back_to_torch():
    x = torch.randn(3, 8)
    assert cpu_kernels.active(x, "attention") and not cpu_kernels.active(x.double(), "attention")
    with cpu_kernels.disabled():
        assert not any(cpu_kernels.active(x, op) for op in cpu_kernels.OPS)
    with cpu_kernels.disabled("rms_norm"):
        assert cpu_kernels.active(x, "attention") and not cpu_kernels.active(x, "rms_norm")
        assert cpu_kernels.status() == "on, except rms_norm"
    assert cpu_kernels.status() == "on"
    with pytest.raises(ValueError, match="unknown kernel op.*'rope'.*allowed: attention"):
        with cpu_kernels.disabled("rope"):
            pass


@pytest.mark.parametrize("policy, options", [("none", {}),
                                             ("pie", dict(num_gpu_blocks=40, num_host_blocks=200,
                                                          swap_budget_blocks=60, prefetch_depth=2))])
def test_engine_tokens_equal_with_kernels_on_and_off(policy, options):
    prompts = [[(7 * i + 3 * j) % 400 + 3 for j in range(5 + 3 * i)] for i in range(8)]
    runs = []
    for on in (True, False):
        llm = LLM("llama-tiny", "cpu", policy=policy, block_size=4, max_num_seqs=8, **options)
        sp = SamplingParams(max_tokens=24, ignore_eos=True)
        if on:
            outs = llm.generate(prompts, sp)
        else:
            with cpu_kernels.disabled():
                outs = llm.generate(prompts, sp)
        runs.append([o.token_ids for o in outs])
        llm.close()
    assert runs[0] == runs[1]
