"""Fit the kernel calibration of each profiled GPU (pie_lab/sim/calibration.py) on the fit set
(data/kernel_profiles/vidur_fit.csv) and print the `calibration:` figures for
data/hardware_presets.yaml, with the fit's and the held-out set's errors.

    python benchmarks/fit_kernels.py                 # fit h100 and a100, print the YAML figures
    python benchmarks/fit_kernels.py --extract DIR   # rebuild vidur_fit.csv from Vidur's mlp.csv files

The fit minimises the log-ratio of predicted to measured layer sums (and, at a third of the weight,
of each operator) with a soft-L1 loss, for each GEMM tile size in TILES; the best tile is kept.
The held-out set never enters the fit. Needs scipy (not a pie_lab dependency).
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from pie_lab.sim.calibration import ELEMENTWISE, OPERATORS, KernelFit   # noqa: E402
from pie_lab.sim.validation import GPU_PRESETS, PROFILES_DIR, load_profiles   # noqa: E402

TILES = (16, 32, 64, 128)
MAX_TOKENS = 8192


def extract(src: str) -> None:
    """vidur_fit.csv from `<src>/<gpu>/<org>/<model>/mlp.csv`: medians per operator, a token count
    profiled twice averaged."""
    import pandas as pd
    frames = []
    for f in sorted(glob.glob(os.path.join(src, "*", "*", "*", "mlp.csv"))):
        gpu, org, model = f.split(os.sep)[-4:-1]
        d = pd.read_csv(f)
        d = d[d.num_tensor_parallel_workers == 1].groupby("num_tokens", as_index=False).mean(numeric_only=True)
        out = pd.DataFrame({"gpu": gpu, "model": f"{org}/{model}", "source_commit": "7d47513"}, index=d.index)
        for c in ("n_head", "n_kv_head", "n_embd", "n_expanded_embd"):
            out[c] = d[c].astype(int)
        out["use_gated_mlp"], out["num_tokens"] = d.use_gated_mlp.astype(bool), d.num_tokens.astype(int)
        for op in OPERATORS:
            out[op] = d[f"time_stats.{op}.median"].round(5)
        frames.append(out)
    pd.concat(frames).to_csv(PROFILES_DIR / "vidur_fit.csv", index=False)


def _groups(profiles):
    """Profiles by (model, shape): token arrays and measured arrays per operator, for vector evaluation."""
    g = defaultdict(list)
    for p in profiles:
        if p.tokens <= MAX_TOKENS:
            g[(p.model, p.shape)].append(p)
    return [(shape, np.array([p.tokens for p in ps]), {op: np.array([p.measured_ms.get(op, np.nan) for p in ps])
                                                        for op in OPERATORS}) for (_, shape), ps in g.items()]


def _fit_of(x, tile: int, **extra) -> KernelFit:
    ew = {op: (float(np.exp(x[4 + 2 * i])), float(np.exp(x[5 + 2 * i]))) for i, op in enumerate(ELEMENTWISE)}
    return KernelFit(float(np.exp(x[0])), float(np.exp(x[1])), float(np.exp(x[2])), float(np.exp(x[3])) + 1.0,
                     tile, ew, source="fit in progress", **extra)


def _residuals(x, tile, groups):
    fit, res = _fit_of(x, tile), []
    for shape, tokens, measured in groups:
        pred = {op: t * 1e3 for op, t in fit.operator_times(shape, tokens).items()}
        present = [op for op in OPERATORS if not np.isnan(measured[op][0])]
        total_p = sum(pred[op] for op in present)
        total_m = sum(measured[op] for op in present)
        res.append(np.log(total_p / total_m))
        res.extend(0.33 * np.log(np.maximum(pred[op], 1e-6) / measured[op]) for op in present)
    return np.concatenate(res)


def fit_gpu(profiles) -> tuple[KernelFit, float]:
    from scipy.optimize import least_squares
    groups = _groups(profiles)
    x0 = np.array([np.log(500.0), np.log(2000.0), np.log(5.0), np.log(2.0)] + [np.log(4.0), np.log(0.01)] * len(ELEMENTWISE))
    best = None
    for tile in TILES:
        sol = least_squares(_residuals, x0, args=(tile, groups), loss="soft_l1", f_scale=0.1)
        if best is None or sol.cost < best[1]:
            best = (_fit_of(sol.x, tile), sol.cost)
    return best


def _errors(fit: KernelFit, profiles, tokens=None) -> dict:
    errs = []
    for p in profiles:
        if tokens is None or p.tokens in tokens:
            pred = sum(t for op, t in fit.operator_times(p.shape, p.tokens).items() if op in p.measured_ms) * 1e3
            errs.append(abs(pred / p.total_ms - 1.0))
    return {"mae": round(float(np.mean(errs)), 4), "worst": round(float(np.max(errs)), 4), "points": len(errs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--extract", metavar="DIR", help="rebuild vidur_fit.csv from Vidur's profiling folder")
    args = ap.parse_args()
    if args.extract:
        extract(args.extract)
    fit_set, held = load_profiles("fit"), load_profiles("held-out")
    from pie_lab.sim.validation import VALIDATION_TOKENS
    for gpu, preset in GPU_PRESETS.items():
        mine = [p for p in fit_set if p.gpu == gpu]
        fit, cost = fit_gpu(mine)
        print(f"# {preset} ({gpu}): tile {fit.gemm_tile}, cost {cost:.3f}")
        print(f"#   fit set, every token count <= {MAX_TOKENS}: {_errors(fit, [p for p in mine if p.tokens <= MAX_TOKENS])}")
        print(f"#   fit set, validation counts: {_errors(fit, mine, VALIDATION_TOKENS)}")
        other = [p for p in held if p.gpu == gpu]
        if other:
            print(f"#   held-out ({', '.join(sorted({p.model for p in other}))}): {_errors(fit, other)}")
        print(f"    gemm_tflops: {fit.gemm_tflops:.1f}\n    gemm_gbps: {fit.gemm_gbps:.1f}\n"
              f"    gemm_fixed_us: {fit.gemm_fixed_us:.2f}\n    gemm_sharpness: {fit.gemm_sharpness:.3f}\n"
              f"    gemm_tile: {fit.gemm_tile}\n    elementwise:")
        for op, (a, b) in fit.elementwise.items():
            print(f"      {op}: [{a:.3f}, {b:.6f}]")


if __name__ == "__main__":
    main()
