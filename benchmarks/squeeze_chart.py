"""pie / vllm-swap against the squeeze in the sim, GH200 and H200 over PCIe, with the paper's
operating point and the figures other pages printed: writes docs/squeeze.png (vl-convert) and
prints the curve. ~1 min on 2 shared cores.

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

from pie_lab.bench.squeeze_chart import figure_marks, squeeze_chart, squeeze_curve  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "squeeze.png"))
    ap.add_argument("--num-requests", type=int, default=200)
    args = ap.parse_args(argv)
    t0, c0 = time.time(), time.process_time()
    curve = squeeze_curve(num_requests=args.num_requests)
    marks = figure_marks()
    print(curve.round(3).to_string(index=False))
    print(marks[["label", "squeeze", "ratio", "where"]].round(2).to_string(index=False))
    squeeze_chart(curve, marks).save(args.out, scale_factor=2)
    print(f"wrote {args.out} in {time.time() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU, "
          f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
