"""Grids of benchmark runs: policy x budget x request rate x hardware preset.

Each cell is a small picklable description (the workload is described, not shipped, and built
where the cell runs). Cells run on a local process pool by default, in this process with
`backend="serial"`, or as Ray tasks (`backend="ray"`, `address=...`; `pip install ray`): on the
running cluster or a local instance it starts ("auto"), or on the cluster at an address. Results merge into one DataFrame, one row per cell.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from ..config_io import check_hardware
from ..errors import ConfigError, check_choice, check_float, check_int
from ..model_spec import spec_from_model
from .harness import BenchResult, policy_cases, run_benchmark

GENERATORS = ("sharegpt-v3", "sharegpt", "alpaca")   # sharegpt-v3: real requests; the others synthetic
SYNTHETIC = {"sharegpt": "synthetic ShareGPT-like lengths (lognormal, vLLM paper's means)",
             "alpaca": "synthetic Alpaca-like lengths (lognormal, vLLM paper's means)"}
RAY_CONNECT_TIMEOUT_S = 3.0
BACKENDS = ("process", "serial", "ray")
MAX_GENERATED_LEN = 2048          # context cap for generated workloads (and the model's own cap)


@dataclass(frozen=True)
class WorkloadSpec:
    """`kind`: "sharegpt-v3" (real ShareGPT V3 requests sampled as vLLM's benchmark does,
    `workloads.load_sharegpt_v3`), "sharegpt" or "alpaca" (synthetic: seeded generators fitted to the
    published means), or a path: .jsonl request records, or a ShareGPT / Alpaca .json dataset file. `rate` (requests/s)
    gives Poisson arrivals (it replaces a file's arrival times); None sends everything at once."""

    kind: str = "alpaca"
    num_requests: int | None = 32
    rate: float | None = None
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.kind, str) or not self.kind:
            raise ConfigError(f"workload must be one of {', '.join(GENERATORS)} or a .jsonl/.json file, got {self.kind!r}")
        if self.kind not in GENERATORS and not self.kind.endswith((".jsonl", ".json")):
            raise ConfigError(f"workload={self.kind!r} is not supported; choose one of {', '.join(GENERATORS)}, "
                              "or give a .jsonl request file or a ShareGPT/Alpaca .json file")
        if self.num_requests is not None:
            check_int("num_requests", self.num_requests, 1, 10_000_000)
        elif self.kind in GENERATORS:
            raise ConfigError(f"num_requests is required for the {self.kind} generator; allowed: >= 1")
        if self.rate is not None:
            check_float("rate", self.rate, 0.0, 1e9, lo_open=True)
        check_int("seed", self.seed, 0)

    def build(self, spec, tokenizer=None):
        """The requests, with prompt ids inside the vocabulary of model shape `spec` (sharegpt-v3 with
        the model's `tokenizer`: its real prompt ids and lengths)."""
        from ..workloads import Workload, alpaca_like, load_sharegpt_v3, sharegpt_like
        from ..workloads.generators import arrival_times
        max_len = min(MAX_GENERATED_LEN, spec.max_position_embeddings)
        if self.kind == "sharegpt-v3":
            return load_sharegpt_v3(self.num_requests, seed=self.seed, rate=self.rate, tokenizer=tokenizer,
                                    vocab_size=spec.vocab_size, max_model_len=max_len)
        if self.kind in GENERATORS:
            gen = sharegpt_like if self.kind == "sharegpt" else alpaca_like
            return gen(self.num_requests, seed=self.seed, rate=self.rate, vocab_size=spec.vocab_size,
                       max_model_len=max_len)
        path = Path(self.kind)
        if not path.is_file():
            raise ConfigError(f"workload file {path} does not exist")
        if path.suffix == ".jsonl":
            w = Workload.from_jsonl(path)
        else:
            w = self._dataset(path, spec, max_len)
        reqs = w.requests[: self.num_requests] if self.num_requests else w.requests
        if self.rate is not None:
            import numpy as np
            times = arrival_times(len(reqs), np.random.default_rng(self.seed), self.rate, "poisson")
            reqs = tuple(replace(r, arrival_time=float(t)) for r, t in zip(reqs, times))
        return Workload(reqs, w.name).remap_vocab(spec.vocab_size)

    def _dataset(self, path: Path, spec, max_len: int):
        import json
        import warnings
        from ..workloads import load_alpaca, load_sharegpt
        head = json.loads(path.read_text())
        loader = load_sharegpt if head and isinstance(head[0], dict) and "conversations" in head[0] else load_alpaca
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")      # "no tokenizer": lengths are approximated, as documented
            return loader(path, vocab_size=spec.vocab_size, max_model_len=max_len, seed=self.seed,
                          max_requests=self.num_requests)

    @property
    def label(self) -> str:
        """The kind in words: real dataset, synthetic generator or file."""
        if self.kind == "sharegpt-v3":
            return "sharegpt-v3 (real ShareGPT V3 requests, vLLM's benchmark filter)"
        return f"{self.kind} ({SYNTHETIC[self.kind]})" if self.kind in SYNTHETIC else f"file {self.kind}"

    def describe(self) -> dict:
        return {"kind": self.kind, "num_requests": self.num_requests, "rate": self.rate, "seed": self.seed,
                "synthetic": self.kind in SYNTHETIC}


@dataclass(frozen=True)
class Cell:
    index: int
    model: str
    executor: str
    policy: str
    budget: int | None
    rate: float | None
    hardware: str
    workload: WorkloadSpec
    engine_options: Mapping[str, Any] = field(default_factory=dict)

    def options(self) -> dict:
        opts = {**self.engine_options, "policy": self.policy, "hardware": self.hardware}
        if self.budget is not None:
            opts["swap_budget_blocks"] = self.budget
        return opts


@dataclass(frozen=True)
class SweepSpec:
    model: str
    executor: str = "sim"
    policies: tuple[str, ...] = ("none", "pie")
    budgets: tuple[int, ...] = (0,)           # swap budgets, for policy "pie" only
    rates: tuple[float | None, ...] = (None,)
    hardware: tuple[str, ...] = ("H200",)
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    engine_options: Mapping[str, Any] = field(default_factory=dict)

    def cells(self) -> list[Cell]:
        """Every cell, each configuration validated before anything runs."""
        for name in ("policies", "budgets", "rates", "hardware"):
            if not getattr(self, name):
                raise ConfigError(f"sweep {name} is empty: give at least one value")
        for b in self.budgets:
            check_int("budgets", b, 0)
        for hw in self.hardware:
            check_hardware("hardware", hw)
        cells = []
        for hw in self.hardware:
            for rate in self.rates:
                for policy in self.policies:
                    for budget in (self.budgets if policy == "pie" else (None,)):
                        cell = Cell(len(cells), self.model, self.executor, policy, budget, rate, hw,
                                    replace(self.workload, rate=rate), dict(self.engine_options))
                        policy_cases([cell.options()], None)
                        cells.append(cell)
        return cells


def run_cell(cell: Cell) -> tuple[list[dict], Any]:
    """Run one cell (in whatever process); returns its result rows and request records."""
    workload = cell.workload.build(spec_from_model(cell.model))
    res = run_benchmark(cell.model, cell.executor, [dict(cell.options(), label=cell.policy)], workload,
                        progress=False)
    tags = {"cell": cell.index, "budget": cell.budget, "rate": cell.rate, "hardware": cell.hardware,
            "workload": cell.workload.kind}
    rows = [{**tags, **row} for row in res.df.to_dict("records")]
    return rows, res.requests.assign(**tags)


class SweepResult(BenchResult):
    def chart(self):
        """Generated tokens/s against request rate, one line per policy and budget, a panel per hardware."""
        import altair as alt
        df = self.df.assign(series=[p if b is None or b != b else f"{p} (budget {int(b)})"
                                    for p, b in zip(self.df["policy"], self.df["budget"])],
                            rate=self.df["rate"].fillna(0.0))
        return alt.Chart(df).mark_line(point=True).encode(
            x=alt.X("rate:Q", title="request rate (req/s; 0 = all at once)"),
            y=alt.Y("tokens_per_s:Q", title="generated tokens/s"), color="series:N",
            column=alt.Column("hardware:N", title=None),
            tooltip=["policy", "budget", "rate", "tokens_per_s", "e2e_p50_s", "stall_share"],
        ).properties(width=260, height=220)


def run_sweep(spec: SweepSpec, *, backend: str = "process", workers: int | None = None,
              address: str | None = None, progress: bool = True) -> SweepResult:
    import pandas as pd
    if address is not None:
        backend = "ray"
    check_choice("backend", backend, BACKENDS)
    cells = spec.cells()
    if workers is not None:
        check_int("workers", workers, 1, 1024)
    if backend == "serial":
        outs = [run_cell(c) for c in _progress(cells, progress)]
    elif backend == "ray":
        how, outs = _run_ray(cells, address, progress)
    else:
        outs = _run_pool(cells, workers or min(len(cells), os.cpu_count() or 1), progress)
    rows = [row for out in outs for row in out[0]]
    meta = {"model": spec.model, "executor": spec.executor, "cells": len(cells), "backend": backend}
    if backend == "ray":
        meta["ray"] = how
    return SweepResult(pd.DataFrame(rows), pd.concat([o[1] for o in outs], ignore_index=True), pd.DataFrame(), meta)


def _run_pool(cells: list[Cell], workers: int, progress: bool) -> list:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    # spawn: forking a process that already runs torch threads can deadlock
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_cell, c): c.index for c in cells}
        results = {}
        for fut in _progress(as_completed(futures), progress, total=len(cells)):
            results[futures[fut]] = fut.result()
    return [results[c.index] for c in cells]


def connect_ray(address: str | None = "auto") -> str:
    """Ray for a sweep; says which it did. "auto" (or None): the running cluster, else a local
    instance (`ray.init()`); an ADDRESS (host:port or ray://host:port): that cluster, which must answer."""
    try:
        import ray
    except ImportError:
        raise ConfigError("backend 'ray' needs Ray: pip install ray (or pip install 'pie_lab[ray]')") from None
    if ray.is_initialized():
        return "Ray: using the instance this process already runs"
    if address in (None, "", "auto"):
        try:
            ctx = ray.init(address="auto", log_to_driver=False)
            at = (getattr(ctx, "address_info", None) or {}).get("gcs_address")
            return "Ray: connected to the running cluster" + (f" at {at}" if at else "")
        except ConnectionError:
            ray.init(include_dashboard=False, log_to_driver=False)
            return "Ray: no running cluster found, started a local instance (ray.init())"
    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=RAY_CONNECT_TIMEOUT_S).close()
        ray.init(address=address, log_to_driver=False)
    except (OSError, ConnectionError, RuntimeError) as exc:   # Ray itself would retry for minutes
        raise ConfigError(f"--ray {address}: no Ray cluster answers there ({exc}); start one with "
                          f"`ray start --head --port {port}` on {host}, or use --ray auto to connect to "
                          "a running one or start a local one") from None
    return f"Ray: connected to the cluster at {address}"


def _host_port(address: str) -> tuple[str, int]:
    rest = address.split("://", 1)[-1]
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--ray {address!r} must be 'auto', HOST:PORT or ray://HOST:PORT, e.g. 10.0.0.5:6379")
    return host, int(port)


def _run_ray(cells: list[Cell], address: str | None, progress: bool) -> tuple[str, list]:
    how = connect_ray(address)
    import ray
    task = ray.remote(num_cpus=1)(run_cell)
    refs = {task.remote(c): c.index for c in cells}
    results, left = {}, list(refs)
    bar = _progress(None, progress, total=len(cells))
    while left:
        done, left = ray.wait(left, num_returns=1)
        for ref in done:
            results[refs[ref]] = ray.get(ref)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return how, [results[c.index] for c in cells]


def _progress(it, progress: bool, total: int | None = None):
    if not progress:
        return it
    from tqdm.auto import tqdm
    return tqdm(it, total=total, unit="cell", desc="sweep")
