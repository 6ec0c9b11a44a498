"""The sim's per-layer compute against measured GPU kernels: for every profile (data/kernel_profiles/,
Vidur, MIT) and token count, the measured sum of one decoder layer's non-attention operators, the
sim's prediction before calibration (datasheet roofline + the preset's layer overhead) and after
(the preset's fitted calibration), and the errors of both, on the fit set and the held-out set.

    python benchmarks/validate_sim.py                # token counts 1, 2, 4, ..., 4096
    python benchmarks/validate_sim.py --all-tokens   # every profiled token count (up to 32,768)
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from pie_lab.sim.calibration import calibration_status   # noqa: E402
from pie_lab.sim.hardware import load_preset   # noqa: E402
from pie_lab.sim.validation import GPU_PRESETS, VALIDATION_TOKENS, error_summary, validation_table   # noqa: E402


def _summary_line(name: str, rows: list[dict]) -> str:
    b, a = error_summary(rows, "before"), error_summary(rows, "after")
    return (f"{name:<44} {a['points']:>4} points | before: MAE {b['mae']:6.1%} worst {b['worst']:6.1%} "
            f"within 15% {b['within_15pct']:>3} | after: MAE {a['mae']:6.1%} worst {a['worst']:6.1%} "
            f"within 15% {a['within_15pct']:>3}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--all-tokens", action="store_true", help="every profiled token count, not only powers of two")
    ap.add_argument("--quiet", action="store_true", help="summaries only")
    args = ap.parse_args()
    tokens = None if args.all_tokens else VALIDATION_TOKENS
    print("Presets:")
    for preset in GPU_PRESETS.values():
        print(f"  {preset}: {calibration_status(load_preset(preset))}")
    summaries = []
    for which in ("fit", "held-out"):
        rows = validation_table(which, tokens)
        if not args.quiet:
            print(f"\n{which} set: one layer's non-attention operators, ms (ratio = predicted / measured)")
            print(f"{'preset':<10} {'model':<38} {'tokens':>6} {'measured':>9} {'before':>9} {'ratio':>6} "
                  f"{'after':>9} {'ratio':>6}")
            for r in rows:
                print(f"{r['preset']:<10} {r['model']:<38} {r['tokens']:>6} {r['measured_ms']:>9.4f} "
                      f"{r['before_ms']:>9.4f} {r['before_ratio']:>6.2f} {r['after_ms']:>9.4f} {r['after_ratio']:>6.2f}")
        summaries.append(_summary_line(f"{which} set, all", rows))
        for preset in GPU_PRESETS.values():
            mine = [r for r in rows if r["preset"] == preset]
            if mine:
                summaries.append(_summary_line(f"{which} set, {preset}", mine))
            for model in sorted({r["model"] for r in mine}):
                summaries.append(_summary_line(f"  {model}", [r for r in mine if r["model"] == model]))
    print("\nSummary (|predicted / measured - 1|):")
    print("\n".join(summaries))


if __name__ == "__main__":
    main()
