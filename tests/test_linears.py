import pytest
import torch
from torch import nn

from pie_lab.model.linears import PackedLinear, pack_linears, packing_available

pytestmark = pytest.mark.skipif(not packing_available(), reason="torch built without oneDNN")


def small_net():
    torch.manual_seed(0)
    net = nn.Module()
    net.embed = nn.Embedding(50, 16)
    net.body = nn.Sequential(nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 16, bias=False))
    net.head = nn.Linear(16, 50, bias=False)
    net.head.weight = net.embed.weight                       # tied, as SmolLM2's LM head
    return net


@pytest.mark.parametrize("rows", [1, 5, 32, 300])
def test_packed_linears_match_torch_and_keep_parameters(rows):
    net = small_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(rows, 16)
    with torch.inference_mode():
        ref = net.head(net.body(x))
        assert pack_linears(net) == 3
        got = net.head(net.body(x))
    assert isinstance(net.body[0], PackedLinear) and isinstance(net.head, PackedLinear)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert net.state_dict().keys() == before.keys()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())
    assert net.head.weight is net.embed.weight                # tying kept: one parameter


def test_leading_dims_and_unpackable_dtype():
    lin = nn.Linear(8, 4)
    packed = PackedLinear(lin)
    x = torch.randn(2, 3, 8)
    with torch.inference_mode():
        torch.testing.assert_close(packed(x), lin(x), rtol=1e-5, atol=1e-5)
    half = nn.Sequential(nn.Linear(8, 4).half())
    assert pack_linears(half) == 0 and type(half[0]) is nn.Linear


class Pair(nn.Module):
    FUSE = {"both": ("a", "b")}

    def __init__(self, bias_a: bool, bias_b: bool):
        super().__init__()
        self.a, self.b = nn.Linear(16, 8, bias=bias_a), nn.Linear(16, 24, bias=bias_b)


@pytest.mark.parametrize("bias_a,bias_b", [(False, False), (True, False), (True, True)])
def test_fused_group_matches_its_linears_and_keeps_state_dict(bias_a, bias_b):
    torch.manual_seed(1)
    net = Pair(bias_a, bias_b)
    keys = set(net.state_dict())
    x = torch.randn(5, 16)
    with torch.inference_mode():
        ref = (net.a(x), net.b(x))
        assert pack_linears(net) == 2
        got = net.both(x)
    assert [g.shape for g in got] == [(5, 8), (5, 24)]
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)
    assert set(net.state_dict()) == keys                     # the group adds no parameters
