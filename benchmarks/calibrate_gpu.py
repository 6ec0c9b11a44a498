"""Measure this CUDA machine and write a calibrated hardware preset (same schema as data/hardware_presets.yaml).

    python benchmarks/calibrate_gpu.py --out calibrated.yaml [--base H200] [--name my-h200] [--quick]

Measured: HBM copy rate, bf16/fp16/fp32 matmul rate, pinned H2D/D2H bandwidth (2 MiB and 1 GiB
copies), fixed cost per copy call, per-kernel launch gap, host memory copy rate, GPU memory.
Datasheet peaks come from --base (with their sources); figures not measured here keep the base's
value and source. The link figures written are the 1 GiB rates; the 2 MiB rates go in the sources.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pie_lab.sim.hardware import Hardware, load_preset  # noqa: E402

GiB, MiB = 2**30, 2**20


def gpu_time(fn, iters: int, warmup: int = 3) -> float:
    """Median seconds per call of fn, timed with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2]


def matmul_tflops(dtype: torch.dtype, n: int, iters: int) -> float:
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    return 2 * n**3 / gpu_time(lambda: torch.mm(a, b), iters) / 1e12


def hbm_gbps(nbytes: int, iters: int) -> float:
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return 2 * nbytes / gpu_time(lambda: dst.copy_(src), iters) / 1e9      # read + write


def link_gbps(nbytes: int, total: int, h2d: bool) -> float:
    """Pinned copies of `nbytes` each, `total` bytes in all, back to back on one stream."""
    count = max(1, total // nbytes)
    host = torch.empty(nbytes * count, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(nbytes * count, dtype=torch.uint8, device="cuda")
    pairs = [(dev[i * nbytes:(i + 1) * nbytes], host[i * nbytes:(i + 1) * nbytes]) for i in range(count)]

    def run():
        for d, h in pairs:
            (d.copy_(h, non_blocking=True) if h2d else h.copy_(d, non_blocking=True))
    return nbytes * count / gpu_time(run, 5, warmup=2) / 1e9


def copy_call_us(nbytes: int = 4096, count: int = 2000) -> float:
    """Fixed cost of one small pinned H2D copy call, in microseconds."""
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    return gpu_time(lambda: [dev.copy_(host, non_blocking=True) for _ in range(count)], 5) / count * 1e6


def kernel_gap_us(count: int = 2000) -> float:
    x = torch.zeros(16, device="cuda")
    return gpu_time(lambda: [x.add_(1.0) for _ in range(count)], 5) / count * 1e6


def host_copy_gbps(nbytes: int) -> float:
    src = torch.empty(nbytes, dtype=torch.uint8).fill_(1)
    dst = torch.empty_like(src)
    dst.copy_(src)
    start = time.perf_counter()
    for _ in range(3):
        dst.copy_(src)
    return 2 * 3 * nbytes / (time.perf_counter() - start) / 1e9


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="where to write the calibrated preset YAML")
    ap.add_argument("--base", default="H200", help="preset giving datasheet peaks and unmeasured figures")
    ap.add_argument("--name", default=None, help="preset name (default: the device name)")
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer iterations")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("calibrate_gpu.py needs a CUDA GPU; none is visible", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    base = load_preset(args.base)
    device = torch.cuda.get_device_name()
    where = f"measured on {device} {datetime.date.today().isoformat()} by benchmarks/calibrate_gpu.py"
    big, n, iters = (256 * MiB, 4096, 10) if args.quick else (GiB, 8192, 20)

    m: dict[str, float] = {}
    src: dict[str, str] = {}
    m["tflops_16bit"] = max(matmul_tflops(torch.bfloat16, n, iters), matmul_tflops(torch.float16, n, iters))
    src["tflops_16bit"] = f"{where} (best of bf16/fp16 {n}^3 matmul)"
    m["tflops_fp32"] = matmul_tflops(torch.float32, n // 2, iters)
    src["tflops_fp32"] = f"{where} (fp32 {n // 2}^3 matmul, TF32 off)"
    m["hbm_gbps"] = hbm_gbps(big, iters)
    src["hbm_gbps"] = f"{where} (device copy of {big // MiB} MiB, read + write counted)"
    for key, h2d in (("h2d_gbps", True), ("d2h_gbps", False)):
        m[key] = link_gbps(big, big, h2d)
        small = link_gbps(2 * MiB, big, h2d)
        src[key] = f"{where} (pinned, {big // MiB} MiB copies; 2 MiB copies: {small:.1f} GB/s)"
    m["link_latency_us"] = copy_call_us()
    src["link_latency_us"] = f"{where} (4 KiB pinned H2D copy calls back to back)"
    m["layer_overhead_us"] = 8 * kernel_gap_us()
    src["layer_overhead_us"] = f"{where} (8 x the per-kernel gap of back-to-back tiny kernels)"
    m["host_memory_gbps"] = host_copy_gbps(big)
    src["host_memory_gbps"] = f"{where} (torch CPU copy of {big // MiB} MiB, read + write counted)"
    m["gpu_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / GiB
    src["gpu_memory_gib"] = f"{where} (torch.cuda.get_device_properties total_memory)"

    d = base.to_dict()
    for key, value in m.items():
        peak = key + "_peak"
        if peak in d and value > d[peak]:
            print(f"warning: measured {key}={value:.1f} exceeds the base preset's {peak}={d[peak]}: "
                  f"is --base the right card? Raising the peak to the measurement.", file=sys.stderr)
            d[peak] = value
            d["sources"][peak] = f"{where} (measurement above the datasheet figure of --base {args.base})"
        d[key] = round(value, 3)
        d["sources"][key] = src[key]
    d["name"] = args.name or device.replace(" ", "-")
    d["description"] = f"{device}, calibrated from base preset {base.name}"
    hw = Hardware.from_dict(d)
    hw.to_yaml(args.out)
    for key in m:
        print(f"{key:20s} {m[key]:10.2f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
