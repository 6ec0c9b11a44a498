"""The one prepared GPU check: CUDA tests, then the key benchmarks, printed as a table (< 5 min on an H200).

    python benchmarks/gpu_check.py [--quick] [--json OUT.json] [--skip-tests]

Sections (each guarded: a failure prints its error and the rest goes on):
  tests      pytest -m cuda (tests/test_cuda.py and the Triton kernel test)
  link       pinned host-to-device / device-to-host bandwidth, 1 GiB and 2 MiB copies
  decode     OPT-13B shape, fp16, one decode step at context 1024, batch 8/32/64: pie_lab (no swapping)
  hf         transformers on the same shape: GPU time per step and synchronised step; offloaded cache
  stream     pie_lab full offload (every full block on the host), batch 8: step vs link floor and vs
             transformers' DynamicCache(offloading=True); budget at the link limit vs no swapping
  controller pie_lab with the adaptive controller on a ShareGPT-like load: chosen vs link-limited budget
  sim        the H200 sim preset's prediction of the decode steps above (calibration check)
Record the printed figures in benchmarks/RESULTS.md with the date, the card and this command.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pie_lab import EngineConfig, SamplingParams, named_spec  # noqa: E402
from pie_lab.core.plan import SeqWork, StepPlan, StreamPlan  # noqa: E402
from pie_lab.executors.base import create_executor  # noqa: E402

MODEL, CTX, BS = "opt-13b", 1024, 16
ROWS: list[tuple[str, str, str]] = []


def row(what: str, figure: str, note: str = "") -> None:
    ROWS.append((what, figure, note))
    print(f"  {what:<58} {figure:>14}  {note}", flush=True)


def section(name: str, fn, *args) -> None:
    print(f"\n== {name} ==", flush=True)
    t = time.perf_counter()
    try:
        fn(*args)
    except Exception as exc:  # keep going: one broken section must not hide the others
        traceback.print_exc()
        row(f"{name}: FAILED", type(exc).__name__, str(exc)[:80])
    print(f"  ({time.perf_counter() - t:.1f} s)", flush=True)


def free() -> None:
    gc.collect()
    torch.cuda.empty_cache()


# -- tests -------------------------------------------------------------------------------------
def run_tests() -> None:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda or not cuda", "tests/test_cuda.py",
           "tests/test_model_forward.py", "-k", "cuda or triton", "-p", "no:cacheprovider"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    tail = (out.stdout + out.stderr).strip().splitlines()[-1:] or ["(no output)"]
    print("\n".join((out.stdout + out.stderr).strip().splitlines()[-15:]))
    row("CUDA tests", "pass" if out.returncode == 0 else f"rc {out.returncode}", tail[0][:70])


# -- link --------------------------------------------------------------------------------------
def bandwidth(nbytes: int, chunk: int, h2d: bool) -> float:
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    src, dst = (host, dev) if h2d else (dev, host)
    for _ in range(2):
        dst.copy_(src, non_blocking=True)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for off in range(0, nbytes, chunk):
        dst[off:off + chunk].copy_(src[off:off + chunk], non_blocking=True)
    torch.cuda.synchronize()
    return nbytes / (time.perf_counter() - t) / 1e9


def run_link(state: dict) -> None:
    gib = 1 << 30
    state["h2d"] = bandwidth(gib, gib, True)
    row("pinned H2D, 1 GiB copy", f"{state['h2d']:.1f} GB/s")
    row("pinned H2D, 2 MiB copies", f"{bandwidth(gib, 2 << 20, True):.1f} GB/s")
    row("pinned H2D, 64 KiB copies", f"{bandwidth(256 << 20, 64 << 10, True):.1f} GB/s")
    row("pinned D2H, 1 GiB copy", f"{bandwidth(gib, gib, False):.1f} GB/s")
    free()


# -- pie_lab decode ----------------------------------------------------------------------------
def decode_plan(step: int, batch: int, host_per_seq: int = 0, depth: int = 2) -> StepPlan:
    """batch sequences at context CTX; seq i owns GPU blocks [i*nb, (i+1)*nb) and, when streaming,
    its first host_per_seq blocks are host blocks [i*host_per_seq, ...)."""
    nb = CTX // BS
    works, staged = [], []
    for i in range(batch):
        table = list(range(i * nb, (i + 1) * nb))
        for j in range(host_per_seq):
            h = i * host_per_seq + j
            table[j] = ~h
            staged.append(h)
        works.append(SeqWork(i, (5,), CTX - 1, tuple(table), True, SamplingParams(), 0))
    stream = StreamPlan.build(depth, staged) if staged else None
    return StepPlan(step, tuple(works), stream=stream)


def time_steps(ex, plans, warmup: int = 2) -> tuple[float, object]:
    for p in plans[:warmup]:
        ex.execute(p)
    times, out = [], None
    for p in plans[warmup:]:
        t = time.perf_counter()
        out = ex.execute(p)
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def make_executor(num_gpu_blocks: int, num_host_blocks: int, depth: int = 2):
    cfg = EngineConfig(block_size=BS, dtype="float16", prefetch_depth=depth, policy="pie",
                       num_gpu_blocks=num_gpu_blocks, num_host_blocks=num_host_blocks)
    ex = create_executor("cuda", MODEL, cfg)
    ex.initialize(num_gpu_blocks, num_host_blocks)
    return ex


def run_decode(state: dict, quick: bool) -> None:
    spec = named_spec(MODEL)
    block = spec.kv_block_bytes(BS, "float16")
    t = time.perf_counter()
    ex = make_executor(8, 0)
    row(f"{MODEL} random weights on the GPU (meta device, one allocation)", f"{time.perf_counter() - t:.1f} s")
    free_bytes, _ = torch.cuda.mem_get_info()
    del ex
    free()
    fits = int((free_bytes - 4 * (1 << 30)) // block)
    nb = CTX // BS
    batches = [b for b in ((8, 32) if quick else (8, 32, 64)) if b * nb <= fits]
    ex = make_executor(max(batches) * nb, 8 * nb)
    state["decode"] = {}
    for b in batches:
        step, out = time_steps(ex, [decode_plan(s, b) for s in range(7)])
        state["decode"][b] = step
        layer = statistics.median(l.compute_end - l.compute_start for l in out.timing.layers)
        state.setdefault("layer_compute", {})[b] = layer
        row(f"pie_lab decode step, batch {b}, ctx {CTX} (synchronised)", f"{step * 1e3:.1f} ms",
            "target <= 16 ms at batch 32 (H200)" if b == 32 else "")
    state["executor"] = ex


def run_stream(state: dict) -> None:
    ex = state.pop("executor")
    spec = named_spec(MODEL)
    nb = CTX // BS
    layer_block = spec.kv_block_bytes(BS, "float16") // spec.num_layers
    full = nb - 1
    step, out = time_steps(ex, [decode_plan(s, 8, host_per_seq=full) for s in range(7)])
    kv_bytes = 8 * full * spec.kv_block_bytes(BS, "float16")
    floor = kv_bytes / (state["h2d"] * 1e9)
    busy = sum(l.copy_time for l in out.timing.layers)
    state["full_offload"] = step
    row("streamed H2D throughput (full offload, batch 8)", f"{out.timing.stream_bytes / busy / 1e9:.1f} GB/s",
        f">= 90% of {state['h2d']:.1f}")
    row("full offload step, batch 8, ctx 1024", f"{step * 1e3:.1f} ms",
        f"link floor {floor * 1e3:.1f} ms; ratio {step / floor:.2f} (target <= 1.1)")
    no_swap = state["decode"][8]
    per_layer = state["layer_compute"][8]
    limit = int(per_layer * state["h2d"] * 1e9 / layer_block)
    host_per_seq = max(1, min(full, limit // 8))
    step_l, out_l = time_steps(ex, [decode_plan(s, 8, host_per_seq=host_per_seq) for s in range(9)])
    row(f"budget at the link limit ({8 * host_per_seq} blocks), batch 8", f"{step_l * 1e3:.1f} ms",
        f"{step_l / no_swap:.3f}x no swap (target <= 1.03); stall {out_l.timing.stall * 1e3:.2f} ms")
    state["link_limit_blocks"] = 8 * host_per_seq
    del ex
    free()


# -- transformers ------------------------------------------------------------------------------
def hf_model():
    from transformers import OPTConfig, OPTForCausalLM
    from pie_lab.model_spec import NAMED_SHAPES
    cfg = {k: v for k, v in NAMED_SHAPES[MODEL].items() if k not in ("model_type", "_name_or_path")}
    config = OPTConfig(**cfg)
    with torch.device("meta"):
        model = OPTForCausalLM(config)
    model = model.to_empty(device="cuda").half().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model


def hf_decode(model, batch: int, offloading: bool, steps: int = 6) -> tuple[float, float]:
    from transformers import DynamicCache
    ids = torch.randint(3, 50000, (batch, CTX - 1), device="cuda")
    cache = DynamicCache(config=model.config, offloading=offloading) if offloading else DynamicCache()
    with torch.inference_mode():
        out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        nxt = out.logits[:, -1:].argmax(-1)
        for _ in range(2):
            out = model(input_ids=nxt, past_key_values=out.past_key_values, use_cache=True)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            out = model(input_ids=nxt, past_key_values=out.past_key_values, use_cache=True)
        end.record()
        torch.cuda.synchronize()
        gpu = start.elapsed_time(end) / 1e3 / steps
        t = time.perf_counter()
        for _ in range(steps):
            out = model(input_ids=nxt, past_key_values=out.past_key_values, use_cache=True)
            out.logits[:, -1].argmax(-1).tolist()
        synced = (time.perf_counter() - t) / steps
    return gpu, synced


def run_hf(state: dict, quick: bool) -> None:
    model = hf_model()
    for b in sorted(state.get("decode", {8: 0})):
        try:
            gpu, synced = hf_decode(model, b, False)
        except torch.OutOfMemoryError:
            row(f"transformers decode, batch {b}", "OOM")
            free()
            continue
        ours = state.get("decode", {}).get(b)
        row(f"transformers decode, batch {b}: GPU time / synchronised", f"{gpu * 1e3:.1f} / {synced * 1e3:.1f} ms",
            f"pie_lab {ours / synced:.2f}x of synchronised" if ours else "")
        free()
    gpu, synced = hf_decode(model, 8, True, steps=3)
    full = state.get("full_offload")
    row("transformers DynamicCache(offloading=True), batch 8", f"{synced * 1e3:.1f} ms",
        f"pie_lab full offload {synced / full:.2f}x faster (target >= 2)" if full else "")
    del model
    free()


# -- controller --------------------------------------------------------------------------------
def run_controller(state: dict, quick: bool) -> None:
    from pie_lab import ControllerConfig, create_engine
    from pie_lab.workloads import sharegpt_like
    spec = named_spec(MODEL)
    wl = sharegpt_like(96, seed=0, arrival="offline", vocab_size=spec.vocab_size, max_model_len=2048)
    eng = create_engine(MODEL, "cuda", policy="pie", offload="eager", dtype="float16", block_size=BS, num_gpu_blocks=1200,
                        num_host_blocks=4000, max_num_seqs=64, max_num_batched_tokens=4096,
                        controller=ControllerConfig(enabled=True))
    for r in wl.requests:
        eng.add_request(r.prompt_token_ids, SamplingParams(max_tokens=r.max_tokens, ignore_eos=True))
    t = time.perf_counter()
    limit_s = 40 if quick else 90
    while eng.has_unfinished() and eng.metrics.totals["iterations"] < 400 and time.perf_counter() - t < limit_s:
        eng.step()
    it = eng.metrics.iterations_df()
    tail = it.iloc[len(it) // 2:]
    tail = tail[tail["decode_tokens"] == tail["batch_size"]]
    decisions = eng.metrics.events_df().query("kind == 'controller'")
    predicted = decisions["predicted"].dropna().iloc[-1] if "predicted" in decisions else float("nan")
    row("controller: iterations run / decisions", f"{len(it)} / {int(decisions['count'].sum())}")
    row("controller: chosen budget vs predicted link limit", f"{eng.config.swap_budget_blocks} / {predicted:.0f}",
        "target within 10%")
    row("controller: stall share, second half (decode steps)",
        f"{tail['stall'].sum() / max(tail['duration'].sum(), 1e-9):.3%}", "target <= 3%")
    del eng
    free()


# -- sim ---------------------------------------------------------------------------------------
def run_sim(state: dict) -> None:
    from pie_lab.executors.sim import SimExecutor
    cfg = EngineConfig(block_size=BS, dtype="float16", hardware="H200")
    for b, measured in sorted(state.get("decode", {}).items()):
        sim = SimExecutor(MODEL, cfg)
        sim.initialize(b * (CTX // BS), 0)
        predicted = sim.execute(decode_plan(0, b)).timing.duration
        row(f"sim (H200 preset) vs cuda, decode batch {b}", f"{predicted * 1e3:.1f} / {measured * 1e3:.1f} ms",
            f"error {predicted / measured - 1:+.1%} (target within 15%)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer batch sizes, shorter controller run")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--json", help="also write the table here")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU visible: nothing to check here (the script is for a GPU machine)")
        return 2
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB", flush=True)
    state: dict = {}
    t0 = time.perf_counter()
    if not args.skip_tests:
        section("tests", run_tests)
    section("link", run_link, state)
    section("decode", run_decode, state, args.quick)
    if "executor" in state:
        section("stream", run_stream, state)
    section("hf", run_hf, state, args.quick)
    section("controller", run_controller, state, args.quick)
    section("sim", run_sim, state)
    print(f"\n== summary ({torch.cuda.get_device_name()}, {time.perf_counter() - t0:.0f} s) ==")
    for what, figure, note in ROWS:
        print(f"| {what} | {figure} | {note} |")
    if args.json:
        Path(args.json).write_text(json.dumps([dict(what=w, figure=f, note=n) for w, f, n in ROWS], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
