"""Policy hybrid's attention split: host partial + device partial, merged by log-sum-exp, equals
attention over all keys (float64 dense reference, 1e-6), for random splits, GQA and windows."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from pie_lab.model.attention import (attention_partial, device_decode_partial, host_block_tables,
                                     host_decode_partial, merge_partials)


def dense(q, k, v, mask, scale):
    """float64 softmax attention: q [B, nh, hd], k/v [B, S, kvh, hd], mask [B, S]."""
    B, nh, hd = q.shape
    g = nh // k.shape[2]
    k, v = k.double().repeat_interleave(g, 2), v.double().repeat_interleave(g, 2)    # [B, S, nh, hd]
    s = torch.einsum("bhd,bshd->bhs", q.double(), k) * scale
    s = s.masked_fill(~mask[:, None, :], -math.inf)
    return torch.einsum("bhs,bshd->bhd", torch.softmax(s, -1), v)


def test_merge_of_two_disjoint_partials_is_the_full_attention():
    g = torch.Generator().manual_seed(0)
    B, S, nh, kvh, hd = 3, 40, 8, 2, 16
    q, k, v = (torch.randn(*shape, generator=g) for shape in ((B, nh, hd), (B, S, kvh, hd), (B, S, kvh, hd)))
    cut = torch.tensor([0, 17, 40])[:, None]                 # host side empty, split, device side empty
    pos = torch.arange(S)
    o1, l1 = attention_partial(q, k, v, pos < cut, 0.3)
    o2, l2 = attention_partial(q, k, v, pos >= cut, 0.3)
    out, lse = merge_partials(o1, l1, o2, l2)
    ref = dense(q, k, v, torch.ones(B, S, dtype=torch.bool), 0.3)
    assert (out.double() - ref).abs().max() < 1e-6
    full_o, full_lse = attention_partial(q, k, v, torch.ones(B, S, dtype=torch.bool), 0.3)
    assert (lse - full_lse).abs().max() < 1e-5
    assert torch.isinf(l1[0]).all() and torch.isinf(l2[2]).all()   # a side with no keys has lse = -inf


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), bs=st.sampled_from([1, 4, 16]), kvh=st.sampled_from([1, 2, 4]),
       g=st.sampled_from([1, 2]), window=st.sampled_from([None, 5, 37]), data=st.data())
def test_random_splits_over_paged_pools_equal_the_dense_reference(seed, bs, kvh, g, window, data):
    gen = torch.Generator().manual_seed(seed)
    B, hd = data.draw(st.integers(1, 5)), 8
    nh = kvh * g
    ctx = [data.draw(st.integers(1, 60)) for _ in range(B)]
    # host blocks: full blocks only, a prefix of each table; the current token is on the device
    split = [data.draw(st.integers(0, (c - 1) // bs)) for c in ctx]
    nb = [-(-c // bs) for c in ctx]
    G, H = sum(nb) + 1, sum(split) + 1
    pool = torch.randn(G, 2, bs, kvh, hd, generator=gen)
    host = torch.randn(H, 2, bs, kvh, hd, generator=gen)
    gpu_ids = torch.randperm(G - 1, generator=gen).add(1).tolist()
    host_ids = torch.randperm(H, generator=gen).tolist()
    tables, host_tables = [], []
    for c, n, s in zip(ctx, nb, split):
        hs, host_ids = host_ids[:s], host_ids[s:]
        gs, gpu_ids = gpu_ids[:n - s], gpu_ids[n - s:]
        host_tables.append(hs)
        tables.append([~h for h in hs] + gs)
    width = max(nb)
    table_t = torch.tensor([t + [0] * (width - len(t)) for t in tables])
    q = torch.randn(B, nh, hd, generator=gen)
    ctx_t = torch.tensor(ctx)
    scale = hd ** -0.5

    ids, counts = host_block_tables(host_tables)
    h_o, h_l = host_decode_partial(q, host, ids, counts, ctx_t - 1, scale, window)
    d_o, d_l = device_decode_partial(q, pool, None, table_t, ctx_t, counts * bs, max(ctx), scale, window)
    out, _ = merge_partials(d_o, d_l, h_o, h_l)

    for b in range(B):                                       # dense K/V in position order
        blocks = [host[~e] if e < 0 else pool[e] for e in tables[b]]
        kv = torch.stack(blocks).view(-1, 2, bs, kvh, hd).transpose(0, 1).reshape(2, -1, kvh, hd)[:, :ctx[b]]
        pos = torch.arange(ctx[b])
        mask = (pos <= ctx[b] - 1) & ((pos > ctx[b] - 1 - window) if window else True)
        ref = dense(q[b:b + 1], kv[0][None], kv[1][None], mask[None], scale)
        assert (out[b:b + 1].double() - ref).abs().max() < 1e-6, (b, ctx[b], split[b])


def test_half_precision_partials_merge_in_float32():
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 4, 8, generator=gen).half()
    k, v = torch.randn(2, 10, 4, 8, generator=gen).half(), torch.randn(2, 10, 4, 8, generator=gen).half()
    o, lse = attention_partial(q, k, v, torch.ones(2, 10, dtype=torch.bool), 0.35)
    assert o.dtype == torch.float16 and lse.dtype == torch.float32
    ref = dense(q, k, v, torch.ones(2, 10, dtype=torch.bool), 0.35)
    assert (o.double() - ref).abs().max() < 2e-3            # fp16 output rounding only


@pytest.mark.parametrize("mixed", [False, True])
def test_device_attends_only_the_rows_it_is_given(monkeypatch, mixed):
    """paged_attention with a subset of decode rows (hybrid's sub-batch D) computes exactly those
    rows and every prefill row, each equal to the full computation (to 1e-6: a batch padded to
    another length may sum in another order), and attends no other row."""
    from pie_lab import SamplingParams
    from pie_lab.core.plan import SeqWork, StepPlan
    from pie_lab.model import attention
    from pie_lab.model.batch import build_forward_batch
    gen = torch.Generator().manual_seed(3)
    bs, kvh, hd, nh = 4, 2, 8, 4
    pool = torch.randn(40, 2, bs, kvh, hd, generator=gen)
    works = [SeqWork(i, (5,), 9 + i, tuple(range(4 * i, 4 * i + 4)), True, SamplingParams(), 1) for i in range(4)]
    if mixed:                                               # a prefill chunk of 3 tokens after 5 cached
        works.insert(1, SeqWork(9, (5, 6, 7), 5, (30, 31), True, SamplingParams(), 0))
    batch = build_forward_batch(StepPlan(0, tuple(works)), bs, "cpu")
    q = torch.randn(batch.num_tokens, nh, hd, generator=gen)
    full = attention.paged_attention(q, pool, None, batch, 0.3)
    keep = [i for i in batch.decode_seqs if works[i].seq_id in (0, 2)]
    rows = [int(batch.query_start_loc[i]) for i in keep]
    seen = []
    real = attention._decode_rows
    monkeypatch.setattr(attention, "_decode_rows", lambda q_, *a: seen.append(q_.shape[0]) or real(q_, *a))
    sub = attention.DecodeRows(torch.tensor(keep), torch.tensor(rows), keep)
    part = attention.paged_attention(q, pool, None, batch, 0.3, decode=sub)
    assert seen == [len(keep)]
    assert (part[rows] - full[rows]).abs().max() < 1e-6
    if mixed:
        assert torch.equal(part[1:4], full[1:4])            # the prefill rows: computed alike
