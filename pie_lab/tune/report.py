"""The search drawn: every trial's goodput against its p99 latency, the Pareto front, the target's
defaults and the chosen point; which knobs mattered; the best goodput as the trials went on.
`charts(result)` is what notebook 05 shows; `write_report` puts it with the summary in one HTML file
that opens with no network (Vega inline)."""
from __future__ import annotations

import html
from pathlib import Path

LATENCY = "ttft_p99_s"


def pareto(df, x: str = LATENCY, y: str = "goodput"):
    """Rows no other row beats on both: higher `y` and lower `x` (ties kept once)."""
    front, best = [], -1.0
    for _, row in df.sort_values([x, y], ascending=[True, False]).iterrows():
        if row[y] > best:
            front.append(row)
            best = row[y]
    import pandas as pd
    return pd.DataFrame(front)


def trial_frame(result):
    df = result.table()
    df = df[df["error"].fillna("") == ""].copy()
    chosen = result.tuning["best"]["point"]
    df["point"] = "trial"
    is_chosen = (df[list(chosen)] == list(chosen.values())).all(axis=1)
    df.loc[is_chosen, "point"] = "chosen"
    df.loc[df["baseline"], "point"] = "target defaults"
    df["best_so_far"] = df["goodput"].cummax()
    return df


def charts(result):
    """Altair: trials (goodput vs p99 TTFT) with the Pareto front; knob importance; best so far."""
    import altair as alt
    import pandas as pd
    df = trial_frame(result)
    front = pareto(df)
    t = result.tuning
    tips = ["trial", "policy", "max_num_seqs", "max_num_batched_tokens", "chunked_prefill", "block_size", "gpu_share",
            "host_tier_ratio", "prefetch_depth", "goodput", "throughput", "slo_met", LATENCY, "tpot_p99_s"]
    x = alt.X(f"{LATENCY}:Q", title="p99 time to first token (s)", scale=alt.Scale(type="symlog"))
    y = alt.Y("goodput:Q", title=f"goodput (req/s meeting {t['slo']})")
    dots = alt.Chart(df).mark_point(filled=True, opacity=0.6).encode(
        x=x, y=y, color=alt.Color("policy:N"), tooltip=tips,
        shape=alt.Shape("point:N", title=None, scale=alt.Scale(domain=["trial", "target defaults", "chosen"],
                                                               range=["circle", "square", "diamond"])),
        size=alt.condition(alt.datum.point == "trial", alt.value(40), alt.value(220)))
    line = alt.Chart(front).mark_line(color="black", strokeDash=[4, 3]).encode(x=x, y=y)
    scatter = (line + dots).properties(width=460, height=300,
                                       title=f"{len(df)} trials against {t['engine']} at its defaults; dashed: Pareto front")
    imp = pd.DataFrame({"knob": list(t["importance"]), "importance": list(t["importance"].values())})
    bars = alt.Chart(imp).mark_bar().encode(x=alt.X("importance:Q", title="share of goodput variance (PED-ANOVA)"),
                                            y=alt.Y("knob:N", sort="-x", title=None)).properties(
        width=260, height=200, title="which knobs mattered")
    prog = alt.Chart(df).mark_line(interpolate="step-after").encode(
        x=alt.X("trial:Q"), y=alt.Y("best_so_far:Q", title="best goodput so far")).properties(
        width=260, height=120, title="the search")
    return alt.hconcat(scatter, alt.vconcat(bars, prog))


def write_report(result, path: str | Path) -> Path:
    path = Path(path)
    page = charts(result).to_html(inline=True)
    from ..export import export
    tr = export(result.run_config, result.tuning["target"])
    summary = (f"<h2>pie-lab tune: {html.escape(result.run_config.model)} on "
               f"{html.escape(result.run_config.engine.hardware)}</h2><pre style=\"white-space: pre-wrap; max-width: 70em\">{html.escape(result.summary())}</pre>"
               f"<h3>export</h3><pre style=\"white-space: pre-wrap; max-width: 70em\">{html.escape(tr.report())}</pre>")
    head, body, rest = page.rpartition("<body>")          # the last: the bundled Vega code holds the word too
    page = head + body + summary + rest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path
