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

A module may name groups of its linears that read the same input in a class attribute
`FUSE = {"qkv": ("q_proj", "k_proj", "v_proj")}`; `pack_linears` then also sets `module.qkv`, a
`PackedGroup` that runs them as one GEMM over their concatenated weights (fewer calls per layer) and
returns each one's output. The module's forward uses the group where it is set.
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


class PackedGroup:
    """Linears reading the same input as one packed GEMM: `group(x)` -> each linear's output (views).
    Not a module: it holds no parameters, so state_dict is unchanged."""

    def __init__(self, linears: list[nn.Module]):
        self.sizes = [lin.out_features for lin in linears]
        with torch.no_grad():
            weight = torch.cat([lin.weight.detach() for lin in linears])
            self._packed = torch.ops.mkldnn._reorder_linear_weight(weight, BATCH_HINT)
            biases = [lin.bias for lin in linears]
            self.bias = None if all(b is None for b in biases) else torch.cat(
                [torch.zeros(n, dtype=weight.dtype) if b is None else b.detach() for b, n in zip(biases, self.sizes)])

    def joint(self, x: Tensor) -> Tensor:
        """x [T, in] -> every linear's output side by side [T, sum(sizes)]."""
        return torch.ops.mkldnn._linear_pointwise(x, self._packed, self.bias, "none", [], "")

    def __call__(self, x: Tensor) -> tuple[Tensor, ...]:
        return self.joint(x).split(self.sizes, dim=-1)


def pack_linears(model: nn.Module) -> int:
    """Pack every CPU `nn.Linear` of a packable dtype in place; returns how many were packed (0 where
    oneDNN is missing: the model is left as it was)."""
    if not packing_available():
        return 0
    found = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if type(child) is nn.Linear and child.weight.device.type == "cpu" and child.weight.dtype in PACKABLE]
    for parent, name, child in found:
        setattr(parent, name, PackedLinear(child))
    for module in model.modules():
        for group, names in getattr(type(module), "FUSE", {}).items():
            linears = [getattr(module, n) for n in names]
            if all(isinstance(lin, PackedLinear) for lin in linears):
                setattr(module, group, PackedGroup(linears))
    return len(found)
