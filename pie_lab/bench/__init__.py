"""Benchmarks: one workload through several policies (harness), grids of runs (sweep), named
scenarios (data/scenarios.yaml) and what-if points for the explorer."""
from .harness import BenchResult, PolicyCase, policy_cases, run_benchmark
from .sweep import Cell, SweepResult, SweepSpec, WorkloadSpec, run_sweep
from .scenarios import Scenario, compare, load_scenario, load_scenarios
from .whatif import (DEFAULT_REQUESTS, LINK_MARKS, POLICIES, QUICK_REQUESTS, RATIOS, REFERENCE, WhatIfPoint, bound_curve,
                     hybrid_limits, is_cached, run_point)

__all__ = ["run_benchmark", "BenchResult", "PolicyCase", "policy_cases", "run_sweep", "SweepSpec", "SweepResult",
           "WorkloadSpec", "Cell", "Scenario", "load_scenario", "load_scenarios", "compare", "WhatIfPoint",
           "run_point", "bound_curve", "hybrid_limits", "LINK_MARKS", "POLICIES", "RATIOS", "REFERENCE",
           "is_cached", "DEFAULT_REQUESTS", "QUICK_REQUESTS"]
