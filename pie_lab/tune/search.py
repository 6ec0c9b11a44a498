"""Tune for production: Optuna over the knobs deployments tune, on the user's workload and SLO, in
the sim, against the target engine at its own defaults.

    res = tune("opt-30b", engine_options=dict(hardware="GH200", dtype="float16", num_gpu_blocks=400))
    res.table()            # every trial: knobs, goodput, p99 latencies
    res.save("tuned.yaml") # the best config, with how it was found (provenance.tuning)

The baseline (the target's defaults on this GPU class) is trial 0 and the study's first
observation; trials are asked in batches of `batch` and told in order, so a seed gives the same
search whatever the number of workers. The export part asks, for the best point the target can
run itself, which knobs earn their place: each knob differing from the default is reset alone and
kept only if the point beats that by `margin`; the export (defaults plus the earned knobs) is then
run too and must beat the baseline by `margin`, else nothing is exported.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any, Mapping

from ..config import EngineConfig
from ..config_io import Provenance, RunConfig, load_run_config
from ..errors import ConfigError, check_choice, check_float, check_int
from ..export.host_tier import HOST_SHARE, host_memory_gib
from ..sim.calibration import calibration_status
from ..sim.hardware import load_preset
from .defaults import TARGETS, target_defaults
from .result import TuneResult
from .space import SearchSpace, engine_options
from .trials import OBJECTIVES, SLO, Runner, TrialJob, _requests

DEFAULT_TRIALS = 100
DEFAULT_MARGIN = 0.05
DEFAULT_REQUESTS = 200
DEFAULT_WORKLOAD = "sharegpt-v3"   # real ShareGPT V3 requests (the shipped length table without a tokenizer)
EXPORT_KNOBS = ("max_num_seqs", "max_num_batched_tokens", "chunked_prefill", "block_size", "gpu_share", "host_tier")


def tune(config: Any, workload: Any = None, *, target: str = "vllm", engine_options_: Mapping[str, Any] | None = None,
         slo: Any = None, objective: str = "goodput", trials: int = DEFAULT_TRIALS, seed: int = 0,
         workers: int | None = None, batch: int = 4, margin: float = DEFAULT_MARGIN,
         host_memory_gb: float | None = None, policies: tuple[str, ...] | None = None, progress: bool = True,
         workload_description: Mapping[str, Any] | None = None, **engine_kw) -> TuneResult:
    """`config`: a model name, RunConfig, or config file/mapping (the user's setup: hardware, dtype,
    GPU KV pool). `workload`: a `WorkloadSpec`, requests, or None for ShareGPT at the capacity of
    the target at its defaults. `engine_options_`/`engine_kw` override the setup's settings."""
    try:
        import optuna
    except ImportError:
        raise ConfigError("pie_lab.tune needs Optuna: pip install optuna (or pip install 'pie_lab[tune]')") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)      # the progress bar says what the study does
    check_choice("target", target, TARGETS)
    check_choice("objective", objective, OBJECTIVES)
    check_int("trials", trials, 0, 100_000)
    check_int("seed", seed, 0)
    check_int("batch", batch, 1, 1024)
    check_float("margin", margin, 0.0, 10.0)
    rc = RunConfig(config, "sim") if isinstance(config, str) else load_run_config(config)
    if rc.executor != "sim":
        rc = RunConfig(rc.model, "sim", rc.engine)          # tuning runs hundreds of configs: the sim's job
    base = rc.engine.replace(**{**dict(engine_options_ or {}), **engine_kw})
    slo = SLO.parse(slo)
    defaults = target_defaults(target, base.hardware)
    space = SearchSpace.for_target(defaults, policies)
    if host_memory_gb is None:
        host_gib, host_src = host_memory_gib(base.hardware)
    else:
        host_gib, host_src = check_float("host_memory_gb", host_memory_gb, 0.0, 1e6, lo_open=True), "given"
    host_limit = HOST_SHARE * host_gib * 2**30
    runner = Runner(workers)
    cache: dict = {}

    def run(points: list[dict], wl) -> list[dict]:
        keys = [_key(p) for p in points]
        todo = {k: p for k, p in zip(keys, points) if (k, wl) not in cache}
        jobs = [TrialJob(rc.model, "sim", engine_options(p, base, rc.model, defaults.values, host_limit), wl)
                for p in todo.values()]
        for k, r in zip(todo, runner.map(jobs, slo, objective)):
            cache[(k, wl)] = r                # wl: a WorkloadSpec or a tuple of requests, both hashable
        return [cache[(k, wl)] for k in keys]

    try:
        wl, wl_desc = _workload(workload, rc.model, space.defaults, run, workload_description)
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        rows = []
        base_res = run([dict(space.defaults)], wl)[0]
        study.add_trial(optuna.trial.create_trial(params=_params(space, space.defaults),
                                                  distributions=_dists(space), value=base_res["goodput"]))
        rows.append({"trial": 0, "baseline": True, **space.defaults, **base_res})
        bar = _bar(trials, progress)
        try:
            done = 0
            while done < trials:
                asked = [study.ask() for _ in range(min(batch, trials - done))]
                points = [space.suggest(t) for t in asked]
                for t, p, r in zip(asked, points, run(points, wl)):
                    study.tell(t, r["goodput"])
                    rows.append({"trial": t.number, "baseline": False, **p, **r})
                done += len(asked)
                if bar is not None:
                    bar.update(len(asked))
                    bar.set_postfix(best=f"{study.best_value:.3g}")
        finally:
            if bar is not None:
                bar.close()
        importance = _importance(optuna, study)
        best = max(rows, key=lambda r: (r["goodput"], r["baseline"]))
        exp = _earn(space, rows, base_res, run, wl, margin)
    finally:
        runner.close()
    opts = engine_options(exp["point"], base, rc.model, defaults.values, host_limit)
    exp.update(gpu_blocks=opts["num_gpu_blocks"], host_blocks=opts["num_host_blocks"], block_size=opts["block_size"])
    knobs = {k: best[k] for k in space.defaults}
    tuned = EngineConfig.from_options(**engine_options(knobs, base, rc.model, defaults.values, host_limit))
    tuning = {
        "target": target, "engine": defaults.engine, "gpu_class": defaults.gpu_class,
        "gpu_class_rule": defaults.gpu_class_rule, "objective": objective, "slo": slo.text(), "margin": margin,
        "trials": trials, "seed": seed, "batch": batch, "search_space": space.describe(),
        "calibration": calibration_status(load_preset(base.hardware), base.dtype), "defaults": dict(space.defaults),
        "default_sources": dict(defaults.sources), "host_memory_gib": host_gib, "host_memory_source": host_src,
        "setup": {k: v for k, v in base.to_dict().items() if k in ("hardware", "dtype", "num_gpu_blocks",
                                                                     "gpu_kv_limit_gb", "max_model_len")},
        "baseline": _metrics(base_res), "best": {"point": knobs, **_metrics(best)},
        "importance": importance, "export": exp}
    prov = Provenance(workload=wl_desc, hardware=base.hardware, executor="sim",
                      throughput={"goodput_per_s": best["goodput"], "requests_per_s": best["throughput"],
                                  "tokens_per_s": best["tokens_per_s"]},
                      latency={k: v for k, v in best.items() if k.endswith("_s")}, trajectory=None,
                      pie_lab_version=_version(), date=datetime.now().isoformat(timespec="seconds"),
                      notes=f"tuned for {defaults.engine} ({target}); the best of {trials} trials", tuning=tuning)
    return TuneResult(RunConfig(rc.model, "sim", tuned, prov), rows)


def _workload(workload, model, default_point, run, description):
    """The workload and its description. None: ShareGPT; a generator without a rate: Poisson arrivals
    at the capacity of the target at its defaults (its offline throughput), never all at once."""
    from ..bench.sweep import WorkloadSpec
    if workload is None:
        workload = WorkloadSpec(DEFAULT_WORKLOAD, DEFAULT_REQUESTS, None, 0)
    desc = {}
    if isinstance(workload, WorkloadSpec):
        if workload.rate is None and not workload.kind.endswith((".json", ".jsonl")):
            offline = run([dict(default_point)], workload)[0]
            capacity = offline["throughput"]
            if capacity <= 0:
                raise ConfigError(f"the target at its defaults finished no request of the workload offline "
                                  f"({offline['error'] or 'no request finished'}); give a workload rate")
            workload = replace(workload, rate=round(capacity, 3))
            desc["rate_from"] = "the capacity of the target at its defaults (its offline throughput)"
        desc = {**workload.describe(), **desc, **_describe_requests(_requests(workload, model))}
    else:
        workload = tuple(_requests(workload, model))
        desc.update(_describe_requests(workload))
    desc.update(dict(description or {}))
    return workload, desc


def _describe_requests(reqs) -> dict:
    return {"num_requests": len(reqs), "mean_prompt_len": sum(r.prompt_len for r in reqs) / len(reqs),
            "mean_max_tokens": sum(r.max_tokens for r in reqs) / len(reqs),
            "span_s": max(r.arrival_time for r in reqs)}


def _earn(space: SearchSpace, rows: list[dict], base_res: dict, run, wl, margin: float) -> dict:
    """Which knobs of the best point the target can run beat the default by `margin`, with evidence."""
    d = space.defaults
    cands = [r for r in rows if space.exportable(r)]
    best = max(cands, key=lambda r: (r["goodput"], r["baseline"]))
    point = {k: best[k] for k in d}
    differ = [k for k in EXPORT_KNOBS if _get(point, k) != _get(d, k)]
    without = run([_set(point, k, _get(d, k)) for k in differ], wl) if differ else []
    earned, left = {}, {}
    for k, r in zip(differ, without):
        if best["goodput"] > 0 and best["goodput"] >= (1 + margin) * r["goodput"]:
            earned[k] = {"value": _get(point, k), "default": _get(d, k), "goodput_with": best["goodput"],
                         "goodput_without": r["goodput"]}
        else:
            left[k] = {"value": _get(d, k), "tuned": _get(point, k), "goodput_with": best["goodput"],
                       "goodput_without": r["goodput"]}
    for k in EXPORT_KNOBS:
        if k not in differ:
            left[k] = {"value": _get(d, k)}
    exported = dict(d)
    for k in earned:
        exported = _set(exported, k, _get(point, k))
    got = run([exported], wl)[0] if earned else base_res
    if earned and got["goodput"] < (1 + margin) * base_res["goodput"]:
        reason = (f"defaults plus the earned knobs predict {got['goodput']:.4g}/s, less than {1 + margin:g}x the "
                  f"defaults' {base_res['goodput']:.4g}/s: nothing is exported")
        left.update({k: {"value": v["default"], "tuned": v["value"], "goodput_with": v["goodput_with"],
                         "goodput_without": v["goodput_without"]} for k, v in earned.items()})
        earned, got, exported = {}, base_res, dict(d)
    elif not earned:
        reason = f"no knob beats the target's default by {margin:.0%}: the defaults stay"
    else:
        reason = f"each exported knob beats its default by at least {margin:.0%}, and the export beats the defaults"
    return {"point": dict(exported), "earned": earned, "left_at_default": left, "goodput": got["goodput"],
            "baseline_goodput": base_res["goodput"], "best_target_point": dict(point),
            "best_target_goodput": best["goodput"], "reason": reason}


def _get(point: Mapping[str, Any], knob: str):
    if knob == "host_tier":
        return "none" if point["policy"] == "recompute" else f"{point['policy']} x{point['host_tier_ratio']}"
    return point[knob]


def _set(point: Mapping[str, Any], knob: str, value) -> dict:
    p = dict(point)
    if knob != "host_tier":
        p[knob] = value
    elif value == "none":
        p["policy"] = "recompute"
    else:
        policy, ratio = value.split(" x")
        p["policy"], p["host_tier_ratio"] = policy, int(ratio)
    return p


def _key(p: Mapping[str, Any]) -> tuple:
    q = dict(p)
    if q["policy"] == "recompute":
        q["host_tier_ratio"] = 0
    if q["policy"] not in ("pie", "hybrid"):
        q["prefetch_depth"] = 0
    return tuple(sorted(q.items()))


def _params(space: SearchSpace, point) -> dict:
    return {k: point[k] for k in space.choices}


def _dists(space: SearchSpace) -> dict:
    from optuna.distributions import CategoricalDistribution
    return {k: CategoricalDistribution(list(c)) for k, c in space.choices.items()}


def _importance(optuna, study) -> dict:
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")      # "importances will be equal" when every trial scores alike
            found = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
        return {k: float(v) for k, v in found.items()}
    except (RuntimeError, ValueError, ZeroDivisionError):     # too few trials, or all scored the same
        return {}


def _metrics(r: Mapping[str, Any]) -> dict:
    return {k: r[k] for k in ("goodput", "throughput", "slo_met", "ttft_p99_s", "tpot_p99_s", "e2e_p99_s", "error")
            if k in r}


def _bar(total: int, progress: bool):
    if not progress or total == 0:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, unit="trial", desc="tune")


def _version() -> str:
    from .. import __version__
    return __version__
