"""Pie's headline claims replicated on the sim executor; `benchmarks/replicate_paper.py` is the
command line.

- `settings`: the paper's figures, the engine configuration, the modes (full, quick, tiny);
- `setups`: workloads and the per-setup figures (GPU KV pool, transparency-condition budget,
  FlexGen's choices), the policies as harness entries;
- `experiment`: cells, capacity calibration, the GPU-memory search, `replicate()` -> `Report`;
- `claims`: paper vs sim, per preset;
- `report` and `findings`: `render(report, command)`, the markdown.
"""
from .claims import claims
from .experiment import Report, replicate
from .report import render
from .settings import MODES, PAPER, POLICY_ORDER, Mode

__all__ = ["MODES", "PAPER", "POLICY_ORDER", "Mode", "Report", "claims", "render", "replicate"]
