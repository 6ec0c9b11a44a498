"""Tuning: `tune` searches the knobs deployments tune (Optuna, in the sim) against a target engine
at its own defaults; `tune_budget` runs the adaptive controller headless and keeps its budget."""
from .budget import STABLE_DECISIONS, BudgetResult, analyse, tune_budget
from ..export.host_tier import host_memory_gib
from .defaults import TARGETS, TargetDefaults, target_defaults
from .result import TuneResult
from .search import tune
from .space import baseline_config
from .trials import DEFAULT_SLO, SLO

__all__ = ["tune", "baseline_config", "tune_budget", "analyse", "BudgetResult", "TuneResult", "SLO", "DEFAULT_SLO", "TARGETS", "TargetDefaults",
           "target_defaults", "host_memory_gib", "STABLE_DECISIONS"]
