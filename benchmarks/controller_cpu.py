"""The adaptive controller on the cpu executor (emulated link, wall clock): does the budget it
chooses reach the throughput plateau of a fixed-budget sweep? Prints the sweep and the verdict.

    python benchmarks/controller_cpu.py [--link-gbps 0.2] [--budgets 0,32,64,96,160]

Wall-clock figures: run it on an otherwise idle machine (a loaded 2-core box moves them by 20%+).
The deterministic version of this check runs on the sim in tests/test_controller.py.
"""
from __future__ import annotations

import argparse
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from pie_lab import ControllerConfig, SamplingParams, create_engine   # noqa: E402
from test_emulated_link import SPEC                                   # noqa: E402  (8-layer GQA shape)

TARGET = 0.03


def engine(budget: int, controller: bool, link_gbps: float):
    eng = create_engine(SPEC, "cpu", policy="pie", block_size=16, num_gpu_blocks=48, num_host_blocks=1024,
                        swap_budget_blocks=budget, prefetch_depth=2, max_num_seqs=32, link_bandwidth_gbps=link_gbps,
                        controller=ControllerConfig(enabled=controller, target_overhead=TARGET))
    rng = random.Random(0)
    for _ in range(64):
        eng.add_request([rng.randrange(3, 500) for _ in range(48)], SamplingParams(max_tokens=400, ignore_eos=True))
    return eng


def measure(eng, start: int, stop: int) -> tuple[float, float]:
    """Generated tokens/s and stall overhead over iterations [start, stop)."""
    while eng.metrics.totals["iterations"] < stop:
        eng.step()
    it = eng.metrics.iterations_df().iloc[start:stop]
    return it["decode_tokens"].sum() / it["duration"].sum(), it["stall"].sum() / it["duration"].sum()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--link-gbps", type=float, default=0.2)
    ap.add_argument("--budgets", default="0,32,64,96,160")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    eng = engine(0, True, args.link_gbps)
    measure(eng, 0, 50)
    chosen = eng.config.swap_budget_blocks
    tput, overhead = measure(eng, 50, 80)
    sweep = {int(b): measure(engine(int(b), False, args.link_gbps), 20, 50) for b in args.budgets.split(",")}
    best = max(t for t, _ in sweep.values())
    print(f"{'budget':>8} {'tok/s':>9} {'stall share':>12}")
    for b, (t, o) in sweep.items():
        print(f"{b:>8} {t:>9.1f} {o:>12.3%}")
    at_chosen = max(t for b, (t, _) in sweep.items() if b <= chosen)
    print(f"controller chose {chosen} blocks after 50 iterations: {tput:.1f} tok/s, stall {overhead:.2%} "
          f"(target {TARGET:.0%}); best fixed budget at or below it gives {at_chosen / best:.0%} of the sweep's best")


if __name__ == "__main__":
    main()
