"""What the cpu and cuda executors share: the model, KV store, batch building, sampling, ring slots."""
from __future__ import annotations

from dataclasses import replace

import torch

from ..config import EngineConfig
from ..core.plan import LayerTiming, StepPlan


class TorchRunner:
    def __init__(self, model, tokenizer, config: EngineConfig, device: torch.device):
        from ..model.sampler import Sampler
        self.model = model
        self.tokenizer = tokenizer
        self.spec = model.spec
        self.config = config
        self.device = device
        self.sampler = Sampler(seed=config.seed)
        self.ring_base = 0        # staging slots run as one ring across steps: layer l uses (base + l) % depth
        self.kv = None
        self.host_rate = config.host_attention_gbps     # hybrid: pace the host's attention (None: as fast as it runs)
        self._host_attention = None

    def slot(self, layer: int) -> int:
        return (self.ring_base + layer) % self.kv.staging.shape[0]

    def batch(self, plan: StepPlan):
        from ..model.batch import build_forward_batch
        batch = build_forward_batch(plan, self.config.block_size, self.device)
        if plan.num_host_computed_blocks:
            batch.host_share = self.host_attention().for_step(plan, batch)
        return batch

    # -- policy hybrid: attention over host-computed blocks on the host's own worker -----------------
    def host_attention(self):
        if self._host_attention is None:
            from .host_attention import HostAttention
            self._host_attention = HostAttention(self.kv.host, self.host_rate)
        return self._host_attention

    def set_host_attention(self, gbps: float | None) -> None:
        self.host_rate = gbps
        if self._host_attention is not None:
            self._host_attention.set_rate(gbps)

    @staticmethod
    def with_host_timings(batch, layers: list[LayerTiming], t0: float) -> list[LayerTiming]:
        """Layer timings with the host share's lane (perf_counter seconds since t0, the step's start)."""
        share = batch.host_share
        if share is None:
            return layers
        out = []
        for l in layers:
            t = share.timings.get(l.layer)
            out.append(l if t is None else replace(l, host_start=t.start - t0, host_end=t.end - t0, host_wait=t.wait,
                                                   host_bytes=t.nbytes, host_window=t.window))
        return out

    def close(self) -> None:
        if self._host_attention is not None:
            self._host_attention.close()
            self._host_attention = None

    @torch.inference_mode()
    def sample(self, plan: StepPlan, batch, hidden: torch.Tensor) -> dict[int, int]:
        works = [w for w in plan.seqs if w.sample]
        if not works:
            return {}
        logits = self.model.compute_logits(hidden, batch)
        return dict(zip((w.seq_id for w in works), self.sampler.sample(logits, works)))
