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

from ..core.timing import NAN, LayerTiming, StreamedLayers


def schedule_layers(compute: Sequence[float], copy: Sequence[float], depth: int,
                    layer_bytes: Sequence[int] | None = None, prestaged: int = 0,
                    start: float = 0.0) -> list[LayerTiming]:
    """compute[l], copy[l]: seconds for layer l (copy 0 means nothing to move)."""
    return list(schedule_columns(compute, copy, depth, layer_bytes, prestaged, start))


def schedule_columns(compute: Sequence[float], copy: Sequence[float], depth: int,
                     layer_bytes: Sequence[int] | None = None, prestaged: int = 0,
                     start: float = 0.0) -> StreamedLayers:
    """schedule_layers as columns (what the sim keeps per step)."""
    n = len(compute)
    begins, ends, issues, c_starts, c_ends, waits = [], [], [], [], [], []
    link_free = start
    t = start
    for l, (work, move) in enumerate(zip(compute, copy)):
        if move > 0 and l >= prestaged:
            issue = start if l < depth else ends[l - depth]
            c_start = link_free if link_free > issue else issue          # max(issue, link_free)
            link_free = ready = c_end = c_start + move
        else:
            issue = c_start = c_end = NAN
            ready = start
        begin = ready if ready > t else t                                # max(t, ready)
        waits.append(begin - t)
        t = begin + work
        begins.append(begin)
        ends.append(t)
        issues.append(issue)
        c_starts.append(c_start)
        c_ends.append(c_end)
    nbytes = tuple(layer_bytes) if layer_bytes else (0,) * n
    nans, zeros = (NAN,) * n, (0.0,) * n
    return StreamedLayers(tuple(begins), tuple(ends), tuple(issues), tuple(c_starts), tuple(c_ends), tuple(waits),
                          nbytes, nans, nans, nans, zeros, (0,) * n, zeros)
