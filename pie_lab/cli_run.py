"""`pie-lab run` (a workload, or text prompts) and `pie-lab bench` (policies compared, or a sweep)."""
from __future__ import annotations

import sys

from .cli_args import (check_out, csv_list, default_to_scenario, run_config, scenario_of, show, spec_of,
                       workload, write_table)
from .errors import ConfigError
from .model_spec import spec_from_model


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
