"""Run one workload through several policies on one executor and compare them.

Arrivals follow the engine's clock: simulated time on "sim" (idle gaps cost nothing), wall time
on "cpu" and "cuda". Every configuration is built and checked before the first run starts.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..config import EngineConfig
from ..errors import ConfigError, EngineError
from ..model_spec import spec_from_model
from ..sampling import SamplingParams
from .squeeze import run_squeeze

PERCENTILES = (50, 90, 99)
LATENCIES = ("ttft", "tpot", "e2e")


@dataclass(frozen=True)
class PolicyCase:
    label: str
    config: EngineConfig


@dataclass(frozen=True, eq=False)
class BenchResult:
    """`df`: one row per policy (`squeeze`: the KV the workload wants over the policy's GPU KV,
    `bench/squeeze.py`). `requests` / `iterations`: the raw records, with a `policy` column."""

    df: Any
    requests: Any
    iterations: Any
    meta: Mapping[str, Any] = field(default_factory=dict)

    def to_csv(self, path: str | Path) -> Path:
        path = Path(path)
        self.df.to_csv(path, index=False)
        return path

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        self.df.to_json(path, orient="records", indent=2)
        return path

    def chart(self):
        """Throughput and latency percentiles per policy, side by side (Altair)."""
        import altair as alt
        df = self.df
        tput = alt.Chart(df).mark_bar().encode(
            x=alt.X("policy:N", sort=None, title=None), y=alt.Y("tokens_per_s:Q", title="generated tokens/s"),
            color=alt.Color("policy:N", legend=None), tooltip=["policy", "tokens_per_s", "requests_per_s"],
        ).properties(title="throughput", width=220, height=220)
        cols = [f"{m}_p{p}_s" for m in LATENCIES for p in PERCENTILES]
        long = df.melt(id_vars=["policy"], value_vars=cols, var_name="metric", value_name="seconds")
        long["latency"] = long["metric"].str.split("_").str[0]
        long["percentile"] = long["metric"].str.split("_").str[1]
        lat = alt.Chart(long).mark_bar().encode(
            x=alt.X("percentile:N", title=None), xOffset="policy:N", y=alt.Y("seconds:Q", title="seconds"),
            color="policy:N", column=alt.Column("latency:N", title=None), tooltip=["policy", "metric", "seconds"],
        ).properties(width=120, height=220).resolve_scale(y="independent")
        return alt.hconcat(tput, lat)


def policy_cases(policies: Sequence[str | Mapping[str, Any]], engine_options: Mapping[str, Any] | None) -> list[PolicyCase]:
    """Each entry is a policy name or a dict of engine options (with an optional "label")."""
    if isinstance(policies, (str, Mapping)) or not policies:
        raise ConfigError("policies must be a non-empty list of policy names or dicts of engine options")
    base = dict(engine_options or {})
    cases, labels = [], set()
    for i, p in enumerate(policies):
        if isinstance(p, str):
            opts, label = {"policy": p}, p
        elif isinstance(p, Mapping):
            opts = dict(p)
            label = opts.pop("label", None) or _label(opts, base)
        else:
            raise ConfigError(f"policies[{i}] must be a policy name or a dict of engine options, got {p!r}")
        try:
            config = EngineConfig.from_options(**{**base, **opts})
        except ConfigError as exc:
            raise ConfigError(f"policies[{i}] ({label}): {exc}") from None
        if label in labels:
            raise ConfigError(f"policies[{i}]: label {label!r} is used twice; give each entry a distinct 'label'")
        labels.add(label)
        cases.append(PolicyCase(str(label), config))
    return cases


def with_flexgen_search(case: PolicyCase, model: Any, reqs: Sequence[Any]) -> PolicyCase:
    """A flexgen case without a fraction gets FlexGen's own choice: the offline cost-model search
    over (host fraction, batch size) for this workload's mean lengths, fixed for the whole run."""
    c = case.config
    if c.policy != "flexgen" or c.flexgen_fraction > 0:
        return case
    from ..sim.flexgen_search import flexgen_search
    from ..sim.hardware import load_preset
    spec = spec_from_model(model)
    gpu_gb = None
    if c.num_gpu_blocks is not None:
        gpu_gb = c.num_gpu_blocks * spec.kv_block_bytes(c.block_size, c.dtype) / 2**30
    elif c.gpu_kv_limit_gb is not None:
        gpu_gb = c.gpu_kv_limit_gb
    found = flexgen_search(spec, load_preset(c.hardware), prompt_len=_mean(len(r.prompt_token_ids) for r in reqs),
                           output_len=_mean(r.max_tokens for r in reqs), dtype=c.dtype, gpu_kv_limit_gb=gpu_gb,
                           block_size=c.block_size, link_bandwidth_gbps=c.link_bandwidth_gbps,
                           link_latency_us=c.link_latency_us)
    opts = found.to_config_options()
    return PolicyCase(case.label, c.replace(flexgen_fraction=opts["flexgen_fraction"],
                                            max_num_seqs=min(c.max_num_seqs, opts["max_num_seqs"])))


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _label(opts: Mapping[str, Any], base: Mapping[str, Any]) -> str:
    policy = opts.get("policy", base.get("policy", "none"))
    rest = ", ".join(f"{k}={v}" for k, v in opts.items() if k != "policy")
    return f"{policy}({rest})" if rest else str(policy)


def as_requests(workload: Iterable[Any]) -> list[Any]:
    reqs = list(getattr(workload, "requests", workload))
    if not reqs:
        raise ConfigError("the workload is empty: give at least one request")
    for i, r in enumerate(reqs):
        missing = [a for a in ("request_id", "prompt_token_ids", "max_tokens", "arrival_time") if not hasattr(r, a)]
        if missing:
            raise ConfigError(f"workload[{i}] lacks {', '.join(missing)}; requests need request_id, "
                              "prompt_token_ids, max_tokens and arrival_time (see pie_lab.workloads.Request)")
    ids = [r.request_id for r in reqs]
    if len(set(ids)) != len(ids):
        raise ConfigError("the workload has duplicate request ids")
    return sorted(reqs, key=lambda r: r.arrival_time)


def run_benchmark(model: Any, executor: str, policies: Sequence[str | Mapping[str, Any]], workload: Iterable[Any],
                  engine_options: Mapping[str, Any] | None = None, progress: bool = True,
                  metrics_bytes: int | None = None) -> BenchResult:
    """The same workload through each policy; see BenchResult for what comes back. `metrics_bytes`:
    the iteration records' memory bound per run (default: the engine's, which keeps the last few
    thousand iterations; a long sim run needs more to be summarised whole)."""
    import pandas as pd
    reqs = as_requests(workload)
    asked = policy_cases(policies, engine_options)
    cases = [with_flexgen_search(c, model, reqs) for c in asked]
    bar = _bar(len(reqs) * len(cases), progress)
    rows, req_frames, it_frames = [], [], []
    try:
        for case, asked_case in zip(cases, asked):
            if bar is not None:
                bar.set_description(case.label)
            engine, t0, t_end = run_one(model, executor, case.config, reqs, bar, metrics_bytes=metrics_bytes)
            row, rdf, idf = summarize(case.label, engine, t0, t_end, len(reqs))
            # the load's squeeze: flexgen's own batch cap is its choice, not the load's
            row["squeeze"] = run_squeeze(model, engine, reqs, idf, asked_case.config.max_num_seqs).value
            rows.append(row)
            req_frames.append(rdf)
            it_frames.append(idf)
    finally:
        if bar is not None:
            bar.close()
    return BenchResult(pd.DataFrame(rows), pd.concat(req_frames, ignore_index=True),
                       pd.concat(it_frames, ignore_index=True),
                       {"model": str(model), "executor": executor, "num_requests": len(reqs)})


def run_one(model: Any, executor: str, config: EngineConfig, reqs: list[Any], bar=None, decode_runs: bool = True,
            metrics_bytes: int | None = None):
    """Feed `reqs` by arrival time until all finish; returns (engine, start time, end time).

    The engine is closed afterwards; its metrics stay readable. `decode_runs`: let the engine
    take runs of decode steps at once where it can (`Engine.step_run`, the sim); same results.
    """
    from ..engine_factory import create_engine
    engine = create_engine(model, executor, config)
    if metrics_bytes is not None:           # iterations kept whole, few layer rows (nothing has run yet)
        from ..core.metrics import BUFFER_SHARES, Metrics
        engine.metrics = Metrics(int(metrics_bytes / BUFFER_SHARES["iterations"]), max_layer_rows=256)
    clock = engine.clock
    pending = deque(reqs)
    t0 = clock.now()
    try:
        while pending or engine.has_unfinished():
            now = clock.now() - t0
            while pending and pending[0].arrival_time <= now:
                r = pending.popleft()
                engine.add_request(r.prompt_token_ids, SamplingParams(max_tokens=r.max_tokens, ignore_eos=True),
                                   request_id=r.request_id, arrival_time=t0 + r.arrival_time)
            if not engine.has_unfinished():
                clock.sleep_until(t0 + pending[0].arrival_time)
                continue
            before = engine.metrics.totals["iterations"]
            done = engine.step_run(until=t0 + pending[0].arrival_time if pending else None) if decode_runs \
                else engine.step()
            if bar is not None and done:
                bar.update(len(done))
            if engine.metrics.totals["iterations"] == before and not done:
                if not pending:
                    raise EngineError("the engine made no progress with requests left and none arriving: "
                                      "a request may never fit the KV pools")
                clock.sleep_until(t0 + pending[0].arrival_time)
        return engine, t0, clock.now()
    finally:
        engine.close()


def summarize(label: str, engine, t0: float, t_end: float, num_requests: int):
    """One result row plus the run's request and iteration records (tagged with the policy)."""
    reqs = engine.metrics.requests_df()
    its = engine.metrics.iterations_df()
    span = max(t_end - t0, 1e-12)
    block = engine.block_bytes
    out_tokens = int(reqs["output_tokens"].sum()) if len(reqs) else 0
    busy = float(its["duration"].sum()) if len(its) else 0.0
    row = {"policy": label, "executor": engine.executor_name, "requests": int(len(reqs)),
           "duration_s": span, "requests_per_s": len(reqs) / span, "tokens_per_s": out_tokens / span,
           "generated_tokens": out_tokens}
    for m in LATENCIES:
        vals = reqs[m].dropna().to_numpy(float) if len(reqs) else np.array([])
        for p in PERCENTILES:
            row[f"{m}_p{p}_s"] = float(np.percentile(vals, p)) if len(vals) else float("nan")
    # the staging ring is GPU memory too: count it with the pool's used blocks
    peak_gpu = int((its["gpu_blocks_used"] + its["staging_blocks"]).max()) if len(its) else 0
    peak_host = int(its["host_blocks_used"].max()) if len(its) else 0
    row.update(peak_gpu_blocks=peak_gpu, peak_gpu_bytes=peak_gpu * block, peak_host_blocks=peak_host,
               peak_host_bytes=peak_host * block,
               stall_share=float(its["stall"].sum()) / busy if busy > 0 else 0.0,
               preemptions=int(its["preempted"].sum() + its["swapped_out"].sum()) if len(its) else 0,
               iterations=int(len(its)), final_swap_budget=int(engine.config.swap_budget_blocks),
               flexgen_fraction=float(engine.config.flexgen_fraction),
               stream_bytes=int(its["stream_bytes"].sum()) if len(its) else 0,
               clock="virtual" if engine.executor_name == "sim" else "wall",
               emulated_link=bool(engine.emulated_link))
    if len(reqs) < num_requests:
        raise EngineError(f"{label}: {len(reqs)} of {num_requests} requests finished")
    reqs = reqs.assign(policy=label)
    its = its.assign(policy=label)
    return row, reqs, its


def _bar(total: int, progress: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, unit="req", desc="bench")
