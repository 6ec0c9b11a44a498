"""Named scenarios (`data/scenarios.yaml`): a model, an executor, an engine setup, a workload and the
policies to compare, each with one line on why Pie's host tier does or does not change the result.

    from pie_lab.bench.scenarios import load_scenario, compare
    load_scenario("memory-bound-gh200").run().df     # one row per policy
    compare(["memory-bound-gh200", "memory-bound-pcie"], num_requests=64)   # side by side
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..errors import ConfigError
from ..model_spec import spec_from_model
from ..sim.hardware import DATA_DIR
from .harness import BenchResult, policy_cases, run_benchmark
from .sweep import WorkloadSpec

SCENARIOS_PATH = DATA_DIR / "scenarios.yaml"


@dataclass(frozen=True)
class Scenario:
    name: str
    why: str
    model: str
    executor: str
    engine: Mapping[str, Any]
    workload: WorkloadSpec
    policies: Mapping[str, Mapping[str, Any]]      # label -> engine options that differ per policy

    def __post_init__(self):
        if not self.why.strip():
            raise ConfigError(f"scenario {self.name!r} needs a one-line 'why'")
        if not self.policies:
            raise ConfigError(f"scenario {self.name!r} lists no policies")
        policy_cases(self.entries(), self.engine)          # every configuration valid up front

    def entries(self, labels: list[str] | None = None) -> list[dict]:
        """The policy entries for run_benchmark (dicts of options with a label), optionally a subset."""
        unknown = sorted(set(labels or ()) - set(self.policies))
        if unknown:
            raise ConfigError(f"scenario {self.name}: no policy {', '.join(unknown)}; "
                              f"allowed: {', '.join(self.policies)}")
        return [dict(opts, label=label) for label, opts in self.policies.items() if not labels or label in labels]

    def run(self, num_requests: int | None = None, labels: list[str] | None = None,
            progress: bool = False) -> BenchResult:
        """Run the scenario's policies (or a subset) on its workload (optionally with fewer requests)."""
        spec = self.workload if num_requests is None else replace(self.workload, num_requests=num_requests)
        res = run_benchmark(self.model, self.executor, self.entries(labels), spec.build(spec_from_model(self.model)),
                            self.engine, progress=progress)
        return BenchResult(res.df.assign(scenario=self.name), res.requests.assign(scenario=self.name),
                           res.iterations.assign(scenario=self.name), {**res.meta, "scenario": self.name})

    def describe(self, workload: WorkloadSpec | None = None) -> str:
        w = workload or self.workload
        rate = f"{w.rate:g} req/s" if w.rate else "all at once"
        return (f"scenario {self.name}: {self.model} on {self.executor} "
                f"({', '.join(f'{k}={v}' for k, v in self.engine.items())}), {w.num_requests} {w.label} "
                f"requests at {rate}\n  why: {self.why}" + self._kernels())

    def _kernels(self) -> str:
        """The sim's kernel calibration for this scenario's preset and dtype (nothing for real executors)."""
        if self.executor != "sim":
            return ""
        from ..config import EngineConfig
        from ..sim.calibration import calibration_status
        from ..sim.hardware import load_preset
        d = EngineConfig()
        hw, dtype = self.engine.get("hardware", d.hardware), self.engine.get("dtype", d.dtype)
        return f"\n  kernels: {calibration_status(load_preset(hw), dtype)}"


def load_scenarios(path: str | Path | None = None) -> dict[str, Scenario]:
    path = Path(path or SCENARIOS_PATH)
    if not path.is_file():
        raise ConfigError(f"scenario file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    out = {}
    for name, d in (data.get("scenarios") or {}).items():
        try:
            out[name] = Scenario(name, str(d["why"]), str(d["model"]), str(d["executor"]), dict(d.get("engine") or {}),
                                 WorkloadSpec(**d["workload"]), {k: dict(v) for k, v in d["policies"].items()})
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: scenario {name!r} is malformed ({exc}); it needs why, model, executor, "
                              "engine, workload and policies") from None
    return out


def default_scenario(path: str | Path | None = None) -> str:
    path = Path(path or SCENARIOS_PATH)
    return str((yaml.safe_load(path.read_text()) or {}).get("default", ""))


def load_scenario(name: str, path: str | Path | None = None) -> Scenario:
    found = load_scenarios(path)
    if name not in found:
        raise ConfigError(f"scenario={name!r} is not defined; allowed: {', '.join(found)}")
    return found[name]


def compare(names: list[str], num_requests: int | None = None, progress: bool = False):
    """The scenarios' result rows side by side: one row per (scenario, policy), plus each
    policy's throughput relative to vllm-swap in the same scenario and the scenario's squeeze
    (`bench/squeeze.py`: the KV its load wants over its GPU's KV)."""
    import pandas as pd
    frames = []
    for name in names:
        df = load_scenario(name).run(num_requests, progress=progress).df
        ref = df.loc[df["policy"] == "vllm-swap", "tokens_per_s"]
        frames.append(df.assign(vs_vllm_swap=df["tokens_per_s"] / ref.iloc[0] if len(ref) else float("nan")))
    cols = ["scenario", "policy", "tokens_per_s", "vs_vllm_swap", "squeeze", "ttft_p50_s", "tpot_p50_s", "e2e_p90_s",
            "preemptions", "stall_share", "final_swap_budget", "peak_host_blocks"]
    return pd.concat(frames, ignore_index=True)[cols]
