"""Fingerprints of whole sim runs, to check that a speed-up changed no result.

    python benchmarks/sim_fingerprint.py [--step-by-step] > before.txt
    ... change the engine ...
    python benchmarks/sim_fingerprint.py > after.txt && diff before.txt after.txt

Runs none, pie (controller) offline and with Poisson arrivals and vllm-swap on OPT-30B / GH200,
and hybrid (controller) on OPT-13B, through the benchmark driver (decode runs on, or the plain
step loop with --step-by-step), and prints each run's step count, end time and a hash of every
record: requests, iterations, controller and knob events, per-layer timings (floats written
with repr, so one bit of difference shows). tests/test_decode_run.py checks the fast paths
against step-by-step on small loads; this checks a change against the code before it.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pie_lab import ControllerConfig, EngineConfig, named_spec     # noqa: E402
from pie_lab.bench.harness import as_requests, run_one             # noqa: E402
from pie_lab.workloads import sharegpt_like                        # noqa: E402

ENGINE = dict(hardware="GH200", dtype="float16", block_size=16, max_num_seqs=256, max_num_batched_tokens=2048)
PIE = dict(policy="pie", controller=ControllerConfig(enabled=True))
# name: (model, policy, requests, Poisson rate or None for all at once)
CASES = {"none-30b": ("opt-30b", dict(policy="none"), 1000, None),
         "pie-30b": ("opt-30b", PIE, 1000, None),
         "pie-30b-poisson": ("opt-30b", PIE, 400, 8.0),
         "vllm-swap-30b": ("opt-30b", dict(policy="vllm-swap"), 400, None),
         "hybrid-13b": ("opt-13b", dict(policy="hybrid", controller=ControllerConfig(enabled=True)), 400, None)}


def digest(df) -> str:
    return hashlib.sha256(df.to_csv(float_format=repr).encode()).hexdigest()[:16]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--step-by-step", action="store_true", help="Engine.step() only (no decode runs)")
    args = ap.parse_args(argv)
    for name, (model, policy, n, rate) in CASES.items():
        spec = named_spec(model)
        work = sharegpt_like(n, seed=0, rate=rate, arrival=None if rate else "offline",
                             vocab_size=spec.vocab_size, max_model_len=2048)
        engine, t0, t_end = run_one(model, "sim", EngineConfig(**ENGINE, **policy), as_requests(work),
                                    decode_runs=not args.step_by_step)
        m = engine.metrics
        print(name, "steps", m.totals["iterations"], "end", repr(t_end - t0))
        for part in ("requests_df", "iterations_df", "events_df", "layers_df"):
            print("  ", part, digest(getattr(m, part)()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
