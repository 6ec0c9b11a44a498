"""pie / vllm-swap against the squeeze in the sim, GH200 and H200 over PCIe, on the scenarios'
load (real ShareGPT V3), with the paper's operating point, the figures other pages printed when issue
25 was filed, and the same pages' figures now (the replication's at its best case's setting):
writes docs/squeeze.png (vl-convert) and prints the curve and the marks. ~1-2 min on 2 shared cores.

    python benchmarks/squeeze_chart.py [--out docs/squeeze.png] [--num-requests 200]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from pie_lab.bench.squeeze_chart import current_marks, figure_marks, mark, squeeze_chart, squeeze_curve  # noqa: E402

REPLICATION = ("GH200", "opt-30b", "sharegpt-v3", 1.6)      # the best case docs/replication.md printed


def replication_mark() -> dict:
    """The replication's pie / vllm-swap steady tokens/s at the setting of its printed best case
    (OPT-30B, ShareGPT V3, the GH200's whole pool, 1.6x the measured capacity), as
    benchmarks/replicate_paper.py measures a cell; whether it is still the best case takes the
    whole replication to say."""
    from benchmarks.replication.experiment import _calibrate, run_cell
    from benchmarks.replication.settings import MODES
    from benchmarks.replication.setups import policy_cases, setup_for
    preset, model, workload, factor = REPLICATION
    setup = setup_for(preset, model, workload, MODES["full"])
    rate = round(factor * _calibrate(setup), 3)
    df = run_cell({"setup": setup, "rate": rate, "factor": factor, "cases": policy_cases(setup, None, ("vllm-swap", "pie"))})
    return mark("replication", f"docs/replication.md's best-case setting: {model}, {workload}, {setup['gpu_blocks']} "
                f"GPU blocks, {rate:g} req/s ({factor}x capacity), steady tokens/s", df, column="steady_tokens_per_s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "squeeze.png"))
    ap.add_argument("--num-requests", type=int, default=200)
    args = ap.parse_args(argv)
    t0, c0 = time.time(), time.process_time()
    curve = squeeze_curve(num_requests=args.num_requests)
    marks = pd.concat([figure_marks(), current_marks(), pd.DataFrame([replication_mark()])], ignore_index=True)
    print(curve.round(3).to_string(index=False))
    print(marks[["kind", "label", "squeeze", "ratio", "where"]].round(2).to_string(index=False))
    squeeze_chart(curve, marks).save(args.out, scale_factor=2)
    print(f"wrote {args.out} in {time.time() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU, "
          f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
