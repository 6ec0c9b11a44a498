"""What the CLI's commands share: the run config, the workload and the output table from the options."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from .errors import ConfigError
from .model_spec import spec_from_model

SUMMARY = ["policy", "requests", "requests_per_s", "tokens_per_s", "ttft_p50_s", "tpot_p50_s", "e2e_p50_s",
           "e2e_p99_s", "peak_gpu_blocks", "peak_host_blocks", "stall_share", "preemptions", "squeeze"]


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
