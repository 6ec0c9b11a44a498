"""The interface every paged decoder implements; executors drive the layer loop through it."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..model_spec import ModelSpec
from .attention import paged_attention
from .batch import ForwardBatch


class PagedDecoder(nn.Module):
    """A decoder whose attention reads K/V from a paged pool (plus an optional staging slot).

    Parameter names follow transformers, so a HF `state_dict` loads directly.
    """

    spec: ModelSpec
    num_layers: int
    attn_scale: float = 1.0                 # softmax scale inside attention
    window: int | None = None               # sliding window (Mistral), None: full context

    def embed(self, batch: ForwardBatch) -> Tensor:          # [T, H]
        raise NotImplementedError

    def attention_input(self, l: int, hidden: Tensor, batch: ForwardBatch, kv_layer: Tensor) -> Tensor:
        """Layer `l` up to attention: writes this step's K/V into `kv_layer` ([G, 2, bs, kvh, hd]);
        returns the queries [T, nh, hd]."""
        raise NotImplementedError

    def post_attention(self, l: int, hidden: Tensor, o: Tensor) -> Tensor:
        """Layer `l` after attention, row by row: hidden [R, H], attention output o [R, nh, hd] -> [R, H]."""
        raise NotImplementedError

    def layer(self, l: int, hidden: Tensor, batch: ForwardBatch, kv_layer: Tensor,
              staged: Tensor | None) -> Tensor:              # [T, H]
        """Run decoder layer `l`. With a host share (policy hybrid) the share runs attention and
        the post-attention part, split into sub-batches when it pays (executors/host_attention.py)."""
        q = self.attention_input(l, hidden, batch, kv_layer)
        if batch.host_share is not None:
            return batch.host_share.layer(l, q, hidden, kv_layer, staged, batch, self)
        return self.post_attention(l, hidden, paged_attention(q, kv_layer, staged, batch, self.attn_scale,
                                                              self.window))

    def compute_logits(self, hidden: Tensor, batch: ForwardBatch) -> Tensor:   # [N, V] float32
        raise NotImplementedError

    def tie_weights(self) -> None:
        """Re-share the LM head with the input embedding (moves such as `to_empty` untie them)."""

    def init_buffers(self) -> None:
        """Recompute non-parameter state (rotary caches) after the weights land on their device."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @torch.inference_mode()
    def forward(self, batch: ForwardBatch, kv_pool: Tensor) -> Tensor:
        """All layers with no staging. kv_pool: [L, G, 2, bs, kvh, hd]. Returns logits [N, V]."""
        hidden = self.embed(batch)
        for l in range(self.num_layers):
            hidden = self.layer(l, hidden, batch, kv_pool[l], None)
        return self.compute_logits(hidden, batch)
