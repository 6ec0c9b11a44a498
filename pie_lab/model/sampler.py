"""Token sampling: greedy argmax, or temperature / top-k / top-p with per-request generators.

Each sampled token draws from a generator reseeded from (request seed, output index), so a seeded
request gets the same tokens whatever it is batched with, and again after a preemption.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..core.plan import SeqWork

_MASK64 = (1 << 64) - 1


def _mix(seed: int, index: int) -> int:
    """splitmix64 of (seed, index) -> a 63-bit generator seed."""
    z = (seed * 0x9E3779B97F4A7C15 + index + 1) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


def filter_logits(logits: Tensor, temperature: float, top_k: int, top_p: float) -> Tensor:
    """logits: [V] float32 -> temperature-scaled logits with filtered tokens at -inf."""
    x = logits / temperature
    if 0 < top_k < x.shape[-1]:
        kth = torch.topk(x, top_k).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p < 1.0:
        sorted_x, order = torch.sort(x, descending=True)
        probs = sorted_x.softmax(-1)
        # keep a token while the mass before it is below top_p (the top token always stays)
        drop_sorted = probs.cumsum(-1) - probs >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        x = x.masked_fill(drop, float("-inf"))
    return x


class Sampler:
    def __init__(self, seed: int = 0):
        self.seed = seed
        self._generators: dict[int, torch.Generator] = {}

    def _generator(self, seq_id: int, device: torch.device) -> torch.Generator:
        g = self._generators.get(seq_id)
        if g is None or g.device != device:
            g = self._generators[seq_id] = torch.Generator(device=device)
        return g

    def sample(self, logits: Tensor, works: list[SeqWork]) -> list[int]:
        """logits: [N, V], row i for works[i] -> N token ids."""
        if logits.shape[0] != len(works):
            raise ValueError(f"{logits.shape[0]} logits rows for {len(works)} sequences")
        logits = logits.float()
        out = logits.argmax(-1).tolist() if any(w.sampling.greedy for w in works) else [0] * len(works)
        for i, w in enumerate(works):
            sp = w.sampling
            if sp.greedy:
                continue
            x = filter_logits(logits[i], sp.temperature, sp.top_k, sp.top_p)
            seed = sp.seed if sp.seed is not None else self.seed + w.seq_id
            g = self._generator(w.seq_id, logits.device)
            g.manual_seed(_mix(seed, w.num_generated))
            out[i] = int(torch.multinomial(x.softmax(-1), 1, generator=g).item())
        return out

    def release(self, seq_ids) -> None:
        for s in seq_ids:
            self._generators.pop(s, None)
