"""Requests, workloads, and seeded generators fitted to published dataset statistics.

Lengths are lognormal (right-skewed) and clipped to [1, cap]; the location is solved so the
clipped mean equals the published mean exactly, and a cap that would pull the plain lognormal
mean more than 5% off is refused. Statistics: vLLM paper (Kwon et al., SOSP 2023), section 6.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import ConfigError, check_choice, check_float, check_int

FIRST_SAFE_ID = 3          # ids 0-2 are pad/bos/eos in the supported model families
ARRIVALS = ("poisson", "bursty", "offline")
SHAREGPT = dict(mean_input=161.31, mean_output=337.99, sigma_input=1.0, sigma_output=0.7)
ALPACA = dict(mean_input=19.31, mean_output=58.45, sigma_input=0.6, sigma_output=0.9)
MAX_CLIP_SHIFT = 0.05


@dataclass(frozen=True)
class Request:
    request_id: int | str
    prompt_token_ids: tuple[int, ...]
    max_tokens: int
    arrival_time: float = 0.0

    def __post_init__(self):
        if isinstance(self.request_id, bool) or not isinstance(self.request_id, (int, str)) or self.request_id == "":
            raise ConfigError(f"request_id must be an int or a non-empty string, got {self.request_id!r}")
        ids = tuple(self.prompt_token_ids)
        if not ids or min(ids) < 0:
            raise ConfigError(f"request {self.request_id!r}: prompt_token_ids must be a non-empty sequence of ids >= 0")
        object.__setattr__(self, "prompt_token_ids", ids)
        check_int(f"request {self.request_id!r} max_tokens", self.max_tokens, 1)
        object.__setattr__(self, "arrival_time", check_float(f"request {self.request_id!r} arrival_time",
                                                             self.arrival_time, 0.0, 1e12))

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_token_ids)

    def to_dict(self) -> dict:
        return {"request_id": self.request_id, "prompt_token_ids": list(self.prompt_token_ids),
                "max_tokens": self.max_tokens, "arrival_time": self.arrival_time}


@dataclass(frozen=True)
class Workload:
    requests: tuple[Request, ...]
    name: str = "workload"

    def __post_init__(self):
        object.__setattr__(self, "requests", tuple(self.requests))
        if not all(isinstance(r, Request) for r in self.requests):
            raise ConfigError("Workload.requests must hold Request objects")
        ids = [r.request_id for r in self.requests]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"workload {self.name!r} has duplicate request ids")

    def __len__(self) -> int:
        return len(self.requests)

    def __iter__(self) -> Iterator[Request]:
        return iter(self.requests)

    def __getitem__(self, i: int) -> Request:
        return self.requests[i]

    def describe(self) -> dict:
        """Length and arrival statistics, for a quick look or a report."""
        if not self.requests:
            return {"name": self.name, "num_requests": 0}
        inp = np.array([r.prompt_len for r in self.requests])
        out = np.array([r.max_tokens for r in self.requests])
        t = np.array([r.arrival_time for r in self.requests])
        span = float(t.max() - t.min())
        stats = {"name": self.name, "num_requests": len(self.requests)}
        for key, a in (("input", inp), ("output", out)):
            stats.update({f"{key}_mean": float(a.mean()), f"{key}_p50": float(np.median(a)),
                          f"{key}_p90": float(np.percentile(a, 90)), f"{key}_max": int(a.max()),
                          f"{key}_total": int(a.sum())})
        stats.update(duration_s=span, rate_per_s=(len(t) - 1) / span if span > 0 else math.inf)
        return stats

    def to_jsonl(self, path: str | Path) -> None:
        with open(path, "w") as f:
            for r in self.requests:
                f.write(json.dumps(r.to_dict(), separators=(",", ":")) + "\n")

    @classmethod
    def from_jsonl(cls, path: str | Path, name: str | None = None) -> "Workload":
        path = Path(path)
        reqs = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                reqs.append(Request(d["request_id"], tuple(d["prompt_token_ids"]), d["max_tokens"],
                                    d.get("arrival_time", 0.0)))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ConfigError(f"{path}:{n}: not a request record ({exc})") from None
        return cls(tuple(reqs), name or path.stem)

    def remap_vocab(self, vocab_size: int, first_safe_id: int = FIRST_SAFE_ID) -> "Workload":
        """Fold prompt ids into [first_safe_id, vocab_size), e.g. to run a trace on a tiny model."""
        check_int("vocab_size", vocab_size, first_safe_id + 1)
        span = vocab_size - first_safe_id
        return Workload(tuple(Request(r.request_id, tuple(first_safe_id + (i - first_safe_id) % span
                                                          if not first_safe_id <= i < vocab_size else i
                                                          for i in r.prompt_token_ids),
                                      r.max_tokens, r.arrival_time) for r in self.requests), self.name)


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def clipped_lognormal_mean(mu: float, sigma: float, lo: float, hi: float) -> float:
    """E[min(max(X, lo), hi)] for X = exp(mu + sigma * Z)."""
    a, b = (math.log(lo) - mu) / sigma, (math.log(hi) - mu) / sigma
    inner = math.exp(mu + sigma * sigma / 2) * (_phi(b - sigma) - _phi(a - sigma))
    return lo * _phi(a) + hi * (1.0 - _phi(b)) + inner


def fit_lognormal_mu(mean: float, sigma: float, lo: int, hi: int, what: str = "length") -> float:
    """The mu whose lognormal, clipped to [lo, hi], has exactly `mean`."""
    if not lo < mean < hi:
        raise ConfigError(f"mean {what} {mean} must lie strictly inside the clip range [{lo}, {hi}]; "
                          "raise max_model_len or lower the mean")
    a, b = math.log(lo) - 12 * sigma, math.log(hi) + 12 * sigma
    for _ in range(200):
        m = (a + b) / 2
        a, b = (m, b) if clipped_lognormal_mean(m, sigma, lo, hi) < mean else (a, m)
    mu = (a + b) / 2
    shift = abs(math.exp(mu + sigma * sigma / 2) / mean - 1)
    if shift > MAX_CLIP_SHIFT:
        raise ConfigError(f"clipping {what} to [{lo}, {hi}] moves the mean {shift:.0%} (allowed "
                          f"{MAX_CLIP_SHIFT:.0%}): the distribution would be distorted; raise max_model_len "
                          "or lower the mean")
    return mu


def arrival_times(n: int, rng: np.random.Generator, rate: float | None, arrival: str | None,
                  cv: float = 3.0) -> np.ndarray:
    """Poisson (exponential gaps), bursty (gamma gaps with coefficient of variation cv > 1), offline (all 0)."""
    arrival = arrival or ("poisson" if rate is not None else "offline")
    check_choice("arrival", arrival, ARRIVALS)
    if arrival == "offline":
        return np.zeros(n)
    if rate is None:
        raise ConfigError(f"arrival={arrival!r} needs a rate (requests per second); use arrival='offline' for none")
    check_float("rate", rate, 0.0, 1e9, lo_open=True)
    if arrival == "poisson":
        gaps = rng.exponential(1.0 / rate, n)
    else:
        check_float("cv", cv, 1.0, 100.0, lo_open=True)
        shape = 1.0 / (cv * cv)
        gaps = rng.gamma(shape, 1.0 / (rate * shape), n)
    return np.cumsum(gaps)


def synthetic(n: int, *, seed: int, mean_input: float, mean_output: float, sigma_input: float,
              sigma_output: float, rate: float | None = None, arrival: str | None = None, cv: float = 3.0,
              vocab_size: int = 32000, max_model_len: int = 2048, max_input_len: int | None = None,
              first_safe_id: int = FIRST_SAFE_ID, name: str = "synthetic") -> Workload:
    check_int("n", n, 1, 10_000_000)
    check_int("seed", seed, 0)
    check_int("vocab_size", vocab_size, first_safe_id + 1)
    check_int("max_model_len", max_model_len, 2)
    in_cap = max_model_len // 2 if max_input_len is None else check_int("max_input_len", max_input_len, 1, max_model_len - 1)
    out_cap = max_model_len - in_cap
    rng = np.random.default_rng(seed)
    lengths = []
    for mean, sigma, cap, what in ((mean_input, sigma_input, in_cap, "input"),
                                   (mean_output, sigma_output, out_cap, "output")):
        check_float(f"sigma_{what}", sigma, 0.0, 5.0, lo_open=True)
        mu = fit_lognormal_mu(mean, sigma, 1, cap, f"{what} length")
        lengths.append(np.clip(np.rint(rng.lognormal(mu, sigma, n)), 1, cap).astype(np.int64))
    inp, out = lengths
    times = arrival_times(n, rng, rate, arrival, cv)
    ids = rng.integers(first_safe_id, vocab_size, int(inp.sum()))
    prompts = np.split(ids, np.cumsum(inp)[:-1])
    reqs = tuple(Request(i, tuple(p.tolist()), int(o), float(t)) for i, (p, o, t) in enumerate(zip(prompts, out, times)))
    return Workload(reqs, name)


def sharegpt_like(n: int, *, seed: int = 0, rate: float | None = None, arrival: str | None = None,
                  vocab_size: int = 32000, max_model_len: int = 2048, **overrides) -> Workload:
    """ShareGPT-like: mean input 161.31, mean output 337.99 tokens (vLLM paper, section 6)."""
    params = {**SHAREGPT, **overrides}
    return synthetic(n, seed=seed, rate=rate, arrival=arrival, vocab_size=vocab_size,
                     max_model_len=max_model_len, name=f"sharegpt_like_{n}", **params)


def alpaca_like(n: int, *, seed: int = 0, rate: float | None = None, arrival: str | None = None,
                vocab_size: int = 32000, max_model_len: int = 2048, **overrides) -> Workload:
    """Alpaca-like: mean input 19.31, mean output 58.45 tokens (vLLM paper, section 6)."""
    params = {**ALPACA, **overrides}
    return synthetic(n, seed=seed, rate=rate, arrival=arrival, vocab_size=vocab_size,
                     max_model_len=max_model_len, name=f"alpaca_like_{n}", **params)


def mixed(parts: Sequence[Workload], name: str = "mixed") -> Workload:
    """Merge workloads by arrival time; request ids become 0..n-1 in arrival order."""
    merged = sorted((r for w in parts for r in w), key=lambda r: r.arrival_time)
    return Workload(tuple(Request(i, r.prompt_token_ids, r.max_tokens, r.arrival_time)
                          for i, r in enumerate(merged)), name)
