"""Soak: a live runner for a long time, with random knob changes, aborts and injected faults.

Requests arrive at --rate (Poisson) and are checked as they come out: none lost or seen twice,
every token equal to an independent reference (sim: the executor's token function; cpu: a
fresh engine without swapping, for a sample), no block leaked at the end. RSS is printed every
--sample-s seconds; the slope is fitted after the metrics buffers fill (--metrics-mb bounds them).
Targets: 0 leaked, 0 lost, 0 changed, RSS slope < 1 MB/min once the buffers are full.

    python benchmarks/soak.py --executor sim --sim-hours 4        # hours of virtual time
    python benchmarks/soak.py --executor cpu --minutes 10
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pie_lab import ConfigError, LLM, SamplingParams, create_engine   # noqa: E402
from pie_lab.core.metrics import Metrics                        # noqa: E402
from pie_lab.live import LiveRunner                             # noqa: E402
from pie_lab.sources import RateSource                          # noqa: E402
from pie_lab.workloads import Request                           # noqa: E402

ENGINES = {
    "cpu": dict(model="opt-tiny", block_size=4, num_gpu_blocks=96, num_host_blocks=256, max_num_seqs=8,
                policy="pie", swap_budget_blocks=24, offload="eager", link_bandwidth_gbps=2.0,   # copy faults need copies
                controller=dict(enabled=True, warmup_iterations=2, window=4)),
    "sim": dict(model="opt-13b", dtype="float16", num_gpu_blocks=160, num_host_blocks=640, max_num_seqs=16,
                policy="pie", swap_budget_blocks=64, controller=dict(enabled=True, warmup_iterations=2, window=4)),
}
FAULTS = {"cpu": ("layer", "copy", "copy_thread", "controller", "source"),
          "sim": ("execute", "controller", "source")}


class Ledger:
    """Requests issued and returned, in memory bounded by the requests in flight (the soak's own
    bookkeeping must not grow, or it would show in the RSS slope)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.outstanding: set = set()
        self.issued = 0
        self.duplicates = 0
        self.reasons = {r: 0 for r in ("length", "stop", "abort", "error")}

    def issue(self, request_id) -> None:
        with self._lock:
            self.issued += 1
            self.outstanding.add(request_id)

    def returned(self, request_id, reason: str) -> None:
        with self._lock:
            if request_id not in self.outstanding:
                self.duplicates += 1
            self.outstanding.discard(request_id)
            self.reasons[reason] = self.reasons.get(reason, 0) + 1

    @property
    def done(self) -> int:
        return sum(self.reasons.values())


class InjectedFault(RuntimeError):
    pass


class Injector:
    """Faults armed from the soak thread; the wrapped function raises once, where it runs."""

    def __init__(self):
        self._armed: set[str] = set()
        self._lock = threading.Lock()
        self.fired: dict[str, int] = {}

    def arm(self, kind: str) -> None:
        with self._lock:
            self._armed.add(kind)

    def take(self, kind: str) -> bool:
        with self._lock:
            if kind not in self._armed:
                return False
            self._armed.discard(kind)
            self.fired[kind] = self.fired.get(kind, 0) + 1
            return True

    def wrap(self, kind: str, fn, exc=lambda: InjectedFault("injected fault"), only_thread: str | None = None):
        def wrapped(*args, **kwargs):
            if (only_thread is None or threading.current_thread().name == only_thread) and self.take(kind):
                raise exc()
            return fn(*args, **kwargs)
        return wrapped


def buffers_full(m: Metrics) -> bool:
    """The per-step and per-request buffers hold at least 90% of their byte bound."""
    return all(b.nbytes >= 0.9 * b.max_bytes for b in (m.iterations, m.layers, m.requests))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    if len(samples) < 2:
        return float("nan")
    n = len(samples)
    mx = sum(t for t, _ in samples) / n
    my = sum(r for _, r in samples) / n
    var = sum((t - mx) ** 2 for t, _ in samples)
    return 60 * sum((t - mx) * (r - my) for t, r in samples) / var if var else float("nan")


def build(args):
    opts = dict(ENGINES[args.executor])
    model = opts.pop("model")
    engine = create_engine(model, args.executor, **opts)
    engine.metrics = Metrics(max_bytes=int(args.metrics_mb * 2**20))
    vocab = engine.spec.vocab_size
    ledger = Ledger()

    def make(rng, i, t):
        ledger.issue(i)
        prompt = tuple(rng.randrange(3, vocab) for _ in range(rng.randint(4, 48)))
        return Request(i, prompt, rng.randint(4, 64), t)
    source = RateSource(make, args.rate, seed=args.seed)
    return model, engine, source, ledger


def instrument(engine, source, inj: Injector, executor: str) -> None:
    ex = engine.executor
    if executor == "cpu":
        ex.model.layer = inj.wrap("layer", ex.model.layer)
        ex.kv.stage_layer = inj.wrap("copy", ex.kv.stage_layer)        # runs on the link thread
        h2d = ex.streams.h2d
        h2d.inline_bytes = 0                                             # so the copy thread runs every copy
        h2d.duration = inj.wrap("copy_thread", h2d.duration, exc=lambda: SystemExit("copy thread killed"),
                                only_thread="pie-link-h2d")
    else:
        ex.execute = inj.wrap("execute", ex.execute)
    source.due = inj.wrap("source", source.due)
    wrap_controller(engine, inj)


def wrap_controller(engine, inj: Injector) -> None:
    if engine.controller is not None:
        engine.controller.observe = inj.wrap("controller", engine.controller.observe)


def random_knob(rng: random.Random, engine, executor: str) -> tuple[dict, bool]:
    """(change, valid): a knob and a value in range, or (one time in five) out of range."""
    cap_gpu, cap_host = engine.blocks.gpu.capacity, engine.blocks.host.capacity
    valid = [
        ("swap_budget_blocks", rng.randint(0, cap_host // 4)), ("prefetch_depth", rng.randint(1, 4)),
        ("max_num_seqs", rng.randint(2, 16)), ("num_gpu_blocks", rng.randint(cap_gpu * 2 // 3, cap_gpu)),
        ("max_num_batched_tokens", rng.choice([256, 512, 2048])),
    ] + ([("link_bandwidth_gbps", rng.uniform(0.5, 8.0))] if executor == "cpu" else [])
    invalid = [("swap_budget_blocks", -1), ("prefetch_depth", 0), ("max_num_seqs", 0),
               ("num_gpu_blocks", cap_gpu + 1), ("link_bandwidth_gbps", 0.0)]
    if rng.random() < 0.2:
        k, v = rng.choice(invalid)
        return {k: v}, False
    k, v = rng.choice(valid)
    return {k: v}, True


def check_tokens_sim(engine, outputs) -> int:
    ex = engine.executor
    bad = 0
    for o in outputs:
        sid, n = o.metrics["seq_id"], len(o.prompt_token_ids)
        if o.token_ids != [ex.token_for(sid, n + i) for i in range(len(o.token_ids))]:
            bad += 1
    return bad


def check_tokens_cpu(ref: LLM, sample: list[tuple]) -> int:
    """Each sampled (prompt, tokens) (finished, aborted or failed: its tokens so far) against a
    separate engine without swapping that generates exactly as many tokens."""
    if not sample:
        return 0
    outs = ref.generate([list(p) for p, _ in sample],
                        [SamplingParams(max_tokens=len(t), ignore_eos=True) for _, t in sample])
    return sum(tuple(r.token_ids) != t for r, (_, t) in zip(outs, sample))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--executor", choices=("cpu", "sim"), default="sim")
    p.add_argument("--minutes", type=float, default=10.0, help="wall-clock limit (default 10)")
    p.add_argument("--sim-hours", type=float, default=4.0, help="sim: virtual hours to run (default 4)")
    p.add_argument("--rate", type=float, default=None, help="requests/s (default: cpu 10, sim 6)")
    p.add_argument("--sample-s", type=float, default=60.0, help="RSS sample period, wall seconds (default 60)")
    p.add_argument("--knob-every", type=float, default=0.5, help="mean wall seconds between knob changes")
    p.add_argument("--abort-every", type=float, default=1.0, help="mean wall seconds between aborts")
    p.add_argument("--fault-every", type=float, default=5.0, help="mean wall seconds between injected faults")
    p.add_argument("--metrics-mb", type=float, default=8.0, help="metrics buffers' byte bound (default 8 MiB)")
    p.add_argument("--check-every", type=int, default=5, help="cpu: compare every n-th output with a reference")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.rate = args.rate or (10.0 if args.executor == "cpu" else 6.0)
    rng = random.Random(args.seed)

    model, engine, source, ledger = build(args)
    ref = None
    if args.executor == "cpu":
        ref = LLM(model, "cpu", block_size=4, num_gpu_blocks=2048, max_num_seqs=32)
        ref.engine.metrics = Metrics(max_bytes=2**20)   # its records are not looked at
    inj = Injector()
    instrument(engine, source, inj, args.executor)
    runner = LiveRunner(engine, source, keep_outputs=100_000)
    sample: list[tuple] = []
    counts = dict(knobs=0, refused=0, wrong_refusal=0, aborts_asked=0, drained=0, checked=0, changed=0)
    rss: list[tuple[float, float]] = []
    t0 = time.monotonic()
    v0 = engine.clock.now()
    next_sample = 0.0
    nxt = {"knob": rng.expovariate(1 / args.knob_every), "abort": rng.expovariate(1 / args.abort_every),
           "fault": rng.expovariate(1 / args.fault_every)}
    full_at = None
    print(f"soak: {args.executor} executor, {model}, rate {args.rate}/s, metrics bound {args.metrics_mb} MiB; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'wall_min':>8} {'virt_h':>7} {'rss_mb':>8} {'done':>7} {'aborted':>7} {'errored':>7} "
          f"{'faults':>6} {'stalls':>6} {'metrics_mb':>10}")

    def drain(final: bool = False):
        batch = []
        while runner.outputs:
            o = runner.outputs.popleft()
            ledger.returned(o.request_id, o.finish_reason)
            batch.append(o)
        if args.executor == "sim":
            counts["changed"] += check_tokens_sim(engine, batch)
            counts["checked"] += len(batch)
            return
        for o in batch:
            counts["drained"] += 1
            if o.token_ids and counts["drained"] % args.check_every == 0:
                sample.append((tuple(o.prompt_token_ids), tuple(o.token_ids)))
        if len(sample) >= 64 or final:             # checked in batches, then dropped
            counts["changed"] += check_tokens_cpu(ref, sample)
            counts["checked"] += len(sample)
            sample.clear()

    runner.start()
    while True:
        wall = time.monotonic() - t0
        virt = engine.clock.now() - v0
        if wall >= args.minutes * 60 or (args.executor == "sim" and virt >= args.sim_hours * 3600):
            break
        if wall >= next_sample:
            nb = sum(engine.metrics.nbytes.values())
            if full_at is None and buffers_full(engine.metrics):
                full_at = wall
            rss.append((wall, rss_mb()))
            print(f"{wall / 60:8.2f} {virt / 3600:7.3f} {rss[-1][1]:8.1f} {ledger.done:7d} "
                  f"{ledger.reasons['abort']:7d} {ledger.reasons['error']:7d} "
                  f"{runner.fault_count:6d} {int((engine.metrics.events_df()['kind'] == 'stalled').sum()) if len(engine.metrics.events) else 0:6d} "
                  f"{nb / 2**20:10.2f}", flush=True)
            next_sample += args.sample_s
        if wall >= nxt["knob"]:
            change, valid = random_knob(rng, engine, args.executor)
            try:
                runner.set(**change)
                counts["knobs"] += 1
                counts["wrong_refusal"] += not valid
            except ConfigError:
                counts["refused"] += 1
                counts["wrong_refusal"] += valid and "num_gpu_blocks" not in change
            nxt["knob"] += rng.expovariate(1 / args.knob_every)
        if wall >= nxt["abort"]:
            live = engine.requests_in_flight()
            if live:
                counts["aborts_asked"] += runner.abort(rng.choice(live))
            nxt["abort"] += rng.expovariate(1 / args.abort_every)
        if wall >= nxt["fault"]:
            if engine.controller is None:        # a controller fault detached it: attach a fresh one
                engine.attach_controller()
                wrap_controller(engine, inj)
            inj.arm(rng.choice(FAULTS[args.executor]))
            nxt["fault"] += rng.expovariate(1 / args.fault_every)
        drain()
        time.sleep(0.01)

    runner.set(request_rate=0.0)
    idle = runner.wait_idle(timeout=120)
    runner.stop()
    drain(final=True)
    engine.check_blocks()
    leaked = engine.blocks.gpu.num_used + engine.blocks.host.num_used
    lost = len(ledger.outstanding) - runner.rejected
    changed = counts["changed"]
    after = [s for s in rss if s[0] >= (full_at if full_at is not None else args.sample_s * 2)]
    wall = time.monotonic() - t0
    reasons = ledger.reasons
    print()
    print(f"| executor | wall | virtual | requests | finished | aborted | errored | rejected | faults injected "
          f"(contained) | knob changes (refused) | RSS start -> end | slope after buffers full | blocks leaked "
          f"| requests lost | tokens changed |")
    print("|" + "---|" * 15)
    print(f"| {args.executor} | {wall / 60:.1f} min | {(engine.clock.now() - v0) / 3600:.2f} h | {ledger.issued} | "
          f"{reasons['length'] + reasons['stop']} | {reasons['abort']} | {reasons['error']} | {runner.rejected} | "
          f"{sum(inj.fired.values())} {dict(sorted(inj.fired.items()))} ({runner.fault_count}) | "
          f"{counts['knobs']} ({counts['refused']}) | {rss[0][1]:.0f} -> {rss_mb():.0f} MB | "
          f"{slope_mb_per_min(after):+.2f} MB/min ({len(after)} samples"
          f"{', buffers full at %.1f min' % (full_at / 60) if full_at is not None else ', buffers never full'}) | "
          f"{leaked} | {lost} | {changed} of {counts['checked']} checked |")
    if ledger.duplicates or counts["wrong_refusal"] or not idle:
        print(f"problems: {ledger.duplicates} returned twice, {counts['wrong_refusal']} knob values judged wrongly, "
              f"idle at the end: {idle}")
    ok = leaked == 0 and lost == 0 and changed == 0 and idle and not ledger.duplicates
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
