"""The tensors one forward step needs, built from a StepPlan in a single host-to-device copy."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..core.plan import StepPlan
from ..errors import EngineError


@dataclass
class ForwardBatch:
    """Tokens of all sequences of a step, flattened: sequence i owns rows
    query_start_loc[i]:query_start_loc[i+1]. Host-side lists mirror the tensors for CPU loops."""

    input_ids: Tensor            # [T]
    positions: Tensor            # [T]
    slot_mapping: Tensor         # [T] block_id * block_size + offset, always a pool block
    block_tables: Tensor         # [B, max_blocks] padded with 0; < 0 means staged position ~v
    context_lens: Tensor         # [B] context after the step
    query_start_loc: Tensor      # [B+1]
    logits_indices: Tensor       # [N] last row of each sequence with sample=True
    decode_seq_idx: Tensor       # [Bd] sequences with a single query token
    decode_token_idx: Tensor     # [Bd] their rows
    query_lens: list[int]
    context_lens_list: list[int]
    decode_seqs: list[int]       # host mirror of decode_seq_idx
    seq_ids: list[int]
    block_size: int
    decode_only: bool
    host_share: object | None = None   # hybrid: the step's HostShare (executors/host_attention.py)
    table_splits: dict = field(default_factory=dict, repr=False)   # attention's per-step TableSplit cache
    rope: tuple | None = field(default=None, repr=False)          # the step's RoPE cos/sin, set by the first layer

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def num_seqs(self) -> int:
        return len(self.query_lens)

    @property
    def max_context_len(self) -> int:
        return max(self.context_lens_list, default=0)


def build_forward_batch(plan: StepPlan, block_size: int, device: torch.device | str) -> ForwardBatch:
    if not plan.seqs:
        raise EngineError(f"step {plan.step_id} has no sequences to run")
    ids: list[int] = []
    pos: list[int] = []
    slots: list[int] = []
    qsl = [0]
    ctx: list[int] = []
    qlens: list[int] = []
    logits_idx: list[int] = []
    decode_seqs: list[int] = []
    max_blocks = max(len(s.block_table) for s in plan.seqs)
    tables: list[int] = []
    for i, s in enumerate(plan.seqs):
        n = len(s.token_ids)
        if n == 0:
            raise EngineError(f"sequence {s.seq_id} has no tokens in step {plan.step_id}")
        end = s.start_pos + n
        if len(s.block_table) * block_size < end:
            raise EngineError(f"sequence {s.seq_id}: block table of {len(s.block_table)} blocks cannot hold "
                              f"{end} tokens at block_size={block_size}")
        for p in range(s.start_pos, end):
            block = s.block_table[p // block_size]
            if block < 0:
                raise EngineError(f"sequence {s.seq_id}: new token at position {p} maps to staged entry "
                                  f"{block}; new K/V must go to a pool block")
            slots.append(block * block_size + p % block_size)
        ids.extend(s.token_ids)
        pos.extend(range(s.start_pos, end))
        qsl.append(qsl[-1] + n)
        ctx.append(end)
        qlens.append(n)
        if s.sample:
            logits_idx.append(qsl[-1] - 1)
        if n == 1:
            decode_seqs.append(i)
        tables.extend([0] * s.host_computed)       # attended on the host (hybrid): never read here
        tables.extend(s.block_table[s.host_computed:])
        tables.extend([0] * (max_blocks - len(s.block_table)))

    B, T = len(plan.seqs), len(ids)
    decode_rows = [qsl[i] for i in decode_seqs]
    parts = [ids, pos, slots, ctx, qsl, logits_idx, decode_seqs, decode_rows, tables]
    host = torch.tensor([v for part in parts for v in part], dtype=torch.long)
    dev = torch.device(device)
    if dev.type == "cuda":
        host = host.pin_memory()
    flat = host.to(dev, non_blocking=True)
    views = list(torch.split(flat, [len(p) for p in parts]))
    return ForwardBatch(
        input_ids=views[0], positions=views[1], slot_mapping=views[2],
        block_tables=views[8].view(B, max_blocks), context_lens=views[3], query_start_loc=views[4],
        logits_indices=views[5], decode_seq_idx=views[6], decode_token_idx=views[7],
        query_lens=qlens, context_lens_list=ctx, decode_seqs=decode_seqs,
        seq_ids=[s.seq_id for s in plan.seqs], block_size=block_size,
        decode_only=len(decode_seqs) == B and T == B,
    )
