"""Loaders for the real dataset files: ShareGPT conversations and Alpaca records.

With a tokenizer (anything with `.encode(text) -> list[int]`) prompts are real token ids and
output lengths are the tokenised reference answers. Without one, lengths are approximated as
whitespace words x 1.3 and prompt ids are seeded random ids: the shapes are right, the text is not.
"""
from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import ConfigError, check_int
from .generators import FIRST_SAFE_ID, Request, Workload, arrival_times

log = logging.getLogger(__name__)

WORDS_TO_TOKENS = 1.3
HUMAN_ROLES = ("human", "user")
GPT_ROLES = ("gpt", "chatgpt", "assistant", "bard")


def approx_tokens(text: str) -> int:
    """Token count without a tokenizer: whitespace words x 1.3 (at least 1)."""
    return max(1, math.ceil(len(text.split()) * WORDS_TO_TOKENS))


def _read_json(path: str | Path) -> list:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"dataset file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise ConfigError(f"{path} must hold a JSON list of records, got {type(data).__name__}")
    return data


def sharegpt_pairs(records: Iterable[Any]) -> list[tuple[str, str]]:
    """(prompt, answer): the first human turn and the next gpt turn of each conversation."""
    pairs = []
    for rec in records:
        turns = rec.get("conversations") if isinstance(rec, dict) else None
        if not isinstance(turns, list):
            continue
        prompt = None
        for turn in turns:
            if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
                continue
            role = turn.get("from")
            if prompt is None and role in HUMAN_ROLES and turn["value"].strip():
                prompt = turn["value"]
            elif prompt is not None and role in GPT_ROLES and turn["value"].strip():
                pairs.append((prompt, turn["value"]))
                break
    return pairs


def alpaca_pairs(records: Iterable[Any]) -> list[tuple[str, str]]:
    """(prompt, answer): instruction plus the optional input, and the reference output."""
    pairs = []
    for rec in records:
        if not isinstance(rec, dict) or not str(rec.get("instruction", "")).strip() or not str(rec.get("output", "")).strip():
            continue
        prompt = rec["instruction"] + (f"\n\n{rec['input']}" if str(rec.get("input", "")).strip() else "")
        pairs.append((prompt, rec["output"]))
    return pairs


def build_workload(pairs: list[tuple[str, str]], name: str, tokenizer: Any = None, *, max_requests: int | None = None,
                   max_model_len: int | None = None, seed: int = 0, rate: float | None = None,
                   arrival: str | None = None, vocab_size: int = 32000) -> Workload:
    """Requests from (prompt, answer) texts; pairs that do not fit max_model_len are dropped."""
    check_int("seed", seed, 0)
    if max_requests is not None:
        check_int("max_requests", max_requests, 1)
    if max_model_len is not None:
        check_int("max_model_len", max_model_len, 2)
    if tokenizer is not None and not callable(getattr(tokenizer, "encode", None)):
        raise ConfigError(f"tokenizer must have an encode(text) method, got {type(tokenizer).__name__}")
    if tokenizer is None:
        msg = (f"{name}: no tokenizer given, so token counts are approximated as whitespace words x "
               f"{WORDS_TO_TOKENS} and prompt ids are random; pass a tokenizer for real ids")
        log.warning(msg)
        warnings.warn(msg, stacklevel=3)
    rng = np.random.default_rng(seed)
    kept: list[tuple[list[int] | int, int]] = []
    for prompt, answer in pairs:
        if max_requests is not None and len(kept) >= max_requests:
            break
        if tokenizer is not None:
            ids, out_len = list(tokenizer.encode(prompt)), len(tokenizer.encode(answer))
            n_in = len(ids)
        else:
            ids, n_in, out_len = None, approx_tokens(prompt), approx_tokens(answer)
        if n_in < 1 or out_len < 1 or (max_model_len is not None and n_in + out_len > max_model_len):
            continue
        kept.append((ids if ids is not None else n_in, out_len))
    if not kept:
        raise ConfigError(f"{name}: no usable request (empty file, wrong format, or none fits max_model_len)")
    times = arrival_times(len(kept), rng, rate, arrival)
    reqs = []
    for i, ((ids, out_len), t) in enumerate(zip(kept, times)):
        if isinstance(ids, int):
            ids = rng.integers(FIRST_SAFE_ID, vocab_size, ids).tolist()
        reqs.append(Request(i, tuple(ids), out_len, float(t)))
    return Workload(tuple(reqs), name)


def load_sharegpt(path: str | Path, tokenizer: Any = None, **kwargs) -> Workload:
    """ShareGPT JSON: [{"conversations": [{"from": "human"|"gpt", "value": ...}, ...]}, ...]."""
    return build_workload(sharegpt_pairs(_read_json(path)), Path(path).stem, tokenizer, **kwargs)


def load_alpaca(path: str | Path, tokenizer: Any = None, **kwargs) -> Workload:
    """Alpaca JSON: [{"instruction": ..., "input": ..., "output": ...}, ...]."""
    return build_workload(alpaca_pairs(_read_json(path)), Path(path).stem, tokenizer, **kwargs)
