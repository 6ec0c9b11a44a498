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

from operator import add, sub
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



def schedule_uniform(work: float, move: float, n: int, depth: int, layer_bytes: int, start: float = 0.0,
                     head: int = 0, head_move: float = 0.0) -> StreamedLayers:
    """schedule_columns for n layers that each compute `work` and copy `move` (the first `head`
    layers: `head_move`) with `layer_bytes` each, by the same float operations; layers that copy
    take a loop of three figures, the rest of their columns follow from those."""
    if head and not head_move > 0 and move > 0 and head <= depth and head < n:
        lead = schedule_columns([work] * head, [0.0] * head, depth, start=start)
        begins, ends, c_starts = list(lead.compute_start), list(lead.compute_end), list(lead.copy_start)
        t, link_free, first = ends[-1], start, head
    elif move > 0 and not head:
        begins, ends, c_starts, t, link_free, first = [], [], [], start, start, 0
    else:
        return schedule_columns([work] * n, [head_move] * head + [move] * (n - head), depth,
                                [layer_bytes] * n, start=start)
    for l in range(first, n):
        issue = start if l < depth else ends[l - depth]
        c_start = link_free if link_free > issue else issue
        link_free = c_start + move
        begin = link_free if link_free > t else t
        c_starts.append(c_start)
        begins.append(begin)
        t = begin + work
        ends.append(t)
    issues = (NAN,) * first + (start,) * (min(depth, n) - first) + tuple(ends[:max(0, n - depth)])
    c_ends = (NAN,) * first + tuple(map(add, c_starts[first:], (move,) * (n - first)))
    waits = tuple(map(sub, begins, [start] + ends[:-1]))
    nans, zeros = (NAN,) * n, (0.0,) * n
    return StreamedLayers(tuple(begins), tuple(ends), issues, tuple(c_starts), c_ends, waits,
                          (layer_bytes,) * n, nans, nans, nans, zeros, (0,) * n, zeros)
