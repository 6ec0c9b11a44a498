"""`pie-lab tune` (the knob search in the sim) and `pie-lab export` (a config in another engine's terms)."""
from __future__ import annotations

import sys
from pathlib import Path

from .cli_args import check_out, run_config, scenario_of


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
        setting = ", ".join(f"{k}={v}" for k, v in sc.engine.items())
        print(f"pie-lab: tuning on the default scenario's setup ({sc.name}: {sc.model}, {setting}); workload: "
              "--workload/--rate, or else real ShareGPT V3 at the capacity of the target's defaults", file=sys.stderr)
    rc = run_config(args)
    if args.executor is not None and rc.executor != "sim":
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
