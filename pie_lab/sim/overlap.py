"""The streaming schedule as arithmetic: when each layer's copy and compute run, and the stalls.

Rules (the same the real executors follow):
- the link carries one copy at a time, in layer order;
- the copy for layer l may start once its staging slot (l % depth) is free, i.e. once layer
  l - depth has finished computing (layers < depth may start at once, or were prefetched
  during the previous step: `prestaged`);
- layer l computes after layer l-1 and after its copy has landed; the gap is its stall.
Used by the sim executor, and by tests to predict what the emulated link must show.
"""
from __future__ import annotations

from typing import Sequence

from ..core.timing import NAN, LayerTiming


def schedule_layers(compute: Sequence[float], copy: Sequence[float], depth: int,
                    layer_bytes: Sequence[int] | None = None, prestaged: int = 0,
                    start: float = 0.0) -> list[LayerTiming]:
    """compute[l], copy[l]: seconds for layer l (copy 0 means nothing to move)."""
    rows = zip(*schedule_columns(compute, copy, depth, prestaged, start))
    return [LayerTiming(l, *row, bytes=layer_bytes[l] if layer_bytes else 0) for l, row in enumerate(rows)]


def schedule_columns(compute: Sequence[float], copy: Sequence[float], depth: int, prestaged: int = 0,
                     start: float = 0.0) -> tuple[list[float], ...]:
    """schedule_layers as columns, the LayerTiming fields it sets (the sim keeps a step's layers
    as columns): compute_start, compute_end, copy_issue, copy_start, copy_end, wait."""
    n = len(compute)
    begins, ends, waits = [0.0] * n, [0.0] * n, [0.0] * n
    issues, c_starts, c_ends = [NAN] * n, [NAN] * n, [NAN] * n
    link_free = t = start
    for l in range(n):
        move = copy[l]
        if move > 0 and l >= prestaged:
            issue = start if l < depth else ends[l - depth]
            c_start = link_free if link_free > issue else issue          # max(issue, link_free)
            link_free = ready = c_start + move
            issues[l], c_starts[l], c_ends[l] = issue, c_start, ready
        else:
            ready = start
        begin = ready if ready > t else t                                # max(t, ready)
        waits[l] = begin - t
        begins[l] = begin
        ends[l] = t = begin + compute[l]
    return begins, ends, issues, c_starts, c_ends, waits
