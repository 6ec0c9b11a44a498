"""One trial: a configuration run on the workload in the sim, scored as goodput under an SLO.

Goodput is the requests per second that meet every deadline of the SLO (a request meets
`ttft=2s` when its time to first token is at most 2 s), over the run's span from the first
arrival to the last finish. `objective="throughput"` scores all finished requests instead.
Trials run in this process, or on a spawn process pool where each worker builds the workload once.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping, Sequence

from ..errors import ConfigError, check_float

METRICS = ("ttft", "tpot", "e2e")
PERCENTILES = ("p50", "p90", "p99")
DEFAULT_SLO = "ttft_p99=2s,tpot_p99=0.1s"
OBJECTIVES = ("goodput", "throughput")


@dataclass(frozen=True)
class SLO:
    """Per-request deadlines in seconds (`ttft`, `tpot`, `e2e`) and the percentile the report checks
    each against (`ttft_p99=2s`: the deadline is 2 s, and the report says whether p99 met it)."""

    deadlines: Mapping[str, float]
    percentiles: Mapping[str, str]

    @classmethod
    def parse(cls, text: str | Mapping[str, Any] | "SLO" | None = None) -> "SLO":
        if isinstance(text, SLO):
            return text
        items = dict(text) if isinstance(text, Mapping) else _items(DEFAULT_SLO if text is None else text)
        deadlines, pcts = {}, {}
        for key, value in items.items():
            m = re.fullmatch(r"(ttft|tpot|e2e)(?:_(p50|p90|p99))?", str(key).strip())
            if not m:
                raise ConfigError(f"slo key {key!r} is not supported; allowed: {', '.join(METRICS)}, each with an "
                                  f"optional percentile suffix {', '.join('_' + p for p in PERCENTILES)} (e.g. ttft_p99)")
            deadlines[m[1]] = _seconds(key, value)
            pcts[m[1]] = m[2] or "p99"
        if not deadlines:
            raise ConfigError("the slo names no deadline; e.g. ttft_p99=2s,tpot_p99=0.1s")
        return cls(deadlines, pcts)

    def text(self) -> str:
        return ",".join(f"{k}_{self.percentiles[k]}={v:g}s" for k, v in self.deadlines.items())

    def met(self, requests) -> Any:
        """Boolean per request: every deadline met."""
        ok = None
        for k, v in self.deadlines.items():
            col = requests[k].fillna(0.0) <= v
            ok = col if ok is None else ok & col
        return ok


def _items(text: str) -> dict:
    out = {}
    for part in str(text).split(","):
        key, eq, value = part.partition("=")
        if not eq:
            raise ConfigError(f"slo item {part!r} must look like KEY=SECONDS, e.g. ttft_p99=2s")
        out[key.strip()] = value.strip()
    return out


def _seconds(key, value) -> float:
    text = str(value).strip().lower()
    scale = 1e-3 if text.endswith("ms") else 1.0
    text = text[:-2] if text.endswith("ms") else text.rstrip("s")
    try:
        x = float(text) * scale
    except ValueError:
        raise ConfigError(f"slo {key}={value!r} is not a duration; e.g. 2s, 100ms or 0.1") from None
    return check_float(f"slo {key}", x, 0.0, 1e6, lo_open=True)


@dataclass(frozen=True)
class TrialJob:
    """What a worker needs: the model, executor, engine options and the workload (a spec or requests)."""

    model: str
    executor: str
    options: Mapping[str, Any]
    workload: Any


def score(job: TrialJob, slo: SLO, objective: str = "goodput") -> dict:
    """Run one configuration; its goodput, throughput and p99 latencies (goodput 0 if it cannot run)."""
    from ..bench.harness import run_one, summarize
    from ..config import EngineConfig
    try:
        reqs = _requests(job.workload, job.model)
        engine, t0, t_end = run_one(job.model, job.executor, EngineConfig.from_options(**job.options), reqs)
        row, rdf, _ = summarize("trial", engine, t0, t_end, len(reqs))
    except Exception as exc:       # a point the engine refuses (e.g. a prompt over the token budget)
        return {"goodput": 0.0, "throughput": 0.0, "error": f"{type(exc).__name__}: {exc}"}
    span = max(t_end - t0 - min(r.arrival_time for r in reqs), 1e-12)
    met = int(slo.met(rdf).sum())
    out = {"throughput": len(rdf) / span, "slo_met": met / len(rdf), "tokens_per_s": row["tokens_per_s"],
           "error": ""}
    out["goodput"] = out["throughput"] if objective == "throughput" else met / span
    for m in METRICS:
        for p in PERCENTILES:
            out[f"{m}_{p}_s"] = row[f"{m}_{p}_s"]
    return out


def _requests(workload, model: str):
    from ..bench.harness import as_requests
    if hasattr(workload, "build"):
        return _built(workload, model)
    return as_requests(workload)


@lru_cache(maxsize=4)
def _built(spec, model: str):
    from ..bench.harness import as_requests
    from ..model_spec import spec_from_model
    return as_requests(spec.build(spec_from_model(model)))


def _score_star(args):
    return score(*args)


class Runner:
    """Scores batches of jobs: in this process (`workers` None or 1), or on a spawn process pool."""

    def __init__(self, workers: int | None = None):
        self.workers = workers
        self._pool = None

    def map(self, jobs: Sequence[TrialJob], slo: SLO, objective: str) -> list[dict]:
        if not self.workers or self.workers <= 1 or len(jobs) <= 1:
            return [score(j, slo, objective) for j in jobs]
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            # spawn: forking a process that already runs torch threads can deadlock (as bench/sweep.py)
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return list(self._pool.map(_score_star, [(j, slo, objective) for j in jobs]))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
