"""Replicate Pie's headline claims on the sim executor and write the results as markdown.

    python benchmarks/replicate_paper.py [--quick] [--out docs/replication.md] [--jobs N]

Pie (Xu et al., arXiv 2411.09317) reports on a GH200: up to 1.9x throughput and 2x lower latency
than vLLM, the same performance with up to 1.67x less GPU memory, and 9.4x the throughput of
FlexGen. This script measures the same quantities with pie_lab's sim executor (an analytical cost
model on a virtual clock, `pie_lab/executors/sim.py`) for OPT-13B and OPT-30B, real ShareGPT V3 requests and synthetic
Alpaca-like workloads with Poisson arrivals, on the GH200 preset (NVLink-C2C, 346 GB/s host to
device measured, 450 on paper) and then on the H200 preset (PCIe gen5, 55.5 GB/s):

1. throughput and latency of recompute, vllm-swap, flexgen, pie (adaptive controller) and
   pie-fixed (a fixed budget from the transparency condition) across request rates chosen
   relative to each setup's measured capacity (light load to overload);
2. GPU memory saved at equal performance: pie's GPU KV pool is shrunk (bisection) until its
   throughput at overload drops below vllm-swap's at the full pool;
3. FlexGen: the fraction and batch size from `pie_lab.sim.flexgen_search`, run through the
   engine, and the search's own predicted throughput (static batches, copies on the critical path).

`replicate(mode)` does the work and returns a `Report`; `render(report, command)` writes markdown.
Modes: "full" (~1 min on 2 shared cores), "quick" (< 60 s), "tiny" (seconds; the tests use it).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:                       # runnable as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks.replication import MODES, POLICY_ORDER, Report, render, replicate  # noqa: E402

__all__ = ["MODES", "POLICY_ORDER", "Report", "main", "render", "replicate"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer requests and rates (< 60 s)")
    ap.add_argument("--mode", choices=sorted(MODES), default=None, help="full, quick or tiny (overrides --quick)")
    ap.add_argument("--out", default="docs/replication.md", help="markdown file to write (default docs/replication.md)")
    ap.add_argument("--jobs", type=int, default=None, help="worker processes (default: min(2, CPUs))")
    args = ap.parse_args(argv)
    mode = args.mode or ("quick" if args.quick else "full")
    report = replicate(mode, jobs=args.jobs, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    cmd = "python benchmarks/replicate_paper.py" + (" --quick" if mode == "quick" else
                                                    f" --mode {mode}" if mode != "full" else "")
    if args.out != "docs/replication.md":
        cmd += f" --out {args.out}"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(report, cmd))
    print(report.claims.to_string(index=False))
    print(f"wrote {out} in {report.wall_s:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
