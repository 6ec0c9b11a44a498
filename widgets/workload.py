"""A request source for live runs whose workload can be switched while it runs.

Requests are drawn from a pre-generated pool of the chosen workload (pie_lab.workloads, fitted
to ShareGPT / Alpaca statistics, seeded), so drawing on the engine thread costs nothing. Lengths
are clipped to what the engine can hold: a request that could never fit would fail the engine.
"""
from __future__ import annotations

import random
import threading
from typing import Any, Callable

from pie_lab import ConfigError
from pie_lab.sources import RateSource

WORKLOADS = ("alpaca_like", "sharegpt_like", "short", "instructions")   # instructions: real text, needs a tokenizer
INSTRUCTION_TOKENS = 96         # answer length limit of an instruction request (it usually ends sooner)
POOL = 256


class _Req:
    __slots__ = ("request_id", "prompt_token_ids", "max_tokens", "arrival_time", "stop_token_ids", "prompt_text")

    def __init__(self, request_id, prompt_token_ids, max_tokens, arrival_time, stop_token_ids=(), prompt_text=None):
        self.request_id = request_id
        self.prompt_token_ids = prompt_token_ids
        self.max_tokens = max_tokens
        self.arrival_time = arrival_time
        self.stop_token_ids = stop_token_ids
        self.prompt_text = prompt_text


def _instructions(tokenizer) -> list[tuple]:
    """(chat prompt ids, max_tokens, text) of data/prompts.jsonl through the model's chat template."""
    from pie_lab import chat_prompt_ids
    from pie_lab.workloads import read_prompts
    if tokenizer is None:
        raise ConfigError("workload='instructions' needs a model with a tokenizer (e.g. smollm2-135m); "
                          "named shapes have random weights: pick alpaca_like, sharegpt_like or short")
    return [(tuple(chat_prompt_ids(tokenizer, [{"role": "user", "content": t}])), INSTRUCTION_TOKENS, t)
            for t in read_prompts()]


def _pool(name: str, vocab_size: int, max_model_len: int, seed: int, scale: float = 1.0) -> list[tuple]:
    """(prompt ids, max_tokens) pairs of workload `name`."""
    if name == "short":
        rng = random.Random(seed)
        return [(tuple(rng.randrange(3, vocab_size) for _ in range(rng.randint(4, 24))), rng.randint(8, 48))
                for _ in range(POOL)]
    try:
        from pie_lab import workloads
    except ImportError:                                 # the workloads package has not landed
        return _pool("short", vocab_size, max_model_len, seed)
    gen = {"alpaca_like": workloads.alpaca_like, "sharegpt_like": workloads.sharegpt_like}[name]
    wl = gen(POOL, seed=seed, vocab_size=vocab_size, max_model_len=max_model_len)
    out = []
    for r in wl:
        n_in = max(1, int(round(len(r.prompt_token_ids) * scale)))
        out.append((tuple(r.prompt_token_ids[:n_in]), max(1, int(round(r.max_tokens * scale)))))
    return out


class WorkloadSource(RateSource):
    """Poisson arrivals at `rate` req/s of workload `name`; `set_workload(name)` switches live.

    `capacity()` (called on the engine thread for each request) returns the most tokens a request
    may span; lengths are clipped to it so no request is ever rejected by the engine.
    """

    def __init__(self, name: str, rate: float, vocab_size: int, max_model_len: int, seed: int = 0,
                 capacity: Callable[[], int] | None = None, limit: int | None = None, scale: float = 1.0,
                 tokenizer: Any = None):
        self.vocab_size, self.max_model_len, self.seed, self.scale = vocab_size, max_model_len, seed, scale
        self.tokenizer = tokenizer
        self.texts: dict[int, str] = {}                 # request id -> prompt text (instructions; recent ones)
        self.stop_ids: tuple[int, ...] = ()
        if tokenizer is not None and getattr(tokenizer, "chat_template", None) is not None:
            from pie_lab import end_of_turn_ids
            self.stop_ids = end_of_turn_ids(tokenizer)
        self.capacity = capacity or (lambda: max_model_len)
        self._pools: dict[str, list[tuple]] = {}
        self._switch = threading.Lock()
        self.name = self._check(name)
        self._items = self._get_pool(self.name)
        super().__init__(self._make, rate, seed, limit)

    @staticmethod
    def _check(name: str) -> str:
        if name not in WORKLOADS:
            raise ConfigError(f"workload={name!r} is not supported; choose one of {', '.join(map(repr, WORKLOADS))}")
        return name

    def _get_pool(self, name: str) -> list[tuple]:
        if name not in self._pools:
            self._pools[name] = _instructions(self.tokenizer) if name == "instructions" else \
                _pool(name, self.vocab_size, self.max_model_len, self.seed, self.scale)
        return self._pools[name]

    def set_workload(self, name: str) -> None:
        items = self._get_pool(self._check(name))
        with self._switch:
            self.name, self._items = name, items

    def _make(self, rng: random.Random, i: int, t: float) -> Any:
        with self._switch:
            prompt, max_tokens, *text = self._items[rng.randrange(len(self._items))]
        cap = max(2, min(self.max_model_len - 1, int(self.capacity())))
        prompt = prompt[: max(1, min(len(prompt), cap // 2))]
        max_tokens = max(1, min(max_tokens, cap - len(prompt)))
        if text:
            self.texts[i] = text[0]
            self.texts.pop(i - 1024, None)
            return _Req(i, prompt, max_tokens, t, self.stop_ids, text[0])
        return _Req(i, prompt, max_tokens, t)


def prompt_text(source) -> Callable[[Any], str | None]:
    """request id -> its prompt text, where `source` knows it."""
    texts = getattr(source, "texts", {})
    return texts.get


def engine_capacity(engine) -> Callable[[], int]:
    """Tokens one request may span in `engine` now (GPU tier plus swap budget, minus a margin)."""
    def cap() -> int:
        c = engine.config
        gpu = c.num_gpu_blocks or engine.gpu_limit
        room = gpu + (c.swap_budget_blocks if c.policy == "pie" else 0)
        room = max(1, room - c.prefetch_depth)          # the staging ring takes GPU blocks too
        return min(room * c.block_size // 2, c.max_num_batched_tokens * 2)
    return cap
