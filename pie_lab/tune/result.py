"""A tuning run's result: the tuned RunConfig (its provenance says how it was found) and every trial."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..config_io import RunConfig, save_run_config


@dataclass(frozen=True, eq=False)
class TuneResult:
    run_config: RunConfig               # the best point, as pie_lab runs it
    trials: Sequence[Mapping[str, Any]]  # trial 0 is the target at its defaults

    @property
    def tuning(self) -> Mapping[str, Any]:
        return self.run_config.provenance.tuning

    @property
    def baseline_goodput(self) -> float:
        return self.tuning["baseline"]["goodput"]

    @property
    def goodput(self) -> float:
        return self.tuning["best"]["goodput"]

    @property
    def gain(self) -> float:
        """Predicted goodput of the best point over the target at its defaults."""
        return self.goodput / self.baseline_goodput if self.baseline_goodput > 0 else float("inf")

    @property
    def export(self) -> Mapping[str, Any]:
        return self.tuning["export"]

    def table(self):
        import pandas as pd
        return pd.DataFrame(list(self.trials))

    def save(self, path: str | Path, trials_path: str | Path | None = None) -> Path:
        out = save_run_config(self.run_config, path)
        if trials_path is not None:
            self.table().to_csv(trials_path, index=False)
        return out

    def summary(self) -> str:
        t, e = self.tuning, self.export
        lines = [f"{t['engine']} defaults ({t['gpu_class_rule']}): goodput {self.baseline_goodput:.4g} req/s "
                 f"under {t['slo']}",
                 f"best of {t['trials']} trials: {self.goodput:.4g} req/s ({self.gain:.2f}x), "
                 f"policy {t['best']['point']['policy']}",
                 f"export to {t['target']}: {e['goodput']:.4g} req/s predicted; {e['reason']}"]
        for k, v in e["earned"].items():
            lines.append(f"  {k} = {v['value']} (default {v['default']}): {v['goodput_with']:.4g} vs "
                         f"{v['goodput_without']:.4g} req/s with the default")
        lines.append("  left at default: " + ", ".join(f"{k}={v['value']}" for k, v in e["left_at_default"].items()))
        return "\n".join(lines)
