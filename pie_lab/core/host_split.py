"""Policy hybrid's within-layer split of a decode layer, and the rule for when it pays.

Unsplit, a decode layer runs QKV, attention, merge, post-attention (output projection and MLP) for
all rows: the host's attention must end by the end of the device's attention, or the device waits.
Split, the rows with no host-computed share (sub-batch D) run their post-attention linears while
the host still attends for the rows with one (sub-batch H); then H's partials merge and H runs its
own post-attention pass. The host's window grows by D's post-attention time; the price is the
second, smaller pass: memory-bound linears read the layer's weights again.

The rule (`split_pays`), the same for every executor: split when the layer ends sooner, i.e. when
    max(0, W - post(D)) + post(D) + post(H) - post(D + H)  <  W
with W the wait of the unsplit layer (host path - device attention). Linears that are memory-bound
for H (few rows) cost a whole weight read, as much as the window they add: the split then never
pays. It pays only when both sub-batches' linears are compute-bound (post(D) + post(H) ~ post(D+H))
and the unsplit layer waits. The sim takes post() from its cost model; cpu and cuda from a line
fitted to the post-attention times they measured (`PostTimes`). Imports no torch.
"""
from __future__ import annotations

from collections import deque


def split_cost(unsplit_wait: float, post_d: float, post_h: float, post_all: float) -> tuple[float, float]:
    """(wait at the merge, extra device time of the second pass) of the split layer."""
    return max(0.0, unsplit_wait - post_d), max(0.0, post_d + post_h - post_all)


def split_pays(unsplit_wait: float, post_d: float, post_h: float, post_all: float) -> bool:
    if unsplit_wait <= 0.0:
        return False
    wait, extra = split_cost(unsplit_wait, post_d, post_h, post_all)
    return wait + extra < unsplit_wait


def decide_split(mode: str, rows_d: int, unsplit_wait: float, post_d: float, post_h: float,
                 post_all: float) -> bool:
    """`mode` "on" / "off" forces it; "auto" follows `split_pays`. No D rows: nothing to overlap."""
    if rows_d <= 0 or mode == "off":
        return False
    return mode == "on" or split_pays(unsplit_wait, post_d, post_h, post_all)


class PostTimes:
    """Measured post-attention seconds per layer against the rows they ran, fitted by a line
    a + b * rows (a: the weight read, b: per-row work) over the last `keep` measurements."""

    def __init__(self, keep: int = 256):
        self.samples: deque[tuple[int, float]] = deque(maxlen=keep)

    def add(self, rows: int, seconds: float) -> None:
        self.samples.append((rows, seconds))

    def __call__(self, rows: int) -> float | None:
        """Predicted seconds for `rows` (None before any measurement)."""
        n = len(self.samples)
        if not n:
            return None
        mx = sum(r for r, _ in self.samples) / n
        my = sum(s for _, s in self.samples) / n
        var = sum((r - mx) ** 2 for r, _ in self.samples)
        b = max(0.0, sum((r - mx) * (s - my) for r, s in self.samples) / var) if var > 0 else 0.0
        return max(0.0, my + b * (rows - mx))
