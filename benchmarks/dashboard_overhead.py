"""How much does a live dashboard slow the engine down?

Runs the same fixed workload (all requests at t=0, so the engine is saturated and the run time is
the engine's own) through a LiveRunner, alternating runs without and with a Dashboard refreshing at
`--hz`, and prints the median slowdown. Target: <= 5% at 1-2 Hz.

There is no browser here, so each chart spec the dashboard produces is also serialized to JSON, as
the widget comm would do, to count that cost too.

    python benchmarks/dashboard_overhead.py [--executor cpu] [--model opt-tiny] [--hz 2] [--reps 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pie_lab import ControllerConfig, create_engine                # noqa: E402
from pie_lab.live import LiveRunner                         # noqa: E402
from pie_lab.sources import ListSource                      # noqa: E402


def workload(n: int, vocab: int, seed: int = 0):
    from pie_lab.workloads import alpaca_like
    wl = alpaca_like(n, seed=seed, vocab_size=vocab, max_model_len=512)
    return [r for r in wl]                                  # arrival_time 0: offline


def one_run(args, with_dashboard: bool) -> dict:
    engine = create_engine(args.model, args.executor, policy="pie", num_gpu_blocks=128, num_host_blocks=512,
                           swap_budget_blocks=args.budget, offload="eager",   # the timeline has copies to draw
                           prefetch_depth=2, link_bandwidth_gbps=args.link,
                           controller=ControllerConfig(enabled=args.controller))
    reqs = workload(args.requests, engine.spec.vocab_size)
    runner = LiveRunner(engine, ListSource(reqs))
    dash = None
    serialized = [0]
    if with_dashboard:
        from widgets import Dashboard
        dash = Dashboard(runner, refresh_hz=args.hz, start=False)
        for panel in (dash.timeline, dash.latency, dash.memory):
            panel.jc.observe(lambda ch: serialized.__setitem__(0, serialized[0] + len(json.dumps(ch["new"]))),
                             names="spec")
    t0 = time.perf_counter()
    runner.start()
    if dash is not None:
        dash.start()
    ok = runner.wait_idle(timeout=600)
    wall = time.perf_counter() - t0
    refreshes = busy = 0
    if dash is not None:
        dash.refresher.stop()
        refreshes, busy = dash.refresher.count, dash.refresher.busy_s
    runner.stop()
    tokens = engine.metrics.totals["generated_tokens"]
    engine.close()
    if not ok:
        raise RuntimeError("the run did not finish")
    return dict(wall_s=wall, tokens_per_s=tokens / wall, refreshes=refreshes, refresh_busy_s=busy,
                spec_bytes=serialized[0])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="opt-tiny")
    ap.add_argument("--executor", default="cpu", choices=["cpu", "sim"])
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--budget", type=int, default=16)
    ap.add_argument("--link", type=float, default=1.0, help="emulated link bandwidth, GB/s")
    ap.add_argument("--hz", type=float, default=2.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--controller", action=argparse.BooleanOptionalAction, default=True,
                    help="the adaptive controller sizes the budget (on here; the cpu dashboard starts with it off, a checkbox away)")
    args = ap.parse_args(argv)

    one_run(args, False)                                    # warm-up (first-call costs)
    base, dash = [], []
    for i in range(args.reps):                              # interleaved, so drift hits both alike
        base.append(one_run(args, False))
        dash.append(one_run(args, True))
        print(f"rep {i}: without {base[-1]['wall_s']:.3f} s, with {dash[-1]['wall_s']:.3f} s "
              f"({dash[-1]['refreshes']} refreshes, {dash[-1]['refresh_busy_s'] * 1e3:.0f} ms refreshing, "
              f"{dash[-1]['spec_bytes'] / 1e3:.0f} kB of specs)", flush=True)
    b = statistics.median(r["wall_s"] for r in base)
    d = statistics.median(r["wall_s"] for r in dash)
    bmin, dmin = min(r["wall_s"] for r in base), min(r["wall_s"] for r in dash)
    per = statistics.median(r["refresh_busy_s"] / max(r["refreshes"], 1) for r in dash)
    share = statistics.median(r["refresh_busy_s"] / r["wall_s"] for r in dash)
    print(f"\n{args.model} on {args.executor}, {args.requests} requests, controller "
          f"{'on' if args.controller else 'off'}, dashboard at {args.hz:g} Hz")
    print(f"median run time: {b:.3f} s without, {d:.3f} s with the dashboard: {(d / b - 1) * 100:+.1f}%")
    print(f"best run time:   {bmin:.3f} s without, {dmin:.3f} s with the dashboard: {(dmin / bmin - 1) * 100:+.1f}%")
    print(f"one refresh costs {per * 1e3:.1f} ms; the refresher thread was busy {share * 100:.1f}% of the run "
          f"(an upper bound on what it can take from the engine thread through the GIL)")
    print("target: slowdown <= 5%. Wall-clock differences below the run-to-run spread are noise: "
          "compare with the spread of the reps above.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
