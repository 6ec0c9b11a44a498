"""The interface every paged decoder implements; executors drive the layer loop through it."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..model_spec import ModelSpec
from .batch import ForwardBatch


class PagedDecoder(nn.Module):
    """A decoder whose attention reads K/V from a paged pool (plus an optional staging slot).

    Parameter names follow transformers, so a HF `state_dict` loads directly.
    """

    spec: ModelSpec
    num_layers: int

    def embed(self, batch: ForwardBatch) -> Tensor:          # [T, H]
        raise NotImplementedError

    def layer(self, l: int, hidden: Tensor, batch: ForwardBatch, kv_layer: Tensor,
              staged: Tensor | None) -> Tensor:              # [T, H]
        """Run decoder layer `l`; writes this step's K/V into `kv_layer` ([G, 2, bs, kvh, hd])."""
        raise NotImplementedError

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
