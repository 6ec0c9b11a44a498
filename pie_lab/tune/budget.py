"""Tune the swap budget: run the adaptive controller headless on a workload and keep what it settles on.

The controller has settled when `stable_decisions` decisions in a row kept the budget. The tuned
budget is that of the last such stretch: a move the controller did not hold for long enough (say,
while the batch drains at the end of the workload) does not count. Without any stretch the run
did not converge, and the budget it ended at is kept, flagged in the provenance.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from ..config_io import Provenance, RunConfig, Trajectory, load_run_config, save_run_config
from ..errors import ConfigError, check_int

STABLE_DECISIONS = 3


@dataclass(frozen=True, eq=False)
class BudgetResult:
    run_config: RunConfig          # the tuned config
    events: Any                    # DataFrame of the controller's decisions (kind == "controller")
    summary: Mapping[str, Any]     # the run's benchmark row (throughput, latency percentiles, ...)

    @property
    def budget(self) -> int:
        return self.run_config.engine.swap_budget_blocks

    @property
    def converged(self) -> bool:
        return self.run_config.provenance.trajectory.converged

    def save(self, path: str | Path, events_path: str | Path | None = None) -> Path:
        out = save_run_config(self.run_config, path)
        if events_path is not None:
            self.events.to_csv(events_path, index=False)
        return out


def tune_budget(config: Any, workload: Any, *, executor: str | None = None, engine_options: Mapping[str, Any] | None = None,
         stable_decisions: int = STABLE_DECISIONS, workload_description: Mapping[str, Any] | None = None,
         progress: bool = True, notes: str = "") -> BudgetResult:
    """`config`: a model name, a RunConfig, or a config file/mapping. The run always uses policy
    "pie" with the controller on; `engine_options` override the config's engine settings."""
    from ..bench.harness import as_requests, run_one, summarize, _bar
    check_int("stable_decisions", stable_decisions, 1, 10_000)
    rc = RunConfig(config, executor or "cpu") if isinstance(config, str) else load_run_config(config)
    if executor is not None:
        rc = RunConfig(rc.model, executor, rc.engine)
    engine_cfg = rc.engine.replace(**dict(engine_options or {}))
    controller = engine_cfg.controller
    engine_cfg = engine_cfg.replace(policy="pie", controller=replace(controller, enabled=True))
    reqs = as_requests(workload)

    bar = _bar(len(reqs), progress)
    if bar is not None:
        bar.set_description("tune")
    try:
        engine, t0, t_end = run_one(rc.model, rc.executor, engine_cfg, reqs, bar)
    finally:
        if bar is not None:
            bar.close()
    row, _, its = summarize("pie", engine, t0, t_end, len(reqs))
    events = engine.metrics.events_df()
    events = events[events["kind"] == "controller"].reset_index(drop=True) if len(events) else events
    trajectory = analyse(events, engine_cfg.swap_budget_blocks, len(its), stable_decisions)
    if engine.config.swap_budget_blocks != trajectory.final_budget:
        raise ConfigError(f"the engine ended at budget {engine.config.swap_budget_blocks} but the controller's "
                          f"last decision set {trajectory.final_budget}; was the budget changed by hand?")
    budget = trajectory.settled_budget if trajectory.converged else trajectory.final_budget
    desc = dict(workload_description or {})
    if hasattr(workload, "describe"):
        desc.update(workload.describe())          # measured facts win over the description
    prov = Provenance(
        workload=desc, hardware=_hardware(engine), executor=rc.executor,
        throughput={k: row[k] for k in ("requests_per_s", "tokens_per_s", "duration_s", "stall_share", "preemptions")},
        latency={k: v for k, v in row.items() if k.endswith(("_p50_s", "_p90_s", "_p99_s"))},
        trajectory=trajectory, pie_lab_version=_version(), date=datetime.now().isoformat(timespec="seconds"),
        notes=notes or ("" if trajectory.converged else
                        f"not converged: the controller never held a budget for {stable_decisions} decisions in a "
                        "row; the budget the run ended at is kept"))
    tuned = RunConfig(rc.model, rc.executor, engine_cfg.replace(swap_budget_blocks=budget), prov)
    return BudgetResult(tuned, events, row)


def analyse(events, start_budget: int, iterations: int, stable_decisions: int = STABLE_DECISIONS) -> Trajectory:
    """The controller's trajectory from its decision events (columns step, old_budget, new_budget, and
    count where one event stands for a run of identical holds)."""
    if events is None or len(events) == 0:
        return Trajectory(start_budget, start_budget, 0, 0, False, None, None, iterations)
    old = events["old_budget"].astype(int).tolist()
    new = events["new_budget"].astype(int).tolist()
    steps = events["step"].astype(int).tolist()
    counts = events["count"].astype(int).tolist() if "count" in events else [1] * len(old)
    moved = [i for i, (a, b) in enumerate(zip(old, new)) if a != b]
    settled, run = None, 0
    for i, (a, b) in enumerate(zip(old, new)):
        run = run + counts[i] if a == b else 0
        if run >= stable_decisions:
            set_at = max([m for m in moved if m < i], default=None)
            settled = (b, steps[set_at] + 1 if set_at is not None else 0)
    if settled is None:
        return Trajectory(start_budget, new[-1], sum(counts), len(moved), False, None, None, iterations)
    return Trajectory(start_budget, new[-1], sum(counts), len(moved), True, settled[0], settled[1], iterations)


def _hardware(engine) -> str:
    c = engine.config
    if engine.executor_name == "sim":
        return c.hardware
    if engine.executor_name == "cuda":
        return str(getattr(engine.executor, "device_name", "cuda"))
    cpu = platform.processor() or platform.machine()
    return f"cpu ({cpu}), emulated link {c.link_bandwidth_gbps:g} GB/s"


def _version() -> str:
    from .. import __version__
    return __version__
