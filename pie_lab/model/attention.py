"""Paged attention in plain torch (CPU and GPU), with the Triton decode kernel used on CUDA.

K/V of a layer live in `kv_layer` [G, 2, bs, kvh, hd] (K at 0, V at 1) and, for host-resident
blocks streamed in this step, in `staged` [S, 2, bs, kvh, hd]. A block-table entry v >= 0 reads
pool block v, v < 0 reads staged position ~v. Both sources give bit-identical results: the gather
only changes where the bytes come from. The table's split by source is computed once per step
(`TableSplit`, kept in the batch's `table_splits`) and reused by every layer and both halves.

Policy hybrid splits a decode query's keys in two: the leading host-computed blocks, attended on
the host over host memory (`attention_partial` on the host pool), and the rest, attended on the
device (`device_decode_partial`). Each partial returns its output and log-sum-exp; `merge_partials`
combines them exactly: softmax over the union of keys = the LSE-weighted sum of the two partials.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from . import cpu_kernels, triton_attention
from .batch import ForwardBatch


def write_kv(kv_layer: Tensor, k: Tensor, v: Tensor, slot_mapping: Tensor) -> None:
    """k, v: [T, kvh, hd] go to pool slots `slot_mapping` [T]."""
    bs = kv_layer.shape[2]
    block, offset = slot_mapping // bs, slot_mapping % bs
    kv_layer[block, 0, offset] = k.to(kv_layer.dtype)
    kv_layer[block, 1, offset] = v.to(kv_layer.dtype)


def gather_blocks(half: Tensor, tables: Tensor) -> Tensor:
    """half [G, bs, kvh, hd] (a K or V half of the pool), tables [B, nb] -> [B, nb, bs, kvh, hd].
    index_select of whole blocks: same bytes as half[tables], at a third of its cost on CPU."""
    return half.index_select(0, tables.reshape(-1)).view(*tables.shape, *half.shape[1:])


@dataclass(frozen=True)
class TableSplit:
    """A block table [B, nb] split by source, once per step (every layer reads the same table):
    `pool` [B, nb] with staged entries reading pool block 0, and the staged entries' flat
    positions `pos` [n] in [B * nb] and staging ids `staged_ids` [n]."""

    pool: Tensor
    pos: Tensor
    staged_ids: Tensor

    @classmethod
    def of(cls, tables: Tensor) -> "TableSplit":
        flat = tables.reshape(-1)
        pos = (flat < 0).nonzero().squeeze(1)
        return cls(tables.clamp(min=0), pos, ~flat[pos])

    def gather(self, kv_layer: Tensor, staged: Tensor) -> list[Tensor]:
        """kv_layer [G, 2, bs, kvh, hd], staged [S, 2, bs, kvh, hd] -> K and V, each [B, nb, bs, kvh, hd]."""
        rows = staged.index_select(0, self.staged_ids) if self.pos.numel() else None     # [n, 2, bs, kvh, hd]
        halves = []
        for i in (0, 1):
            half = gather_blocks(kv_layer[:, i], self.pool)
            if rows is not None:
                half.view(-1, *half.shape[2:]).index_copy_(0, self.pos, rows[:, i])
            halves.append(half)
        return halves


def _split(tables: Tensor, memo: tuple[dict, object] | None) -> TableSplit:
    """TableSplit.of(tables), kept in memo = (the batch's cache, a key naming these rows) when given."""
    if memo is None:
        return TableSplit.of(tables)
    cache, key = memo
    split = cache.get(key)
    if split is None:
        split = cache[key] = TableSplit.of(tables)
    return split


def _group_mask(mask: Tensor, g: int) -> Tensor:
    """mask [B, Lq, S] -> [B, 1, Lq*g, S], one row per query row of a kv head (see _attend)."""
    B, Lq, S = mask.shape
    return mask[:, None, :, None, :].expand(B, 1, Lq, g, S).reshape(B, 1, Lq * g, S)


def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float, grouped: bool = False) -> Tensor:
    """q: [B, Lq, nh, hd]; k, v: [B, S, kvh, hd]; mask: [B, Lq, S] (True = attend), or already
    _group_mask'ed when `grouped` -> [B, Lq, nh, hd].

    GQA without repeating K/V: the g query heads sharing a kv head become g*Lq query rows of it.
    """
    B, Lq, nh, hd = q.shape
    kvh = k.shape[2]
    g = nh // kvh
    qg = q.view(B, Lq, kvh, g, hd).permute(0, 2, 1, 3, 4).reshape(B, kvh, Lq * g, hd)
    m = mask if grouped else _group_mask(mask, g)
    o = F.scaled_dot_product_attention(qg, k.transpose(1, 2), v.transpose(1, 2), attn_mask=m, scale=scale)
    return o.view(B, kvh, Lq, g, hd).permute(0, 2, 1, 3, 4).reshape(B, Lq, nh, hd)


def _mask(q_pos: Tensor, num_keys: int, window: int | None) -> Tensor:
    """q_pos: [B, Lq] -> [B, Lq, S]: causal, and within the sliding window when there is one."""
    k_pos = torch.arange(num_keys, device=q_pos.device)
    mask = k_pos <= q_pos[..., None]
    if window is not None:
        mask &= k_pos > q_pos[..., None] - window
    return mask


def _dense_kv(kv_layer: Tensor, staged: Tensor | None, tables: Tensor,
              memo: tuple[dict, object] | None = None) -> tuple[Tensor, Tensor]:
    """tables: [B, nb] -> k, v: [B, nb*bs, kvh, hd], gathered straight from the K and V halves.
    With staged blocks, the table's split by source comes from `memo` when it has it."""
    B, nb = tables.shape
    _, _, bs, kvh, hd = kv_layer.shape
    if staged is None or staged.shape[0] == 0:
        halves = [gather_blocks(kv_layer[:, i], tables) for i in (0, 1)]
    else:
        halves = _split(tables, memo).gather(kv_layer, staged)
    return tuple(h.view(B, nb * bs, kvh, hd) for h in halves)      # [B, nb, bs, kvh, hd] is contiguous


def _decode_attention(q: Tensor, kv_layer: Tensor, staged: Tensor | None, tables: Tensor,
                      context_lens: Tensor, max_context: int, scale: float, window: int | None,
                      memo: tuple[dict, object] | None = None) -> Tensor:
    """One query token per sequence. q: [B, nh, hd]; tables: [B, max_blocks] -> [B, nh, hd]."""
    bs = kv_layer.shape[2]
    nb = -(-max_context // bs)
    k, v = _dense_kv(kv_layer, staged, tables[:, :nb], memo)
    g = q.shape[1] // kv_layer.shape[3]
    key = None if memo is None else (memo[1], "mask", nb, window, g)
    mask = None if key is None else memo[0].get(key)     # the same for every layer of the step
    if mask is None:
        mask = _group_mask(_mask((context_lens - 1)[:, None], nb * bs, window), g)    # [B, 1, g, S]
        if key is not None:
            memo[0][key] = mask
    return _attend(q[:, None], k, v, mask, scale, grouped=True)[:, 0]


def paged_attention(q: Tensor, kv_layer: Tensor, staged: Tensor | None, batch: ForwardBatch,
                    scale: float, window: int | None = None, decode: DecodeRows | None = None) -> Tensor:
    """q: [T, nh, hd] -> [T, nh, hd]. This step's K/V must already be written (write_kv).

    A query token at position p attends to context positions <= p (and > p - window). `decode`
    (policy hybrid): attend only these decode rows (and every prefill row); the other decode rows
    of the output are left unset for the caller (the host share's merge) to fill.
    """
    if batch.decode_only and decode is None:
        return _decode_rows(q, kv_layer, staged, batch.block_tables, batch.context_lens, batch.max_context_len,
                            scale, window, (batch.table_splits, "decode"))
    out = torch.empty_like(q)
    memo = (batch.table_splits, "decode") if decode is None else None     # a sub-batch (hybrid): split per call
    if decode is None:
        decode = DecodeRows(batch.decode_seq_idx, batch.decode_token_idx, batch.decode_seqs)
    if decode.seqs:
        max_ctx = max(batch.context_lens_list[i] for i in decode.seqs)
        out[decode.token_idx] = _decode_rows(q[decode.token_idx], kv_layer, staged, batch.block_tables[decode.seq_idx],
                                             batch.context_lens[decode.seq_idx], max_ctx, scale, window, memo)
    if batch.decode_only:
        return out
    bs = kv_layer.shape[2]
    start = 0
    decoding = set(batch.decode_seqs)
    for i, (n, ctx) in enumerate(zip(batch.query_lens, batch.context_lens_list)):
        if i not in decoding:
            nb = -(-ctx // bs)
            k, v = _dense_kv(kv_layer, staged, batch.block_tables[i:i + 1, :nb],
                             (batch.table_splits, ("prefill", i)))                   # [1, S, kvh, hd]
            q_pos = torch.arange(ctx - n, ctx, device=q.device)[None]             # [1, n]
            out[start:start + n] = _attend(q[None, start:start + n], k, v,
                                           _mask(q_pos, nb * bs, window), scale)[0]
        start += n
    return out


@dataclass(frozen=True)
class DecodeRows:
    """A subset of a batch's decode sequences: their indices [Bd] and token rows [Bd] (tensors on
    the device), and the indices as a host list."""

    seq_idx: Tensor
    token_idx: Tensor
    seqs: list[int]


def _decode_rows(q: Tensor, kv_layer: Tensor, staged: Tensor | None, tables: Tensor, context_lens: Tensor,
                 max_context: int, scale: float, window: int | None, memo: tuple[dict, object] | None = None) -> Tensor:
    """Decode attention of one query per sequence: pie_lab's CPU kernel or the Triton kernel on CUDA where
    they apply, else gather + SDPA."""
    if cpu_kernels.active(q, "attention") and q.dtype == kv_layer.dtype:
        return cpu_kernels.paged_decode_attention(q, kv_layer, staged, tables, context_lens, scale, window)
    if q.is_cuda and triton_attention.available() and (window is None or max_context <= window):
        return triton_attention.decode_attention(q, kv_layer, staged, tables, context_lens, scale)
    return _decode_attention(q, kv_layer, staged, tables, context_lens, max_context, scale, window, memo)


# -- partial attention with log-sum-exp (policy hybrid) ------------------------------------------
def attention_partial(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """q: [B, nh, hd]; k, v: [B, S, kvh, hd]; mask: [B, S] (True = attend) ->
    out [B, nh, hd] (q's dtype) and lse [B, nh] (float32; -inf where a row attends to no key).

    Computed in float32 whatever the cache dtype, so the merge loses nothing.
    """
    B, nh, hd = q.shape
    kvh = k.shape[2]
    g = nh // kvh
    qg = q.float().view(B, kvh, g, hd)
    scores = torch.einsum("bkgd,bskd->bkgs", qg, k.float()) * scale                  # [B, kvh, g, S]
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)                                             # [B, kvh, g]
    p = torch.exp(scores - lse.nan_to_num(neginf=0.0)[..., None])                     # 0 where masked
    out = torch.einsum("bkgs,bskd->bkgd", p, v.float())
    return out.reshape(B, nh, hd).to(q.dtype), lse.reshape(B, nh)


def merge_partials(o1: Tensor, lse1: Tensor, o2: Tensor, lse2: Tensor) -> tuple[Tensor, Tensor]:
    """Two partial attentions over disjoint key sets of the same queries -> attention over both.

    o: [..., hd]; lse: [...] float32. A side with lse = -inf (no keys) contributes nothing.
    """
    m = torch.maximum(lse1, lse2)
    m = m.masked_fill(torch.isinf(m), 0.0)
    w1, w2 = torch.exp(lse1 - m), torch.exp(lse2 - m)                                # [...]
    total = w1 + w2
    out = (o1.float() * w1[..., None] + o2.float() * w2[..., None]) / total[..., None]
    return out.to(o1.dtype), m + torch.log(total)


def host_block_tables(tables: list[list[int]]) -> tuple[Tensor, Tensor]:
    """Per sequence the host pool ids of its host-computed blocks -> ids [B, nb] padded with 0
    and their valid-block counts [B]."""
    nb = max((len(t) for t in tables), default=0)
    ids = torch.tensor([t + [0] * (nb - len(t)) for t in tables], dtype=torch.long).view(len(tables), nb)
    return ids, torch.tensor([len(t) for t in tables], dtype=torch.long)


def host_decode_partial(q: Tensor, host_layer: Tensor, ids: Tensor, counts: Tensor, q_pos: Tensor,
                        scale: float, window: int | None = None) -> tuple[Tensor, Tensor]:
    """The host's share: q [B, nh, hd] over host pool blocks ids [B, nb] ([H, 2, bs, kvh, hd] pool),
    the first counts[b] of them valid; q_pos [B] the query positions. -> out [B, nh, hd], lse [B, nh]."""
    B, nb = ids.shape
    _, _, bs, kvh, hd = host_layer.shape
    k = host_layer[:, 0][ids].view(B, nb * bs, kvh, hd)
    v = host_layer[:, 1][ids].view(B, nb * bs, kvh, hd)
    mask = torch.arange(nb * bs, device=q.device) < (counts * bs)[:, None]           # [B, S]
    if window is not None:
        mask &= torch.arange(nb * bs, device=q.device) > (q_pos - window)[:, None]
    return attention_partial(q, k, v, mask, scale)


def device_decode_partial(q: Tensor, kv_layer: Tensor, staged: Tensor | None, tables: Tensor,
                          context_lens: Tensor, key_start: Tensor, max_context: int, scale: float,
                          window: int | None = None) -> tuple[Tensor, Tensor]:
    """The device's share of a decode step: keys at positions >= key_start [B] (the host attends the
    ones before; their table entries are never read). q: [B, nh, hd] -> out [B, nh, hd], lse [B, nh]."""
    bs = kv_layer.shape[2]
    nb = -(-max_context // bs)
    tables = torch.where(torch.arange(tables.shape[1], device=tables.device) < (key_start // bs)[:, None],
                         0, tables)[:, :nb]                                           # host-computed -> pool 0
    k, v = _dense_kv(kv_layer, staged, tables)
    mask = _mask((context_lens - 1)[:, None], nb * bs, window)[:, 0]                  # [B, S]
    mask &= torch.arange(nb * bs, device=q.device) >= key_start[:, None]
    return attention_partial(q, k, v, mask, scale)
