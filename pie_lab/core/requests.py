"""The requests in flight: one table from a request's arrival to its retirement.

`add` and `abort` may be called from any thread (under `lock`, which the engine's knob gate
shares); the engine takes arrivals and aborts at the start of a step (`take_incoming`,
`take_aborts`) and retires a request when it leaves (`retire`).
"""
from __future__ import annotations

import operator
import threading
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence as Seq

from ..config import EngineConfig
from ..errors import ConfigError
from ..sampling import SamplingParams
from .sequence import Sequence

FINISH_REASONS = ("stop", "length", "abort", "error")


@dataclass(frozen=True)
class RequestOutput:
    request_id: Any
    prompt_token_ids: list[int]
    token_ids: list[int]
    finish_reason: str
    metrics: dict
    text: str | None = None
    error: str | None = None          # finish_reason "error": what failed


def check_prompt(prompt_token_ids: Seq[int], sampling: SamplingParams, vocab: int, max_model_len: int,
                 config: EngineConfig, room: int) -> list[int]:
    """The prompt as a list of ints, or ConfigError if an engine with this vocabulary, context
    window, config and `room` (KV blocks one request may span) could never serve it."""
    if isinstance(prompt_token_ids, (str, bytes)):
        raise ConfigError("prompt must be a list of token ids; strings need LLM.generate and a tokenizer")
    prompt = []
    for i, t in enumerate(prompt_token_ids):
        try:
            prompt.append(operator.index(t))
        except TypeError:
            raise ConfigError(f"prompt token {i} is {t!r}: token ids must be integers") from None
    if not prompt:
        raise ConfigError("prompt is empty: give at least one token")
    bad = [t for t in prompt if not 0 <= t < vocab]
    if bad:
        raise ConfigError(f"prompt token id {bad[0]} is out of range: allowed [0, {vocab - 1}]")
    if len(prompt) >= max_model_len:
        raise ConfigError(f"prompt of {len(prompt)} tokens does not fit the context window: "
                          f"allowed at most {max_model_len - 1} tokens (max_model_len={max_model_len})")
    if not config.chunked_prefill and len(prompt) > config.max_num_batched_tokens:
        raise ConfigError(f"prompt of {len(prompt)} tokens exceeds max_num_batched_tokens="
                          f"{config.max_num_batched_tokens}; allowed: <= that, or enable chunked_prefill")
    total = min(len(prompt) + sampling.max_tokens, max_model_len)
    need = -(-total // config.block_size)
    if need > room:
        raise ConfigError(f"request needs up to {need} KV blocks ({total} tokens) but the engine holds "
                          f"{room}; allowed: prompt + max_tokens <= {room * config.block_size} tokens")
    return prompt


class InFlight(NamedTuple):
    seq: Sequence
    request_id: Any
    prompt_tokens: int
    total_tokens: int          # prompt + max_tokens, within the context window: its blocks' bound


class RequestTable:
    def __init__(self, lock: threading.Lock | None = None):
        self.lock = lock or threading.Lock()
        self._by_seq: dict[int, InFlight] = {}      # seq_id -> the request, from add() to retire()
        self._by_request: dict[Any, int] = {}       # request_id -> seq_id: unique among requests in flight
        self._incoming: list[Sequence] = []         # added since the last step
        self._aborts: set[int] = set()              # seq_ids to abort at the next step boundary

    def add(self, seq: Sequence, request_id: Any, total_tokens: int) -> None:
        """Queue `seq` for the next step; ConfigError if `request_id` is already in flight."""
        with self.lock:
            if request_id in self._by_request:
                raise ConfigError(f"request_id {request_id!r} is already in flight; request ids must be unique "
                                  "among unfinished requests")
            self._incoming.append(seq)
            self._by_seq[seq.seq_id] = InFlight(seq, request_id, len(seq.prompt_token_ids), total_tokens)
            self._by_request[request_id] = seq.seq_id

    def abort(self, request_id: Any) -> bool:
        """Mark a request in flight for abort at the next step; False if none has that id."""
        with self.lock:
            seq_id = self._by_request.get(request_id)
            if seq_id is None:
                return False
            self._aborts.add(seq_id)
            return True

    @property
    def quiet(self) -> bool:
        """No arrival and no abort waits for the next step."""
        return not (self._incoming or self._aborts)

    @property
    def has_incoming(self) -> bool:
        return bool(self._incoming)

    def take_incoming(self) -> list[Sequence]:
        with self.lock:
            incoming, self._incoming = self._incoming, []
        return incoming

    def take_aborts(self) -> list[Sequence]:
        """The sequences to abort now, in seq_id order (those retired meanwhile left out)."""
        with self.lock:
            aborts, self._aborts = self._aborts, set()
        return [self._by_seq[i].seq for i in sorted(aborts) if i in self._by_seq]

    def retire(self, seq: Sequence) -> Any:
        """`seq`'s request leaves: returns its request_id."""
        with self.lock:
            entry = self._by_seq.pop(seq.seq_id)
            del self._by_request[entry.request_id]
        return entry.request_id

    def in_flight(self, waiting_ids: set[int] | None = None) -> list:
        """Request ids in flight (with `waiting_ids`: those whose seq_id is in it)."""
        with self.lock:
            if waiting_ids is None:
                return list(self._by_request)
            queued = waiting_ids | {s.seq_id for s in self._incoming}
            return [r for r, i in self._by_request.items() if i in queued]

    def largest(self, by: str) -> InFlight | None:
        """The request in flight with the most `by` ("prompt_tokens" or "total_tokens"); caller holds `lock`."""
        if not self._by_seq:
            return None
        return max(self._by_seq.values(), key=lambda r: getattr(r, by))

    def sequences(self) -> list[Sequence]:
        """The sequences the engine has taken in (not those still incoming), in arrival order."""
        with self.lock:
            incoming = {s.seq_id for s in self._incoming}
            return [r.seq for i, r in self._by_seq.items() if i not in incoming]
