"""What the cpu and cuda executors share: the model, KV store, batch building, sampling, ring slots."""
from __future__ import annotations

import torch

from ..config import EngineConfig
from ..core.plan import StepPlan


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

    def slot(self, layer: int) -> int:
        return (self.ring_base + layer) % self.kv.staging.shape[0]

    def batch(self, plan: StepPlan):
        from ..model.batch import build_forward_batch
        return build_forward_batch(plan, self.config.block_size, self.device)

    @torch.inference_mode()
    def sample(self, plan: StepPlan, batch, hidden: torch.Tensor) -> dict[int, int]:
        works = [w for w in plan.seqs if w.sample]
        if not works:
            return {}
        logits = self.model.compute_logits(hidden, batch)
        return dict(zip((w.seq_id for w in works), self.sampler.sample(logits, works)))
