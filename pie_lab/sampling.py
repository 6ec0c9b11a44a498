"""Per-request sampling parameters (plain data, validated on construction)."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import check_float, check_int


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token.

    temperature 0 means greedy. top_k 0 and top_p 1.0 switch those filters off.
    `seed` makes a sampled request reproducible on its own, whatever it is batched with.
    """

    max_tokens: int = 16
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = ()

    def __post_init__(self):
        check_int("max_tokens", self.max_tokens, 1)
        check_float("temperature", self.temperature, 0.0, 100.0)
        check_int("top_k", self.top_k, 0)
        check_float("top_p", self.top_p, 0.0, 1.0, lo_open=True)
        if self.seed is not None:
            check_int("seed", self.seed, 0, 2**63 - 1)
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0
