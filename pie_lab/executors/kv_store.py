"""KV tensors of the torch executors: the GPU pool, the host pool and the staging ring.

Layouts (layer-major, so one layer's range of blocks is one contiguous copy):
  pool    [L, G, 2, block_size, kv_heads, head_dim]
  host    [L, H, 2, block_size, kv_heads, head_dim]   (pinned on CUDA)
  staging [depth, S, 2, block_size, kv_heads, head_dim]
"""
from __future__ import annotations

import torch

from ..core.plan import CopyRange, coalesce
from ..model_spec import ModelSpec

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class KVStore:
    def __init__(self, spec: ModelSpec, block_size: int, dtype: str, device: torch.device, pin_host: bool):
        self.spec = spec
        self.block_shape = (2, block_size, spec.num_kv_heads, spec.head_dim)
        self.dtype = TORCH_DTYPES[dtype]
        self.device = device
        self.pin_host = pin_host
        self.pool: torch.Tensor | None = None
        self.host: torch.Tensor | None = None
        self.staging: torch.Tensor | None = None

    @property
    def layer_block_bytes(self) -> int:
        n = 1
        for d in self.block_shape:
            n *= d
        return n * self.dtype.itemsize

    def allocate(self, num_gpu_blocks: int, num_host_blocks: int) -> None:
        L = self.spec.num_layers
        self.pool = torch.zeros((L, num_gpu_blocks, *self.block_shape), dtype=self.dtype, device=self.device)
        self.host = torch.zeros((L, num_host_blocks, *self.block_shape), dtype=self.dtype,
                                pin_memory=self.pin_host)

    def staging_fits(self, depth: int, num_blocks: int) -> bool:
        s = self.staging
        return s is not None and s.shape[0] == depth and s.shape[1] >= num_blocks

    def ensure_staging(self, depth: int, num_blocks: int) -> bool:
        """Grow the ring to at least depth x num_blocks (amortised), keeping what it holds.
        Returns True when staged data was lost (a new depth)."""
        s = self.staging
        if self.staging_fits(depth, num_blocks):
            return False
        keep = s is not None and s.shape[0] == depth
        cap = max(num_blocks, 2 * s.shape[1] if keep else num_blocks)
        self.staging = torch.empty((depth, cap, *self.block_shape), dtype=self.dtype, device=self.device)
        if keep:
            self.staging[:, :s.shape[1]] = s
        return not keep

    def ranges(self, mapping) -> tuple[CopyRange, ...]:
        return coalesce(list(mapping))

    def nbytes(self, ranges, layers: int = 1) -> int:
        """Bytes `ranges` cover in `layers` layers."""
        return sum(r.count for r in ranges) * self.layer_block_bytes * layers

    def copy_blocks(self, src: torch.Tensor, dst: torch.Tensor, ranges, non_blocking: bool = False) -> int:
        """All layers: dst[:, r.dst + i] = src[:, r.src + i]. Returns bytes moved."""
        for r in ranges:
            dst[:, r.dst:r.dst + r.count].copy_(src[:, r.src:r.src + r.count], non_blocking=non_blocking)
        return self.nbytes(ranges, self.spec.num_layers)

    def stage_layer(self, layer: int, slot: int, ranges, non_blocking: bool = False) -> int:
        """Layer `layer`'s host blocks into staging slot `slot`, one copy per range. Returns bytes."""
        dst, src = self.staging[slot], self.host[layer]
        for r in ranges:
            dst.narrow(0, r.dst, r.count).copy_(src.narrow(0, r.src, r.count), non_blocking=non_blocking)
        return self.nbytes(ranges)
