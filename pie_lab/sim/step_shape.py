"""`StepShape`: the sums over a step's sequences that the cost model times a step from."""
from __future__ import annotations

from dataclasses import dataclass

from ..core.plan import StepPlan, attn_pairs


@dataclass(frozen=True)
class StepShape:
    """The sums over a step's sequences that its cost depends on."""

    tokens: int = 0          # query tokens computed this step
    attn_pairs: int = 0      # (query, key) pairs attended, causal within a prefill chunk
    kv_tokens: int = 0       # context tokens whose KV each layer reads
    sampled: int = 0         # positions that go through lm_head
    host_rows: int = 0       # hybrid: rows with a host-computed share (sub-batch H; the rest are D)
    host_blocks: int = 0     # hybrid: host-computed blocks, attended by the host

    @classmethod
    def of(cls, plan: StepPlan, block_size: int = 16) -> "StepShape":
        """The device's share: keys in host-computed blocks (hybrid) are attended by the host."""
        sm = plan.summary
        return cls.host_split(sm.tokens, sm.attn_pairs, sm.context_tokens, sm.sampled, sm.host_rows,
                              sm.host_computed_blocks, block_size)

    @classmethod
    def host_split(cls, tokens: int, attn_pairs: int, kv_tokens: int, sampled: int, host_rows: int,
                   host_blocks: int, block_size: int) -> "StepShape":
        """The batch's sums with `host_blocks` blocks of `host_rows` decode rows attended by the
        host: one query per host key, so both the device's pairs and its keys lose them."""
        host_keys = host_blocks * block_size
        return cls(tokens, attn_pairs - host_keys, kv_tokens - host_keys, sampled, host_rows, host_blocks)

    @classmethod
    def decode(cls, batch: int, context_len: int) -> "StepShape":
        """`batch` sequences each adding one token at context length `context_len` (new token included)."""
        return cls(batch, batch * context_len, batch * context_len, batch)

    @classmethod
    def prefill(cls, batch: int, prompt_len: int) -> "StepShape":
        q = prompt_len
        return cls(batch * q, batch * attn_pairs(0, q), batch * q, batch)
