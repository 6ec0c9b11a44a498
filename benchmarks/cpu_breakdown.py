"""Where pie's time goes on the cpu executor, next to the other policies, with and without
memory pressure (opt-tiny, Alpaca-like requests all sent at once).

    python benchmarks/cpu_breakdown.py [--requests 96] [--repeats 2] [--scenario both|pressure|no-pressure]

Per policy: generated tokens/s (best of --repeats; the runs alternate between policies so load
drifts hit all alike), tokens per CPU-second of the process (steadier than wall time on a
loaded machine; stalls are sleeps and cost none), and over the whole run the seconds spent in layer compute, in stalls
(compute waiting for a streamed copy), in blocking copies (swap in/out before the forward), the
rest of the step (embedding, sampling, the engine, and the link's small copies, done inline between
layers), the emulated link's CPU time (copies, inline or on its threads, and the threads' pacing:
work a real DMA link does not take from the host), the bytes streamed and offloaded,
preemptions and the mean batch. The machine's load average is printed: figures are noisy on a
shared machine.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pie_lab import EngineConfig, named_spec                        # noqa: E402
from pie_lab.bench.breakdown import compare_breakdown, measure      # noqa: E402
from pie_lab.bench.harness import as_requests                       # noqa: E402
from pie_lab.workloads import alpaca_like                           # noqa: E402

# Every policy gets the same host tier: the cpu executor gives torch every core when there is no
# host tier (nothing to copy) and one core less otherwise, which alone moves the figures.
SCENARIOS = {
    "no pressure (default GPU pool)": dict(num_host_blocks=64),
    "pressure (24 GPU blocks)": dict(num_gpu_blocks=24, num_host_blocks=64),
}
POLICIES = {
    "none": dict(policy="none"),
    "recompute": dict(policy="recompute"),
    "vllm-swap": dict(policy="vllm-swap"),
    "pie eager": dict(policy="pie", swap_budget_blocks=64, offload="eager"),
    "pie on-demand": dict(policy="pie", swap_budget_blocks=64, offload="on-demand"),   # the default
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--scenario", choices=["both", "pressure", "no-pressure"], default="both")
    args = ap.parse_args(argv)
    reqs = as_requests(alpaca_like(args.requests, seed=0, arrival="offline", vocab_size=named_spec("opt-tiny").vocab_size, max_model_len=2048))
    print(f"opt-tiny on the cpu executor, {args.requests} Alpaca-like requests at once; {os.cpu_count()} CPUs, "
          f"load average {tuple(round(x, 2) for x in os.getloadavg())}")
    measure("opt-tiny", "cpu", "warm-up", EngineConfig(**next(iter(SCENARIOS.values())), policy="none"),
            reqs[:16])                                                # torch's one-off costs
    for name, sizing in SCENARIOS.items():
        if args.scenario != "both" and (args.scenario == "pressure") != name.startswith("pressure"):
            continue
        best = {r["policy"]: r for r in compare_breakdown("opt-tiny", "cpu", POLICIES, reqs, sizing,
                                                           max(1, args.repeats)).to_dict("records")}
        print(f"\n{name}")
        print(f"{'policy':14} {'tok/s':>7} {'wall s':>7} {'cpu s':>6} {'tok/cpu-s':>9} {'compute':>8} {'stall':>7} {'blocking':>8} {'rest':>7} "
              f"{'link cpu':>8} {'stream MB':>9} {'offload MB':>10} {'preempt':>7} {'batch':>6} {'steps':>6}")
        base, base_cpu = best["none"]["tok_s"], best["none"]["tok_cpu_s"]
        for r in best.values():
            print(f"{r['policy']:14} {r['tok_s']:7.0f} {r['wall_s']:7.2f} {r['cpu_s']:6.2f} {r['tok_cpu_s']:9.0f} "
                  f"{r['compute_s']:8.2f} {r['stall_s']:7.2f} "
                  f"{r['blocking_s']:8.2f} {r['rest_s']:7.2f} {r['link_cpu_s']:8.2f} {r['stream_mb']:9.1f} "
                  f"{r['offload_mb']:10.1f} {r['preempt']:7d} {r['batch']:6.1f} {r['steps']:6d}"
                  f"   {r['tok_s'] / base - 1:+.1%} (tok/s), {r['tok_cpu_s'] / base_cpu - 1:+.1%} (tok/cpu-s) vs none")
    print(f"\nload average after: {tuple(round(x, 2) for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
