"""Benchmarks: one workload through several policies (harness), and grids of runs (sweep)."""
from .harness import BenchResult, PolicyCase, policy_cases, run_benchmark
from .sweep import Cell, SweepResult, SweepSpec, WorkloadSpec, run_sweep

__all__ = ["run_benchmark", "BenchResult", "PolicyCase", "policy_cases", "run_sweep", "SweepSpec", "SweepResult",
           "WorkloadSpec", "Cell"]
