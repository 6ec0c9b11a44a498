"""A decoding batch in numbers: what a decode run plans with (core/decode_run.py).

Every sequence of the batch feeds one token per step; from its counts alone follow the step in
which it finishes and the steps in which it needs a new GPU block.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class DecodeState(NamedTuple):
    """Per sequence of a decoding batch, in batch order."""

    left: list[int]          # tokens it may still produce (its max_tokens, then the model's length)
    firsts: list[int]        # the step that writes its next block's first slot (0: it needs a block in step 0)
    computed: list[int]      # its computed tokens


def decode_state(seqs, block_size: int, max_len: int) -> "DecodeState | None":
    """The batch's DecodeState, or None unless every sequence's next step is a decode token
    (prompt done, first token sampled)."""
    left, firsts, computed = [], [], []
    for s in seqs:
        c, generated = s.num_computed_tokens, len(s.output_token_ids)
        num_tokens = len(s.prompt_token_ids) + generated
        if c != num_tokens - 1 or s.first_token_time is None:
            return None
        by_max, by_len = s.sampling.max_tokens - generated, max_len - num_tokens
        left.append(by_max if by_max < by_len else by_len)
        firsts.append(len(s.block_table) * block_size - c)
        computed.append(c)
    return DecodeState(left, firsts, computed)


def new_blocks(firsts: np.ndarray, block_size: int, steps: int) -> int:
    """GPU blocks the batch allocates in its first `steps` steps; sequence i allocates one in
    steps firsts[i], firsts[i] + block_size, ..."""
    return int(np.maximum(0, (steps - firsts + block_size - 1) // block_size).sum())


def step_of_block(firsts: np.ndarray, block_size: int, horizon: int, n: int) -> int:
    """The step (< horizon) in which the batch allocates its (n + 1)-th new GPU block."""
    lo, hi = 0, horizon - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if new_blocks(firsts, block_size, mid + 1) > n:
            hi = mid
        else:
            lo = mid + 1
    return lo

