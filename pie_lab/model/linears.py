"""Pre-packed linear layers for the cpu executor (issue 22).

torch's `F.linear` on the CPU calls MKL's sgemm, which re-lays out the weight on every call. oneDNN
(mkldnn) can pack a weight once into its blocked layout; the packed GEMM is 2-3x faster at decode
batch sizes (1-64 rows) on this AVX-512 CPU, the layout vLLM's CPU backend uses too.

`pack_linears(model)` replaces every `nn.Linear` of a float32 / bfloat16 CPU model by a
`PackedLinear` that shares its `weight` and `bias` parameters (state_dict and weight tying are
unchanged) and holds the packed copy beside them: weights cost twice their memory. Results differ
from `F.linear` in the last bits (another summation order), as any BLAS change does; greedy tokens
still equal transformers' (tests/test_generate_equivalence.py, test_real_model.py).
Call it after the weights are final: a packed copy does not follow later writes to `weight`.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

PACKABLE = (torch.float32, torch.bfloat16)
BATCH_HINT = 32                 # oneDNN picks its blocking for this many rows; any row count runs


def packing_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class PackedLinear(nn.Module):
    """y = x W^T + b through oneDNN with W packed once. Same parameter names as `nn.Linear`."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        with torch.no_grad():
            self._packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), BATCH_HINT)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, shape[-1]), self._packed,
                                               None if self.bias is None else self.bias.detach(), "none", [], "")
        return y.view(*shape[:-1], self.out_features)


def pack_linears(model: nn.Module) -> int:
    """Pack every CPU `nn.Linear` of a packable dtype in place; returns how many were packed (0 where
    oneDNN is missing: the model is left as it was)."""
    if not packing_available():
        return 0
    found = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if type(child) is nn.Linear and child.weight.device.type == "cpu" and child.weight.dtype in PACKABLE]
    for parent, name, child in found:
        setattr(parent, name, PackedLinear(child))
    return len(found)
