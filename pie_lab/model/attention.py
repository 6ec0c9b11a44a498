"""Paged attention in plain torch (CPU and GPU), with the Triton decode kernel used on CUDA.

K/V of a layer live in `kv_layer` [G, 2, bs, kvh, hd] (K at 0, V at 1) and, for host-resident
blocks streamed in this step, in `staged` [S, 2, bs, kvh, hd]. A block-table entry v >= 0 reads
pool block v, v < 0 reads staged position ~v. Both sources give bit-identical results: the gather
only changes where the bytes come from.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import triton_attention
from .batch import ForwardBatch


def write_kv(kv_layer: Tensor, k: Tensor, v: Tensor, slot_mapping: Tensor) -> None:
    """k, v: [T, kvh, hd] go to pool slots `slot_mapping` [T]."""
    bs = kv_layer.shape[2]
    block, offset = slot_mapping // bs, slot_mapping % bs
    kv_layer[block, 0, offset] = k.to(kv_layer.dtype)
    kv_layer[block, 1, offset] = v.to(kv_layer.dtype)


def gather_blocks(kv_layer: Tensor, staged: Tensor | None, tables: Tensor) -> Tensor:
    """tables: [..., nb] -> [..., nb, *block] read from the pool or the staging slot.

    kv_layer/staged may be views of one half (K or V) of the cache: [G, bs, kvh, hd].
    """
    if staged is None or staged.shape[0] == 0:
        return kv_layer[tables]
    host = tables < 0
    out = kv_layer[tables.clamp(min=0)]
    out[host] = staged[~tables[host]]
    return out


def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float) -> Tensor:
    """q: [B, Lq, nh, hd]; k, v: [B, S, kvh, hd]; mask: [B, Lq, S] (True = attend) -> [B, Lq, nh, hd].

    GQA without repeating K/V: the g query heads sharing a kv head become g*Lq query rows of it.
    """
    B, Lq, nh, hd = q.shape
    kvh = k.shape[2]
    g = nh // kvh
    qg = q.view(B, Lq, kvh, g, hd).permute(0, 2, 1, 3, 4).reshape(B, kvh, Lq * g, hd)
    m = mask[:, None, :, None, :].expand(B, 1, Lq, g, mask.shape[-1]).reshape(B, 1, Lq * g, -1)
    o = F.scaled_dot_product_attention(qg, k.transpose(1, 2), v.transpose(1, 2), attn_mask=m, scale=scale)
    return o.view(B, kvh, Lq, g, hd).permute(0, 2, 1, 3, 4).reshape(B, Lq, nh, hd)


def _mask(q_pos: Tensor, num_keys: int, window: int | None) -> Tensor:
    """q_pos: [B, Lq] -> [B, Lq, S]: causal, and within the sliding window when there is one."""
    k_pos = torch.arange(num_keys, device=q_pos.device)
    mask = k_pos <= q_pos[..., None]
    if window is not None:
        mask &= k_pos > q_pos[..., None] - window
    return mask


def _dense_kv(kv_layer: Tensor, staged: Tensor | None, tables: Tensor) -> tuple[Tensor, Tensor]:
    """tables: [B, nb] -> k, v: [B, nb*bs, kvh, hd], gathered straight from the K and V halves."""
    B, nb = tables.shape
    _, _, bs, kvh, hd = kv_layer.shape
    halves = []
    for i in (0, 1):
        part = gather_blocks(kv_layer[:, i], None if staged is None else staged[:, i], tables)
        halves.append(part.view(B, nb * bs, kvh, hd))      # [B, nb, bs, kvh, hd] is contiguous
    return halves[0], halves[1]


def _decode_attention(q: Tensor, kv_layer: Tensor, staged: Tensor | None, tables: Tensor,
                      context_lens: Tensor, max_context: int, scale: float, window: int | None) -> Tensor:
    """One query token per sequence. q: [B, nh, hd]; tables: [B, max_blocks] -> [B, nh, hd]."""
    bs = kv_layer.shape[2]
    nb = -(-max_context // bs)
    k, v = _dense_kv(kv_layer, staged, tables[:, :nb])
    q_pos = (context_lens - 1)[:, None]                  # [B, 1]
    mask = _mask(q_pos, nb * bs, window)                 # [B, 1, S]
    return _attend(q[:, None], k, v, mask, scale)[:, 0]


def paged_attention(q: Tensor, kv_layer: Tensor, staged: Tensor | None, batch: ForwardBatch,
                    scale: float, window: int | None = None) -> Tensor:
    """q: [T, nh, hd] -> [T, nh, hd]. This step's K/V must already be written (write_kv).

    A query token at position p attends to context positions <= p (and > p - window).
    """
    if batch.decode_only:
        if q.is_cuda and triton_attention.available() and (window is None or batch.max_context_len <= window):
            return triton_attention.decode_attention(q, kv_layer, staged, batch.block_tables,
                                                     batch.context_lens, scale)
        return _decode_attention(q, kv_layer, staged, batch.block_tables, batch.context_lens,
                                 batch.max_context_len, scale, window)

    out = torch.empty_like(q)
    if batch.decode_seqs:
        max_ctx = max(batch.context_lens_list[i] for i in batch.decode_seqs)
        out[batch.decode_token_idx] = _decode_attention(
            q[batch.decode_token_idx], kv_layer, staged, batch.block_tables[batch.decode_seq_idx],
            batch.context_lens[batch.decode_seq_idx], max_ctx, scale, window)
    bs = kv_layer.shape[2]
    start = 0
    decode = set(batch.decode_seqs)
    for i, (n, ctx) in enumerate(zip(batch.query_lens, batch.context_lens_list)):
        if i not in decode:
            nb = -(-ctx // bs)
            k, v = _dense_kv(kv_layer, staged, batch.block_tables[i:i + 1, :nb])   # [1, S, kvh, hd]
            q_pos = torch.arange(ctx - n, ctx, device=q.device)[None]             # [1, n]
            out[start:start + n] = _attend(q[None, start:start + n], k, v,
                                           _mask(q_pos, nb * bs, window), scale)[0]
        start += n
    return out
