"""Triton paged decode attention: one query token per sequence, K/V read block by block from the
pool (entries >= 0) or the staging slot (entries < 0, position ~v).

triton is imported lazily: this module imports fine without it, and `available()` says whether
the kernel can run here. One program per (sequence, query head); online softmax in float32.
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor


@functools.cache
def available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:
        return False
    return True


@functools.cache
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def decode_kernel(q_ptr, pool_ptr, stage_ptr, tables_ptr, ctx_ptr, out_ptr, scale,
                      stride_qt, stride_qh,
                      stride_pg, stride_pkv, stride_ps, stride_ph,
                      stride_sg, stride_skv, stride_ss, stride_sh,
                      stride_tb, stride_ot, stride_oh,
                      GROUP: tl.constexpr, BLOCK: tl.constexpr, BLOCK_PAD: tl.constexpr,
                      HEAD_DIM: tl.constexpr, HD_PAD: tl.constexpr):
        seq = tl.program_id(0)
        head = tl.program_id(1)
        kv_head = head // GROUP
        ctx = tl.load(ctx_ptr + seq)
        d = tl.arange(0, HD_PAD)
        s = tl.arange(0, BLOCK_PAD)
        d_ok = d < HEAD_DIM
        q = tl.load(q_ptr + seq * stride_qt + head * stride_qh + d, mask=d_ok, other=0.0).to(tl.float32)

        m_i = -float("inf")
        l_i = 0.0
        acc = tl.zeros([HD_PAD], dtype=tl.float32)
        num_blocks = (ctx + BLOCK - 1) // BLOCK
        for j in range(0, num_blocks):
            entry = tl.load(tables_ptr + seq * stride_tb + j).to(tl.int64)
            in_pool = entry >= 0
            pos_ok = (s < BLOCK) & (j * BLOCK + s < ctx)                     # [BLOCK_PAD]
            tile_ok = pos_ok[:, None] & d_ok[None, :]                          # [BLOCK_PAD, HD_PAD]
            p_off = entry * stride_pg + kv_head * stride_ph + s[:, None] * stride_ps + d[None, :]
            s_off = (-1 - entry) * stride_sg + kv_head * stride_sh + s[:, None] * stride_ss + d[None, :]
            k_ptrs = tl.where(in_pool, pool_ptr + p_off, stage_ptr + s_off)   # [BLOCK_PAD, HD_PAD]
            v_ptrs = tl.where(in_pool, pool_ptr + p_off + stride_pkv, stage_ptr + s_off + stride_skv)
            k = tl.load(k_ptrs, mask=tile_ok, other=0.0).to(tl.float32)
            v = tl.load(v_ptrs, mask=tile_ok, other=0.0).to(tl.float32)

            scores = tl.sum(k * q[None, :], axis=1) * scale                   # [BLOCK_PAD]
            scores = tl.where(pos_ok, scores, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(scores, axis=0))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(scores - m_new)
            l_i = l_i * alpha + tl.sum(p, axis=0)
            acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
            m_i = m_new

        out = acc / l_i
        tl.store(out_ptr + seq * stride_ot + head * stride_oh + d, out.to(out_ptr.dtype.element_ty), mask=d_ok)

    return decode_kernel


def _pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def decode_attention(q: Tensor, kv_layer: Tensor, staged: Tensor | None, block_tables: Tensor,
                     context_lens: Tensor, scale: float) -> Tensor:
    """q: [B, nh, hd]; kv_layer: [G, 2, bs, kvh, hd]; staged: [S, 2, bs, kvh, hd] or None;
    block_tables: [B, max_blocks]; context_lens: [B] -> [B, nh, hd]."""
    B, nh, hd = q.shape
    bs, kvh = kv_layer.shape[2], kv_layer.shape[3]
    q = q.contiguous()
    stage = staged if staged is not None and staged.shape[0] > 0 else kv_layer
    if kv_layer.stride(-1) != 1 or stage.stride(-1) != 1:
        raise ValueError("decode_attention needs K/V tensors with a contiguous head_dim")
    out = torch.empty_like(q)
    _kernel()[(B, nh)](
        q, kv_layer, stage, block_tables, context_lens, out, float(scale),
        q.stride(0), q.stride(1),
        *kv_layer.stride()[:4], *stage.stride()[:4],
        block_tables.stride(0), out.stride(0), out.stride(1),
        GROUP=nh // kvh, BLOCK=bs, BLOCK_PAD=_pow2(bs), HEAD_DIM=hd, HD_PAD=_pow2(hd),
    )
    return out
