"""The adaptive controller on the cpu executor (emulated link, wall clock): does the budget it
chooses reach the throughput of the best fixed budget? Prints the sweep and the verdict.

    python benchmarks/controller_cpu.py [--link-gbps 0.2] [--budgets 0,32,64,96,160] [--offload on-demand]
                                        [--preemption-mode recompute|swap]

The controller runs 50 iterations from budget 0, then every run (the controller's and each fixed
budget's) is measured over the same iterations 50-80: generated tokens/s over all steps, the same
over decode-only steps, the stall share, the emulated link's CPU share and the preemptions (recompute:
their prompts run again), which is where a too-large budget loses on this shape (with
--preemption-mode swap a preempted sequence keeps its KV in host memory and that loss goes away).

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


def engine(budget: int, controller: bool, link_gbps: float, offload: str = "on-demand", preemption: str | None = None):
    eng = create_engine(SPEC, "cpu", policy="pie", offload=offload, preemption_mode=preemption, block_size=16,
                        num_gpu_blocks=48, num_host_blocks=1024,
                        swap_budget_blocks=budget, prefetch_depth=2, max_num_seqs=32, link_bandwidth_gbps=link_gbps,
                        controller=ControllerConfig(enabled=controller, target_overhead=TARGET))
    rng = random.Random(0)
    for _ in range(64):
        eng.add_request([rng.randrange(3, 500) for _ in range(48)], SamplingParams(max_tokens=400, ignore_eos=True))
    return eng


def measure(eng, start: int, stop: int) -> dict:
    """Over iterations [start, stop): generated tokens/s (all steps, decode-only steps), stall and
    link-CPU shares of the step time, preemptions."""
    while eng.metrics.totals["iterations"] < stop:
        eng.step()
    it = eng.metrics.iterations_df().iloc[start:stop]
    dec, busy = it[it["prefill_tokens"] == 0], it["duration"].sum()
    return dict(tok_s=it["decode_tokens"].sum() / busy, decode_tok_s=dec["decode_tokens"].sum() / dec["duration"].sum(),
                stall=it["stall"].sum() / busy, link_cpu=it["link_cpu_time"].sum() / busy,
                preempted=int(it["preempted"].sum()), batch=it["batch_size"].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--link-gbps", type=float, default=0.2)
    ap.add_argument("--budgets", default="0,32,64,96,160")
    ap.add_argument("--offload", default="on-demand", choices=["on-demand", "eager"])
    ap.add_argument("--preemption-mode", default=None, choices=["recompute", "swap"], help="default: pie's (recompute)")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; offload {args.offload}, "
          f"preemption {args.preemption_mode or 'recompute'}")
    options = (args.link_gbps, args.offload, args.preemption_mode)
    eng = engine(0, True, *options)
    measure(eng, 0, 50)
    chosen = eng.config.swap_budget_blocks
    runs = {f"controller ({chosen} at 50)": measure(eng, 50, 80)}
    final = eng.config.swap_budget_blocks
    runs.update({f"fixed {int(b)}": measure(engine(int(b), False, *options), 50, 80)
                 for b in args.budgets.split(",")})
    print(f"{'iterations 50-80':>22} {'tok/s':>7} {'decode tok/s':>12} {'stall':>7} {'link cpu':>8} {'preempted':>9} {'batch':>6}")
    for name, r in runs.items():
        print(f"{name:>22} {r['tok_s']:7.1f} {r['decode_tok_s']:12.1f} {r['stall']:7.2%} {r['link_cpu']:8.2%} "
              f"{r['preempted']:9d} {r['batch']:6.1f}")
    best_name, best = max(((n, r["tok_s"]) for n, r in runs.items() if n.startswith("fixed")), key=lambda x: x[1])
    ctl = next(iter(runs.values()))["tok_s"]
    print(f"controller: {chosen} blocks at iteration 50, {final} at 80; {ctl:.1f} tok/s = {ctl / best:.0%} of the "
          f"best fixed budget ({best_name}: {best:.1f} tok/s)")
    decisions = eng.metrics.events_df().query("kind == 'controller'")
    print("its rules:", ", ".join(f"{r.old_budget}->{r.new_budget} {r.rule.split(':')[0]}" for r in decisions.itertuples()))


if __name__ == "__main__":
    main()
