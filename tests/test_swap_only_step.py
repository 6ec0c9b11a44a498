"""A step plan with swap mappings and no sequences (the engine lets one through when a step only
preempts or brings blocks back): every executor moves the blocks and returns no token."""
import pytest
import torch

from fake_cuda import FakeCuda
from pie_lab import EngineConfig
from pie_lab.core.plan import StepPlan
from pie_lab.executors.cpu import CPUExecutor
from pie_lab.executors.cuda import CUDAExecutor
from pie_lab.executors.sim import SimExecutor
from pie_lab.model.loader import load_model

CONFIG = EngineConfig(block_size=4)
PLAN = StepPlan(7, (), swap_out=((1, 2), (3, 4)), swap_in=((5, 6),), released_seq_ids=(3,))


def torch_executor(kind: str):
    decoder, tokenizer = load_model("opt-tiny", seed=0)
    if kind == "cpu":
        return CPUExecutor(decoder, tokenizer, CONFIG)
    return CUDAExecutor(decoder, tokenizer, CONFIG, torch.device("cpu"), cuda=FakeCuda())


@pytest.mark.parametrize("kind", ["cpu", "cuda"])
def test_torch_executors_move_the_blocks(kind):
    ex = torch_executor(kind)
    ex.initialize(8, 8)
    kv = ex.kv
    kv.pool.copy_(torch.randn_like(kv.pool))
    kv.host.copy_(torch.randn_like(kv.host))
    pool, host = kv.pool.clone(), kv.host.clone()
    out = ex.execute(PLAN)
    ex.close()
    assert out.token_ids == {} and out.timing.layers == ()
    assert torch.equal(kv.host[:, 2], pool[:, 1]) and torch.equal(kv.host[:, 4], pool[:, 3])
    assert torch.equal(kv.pool[:, 6], host[:, 5])
    assert torch.equal(kv.pool[:, :6], pool[:, :6]) and torch.equal(kv.pool[:, 7:], pool[:, 7:])
    assert out.timing.blocking_copy_bytes == 3 * ex.spec.kv_block_bytes(4, "float32")
    assert 0 <= out.timing.blocking_copy_time <= out.timing.duration
    assert out.timing.emulated_link == (kind == "cpu")


def test_sim_executor_times_the_copies():
    ex = SimExecutor("opt-tiny", CONFIG)
    ex.initialize(8, 8)
    out = ex.execute(PLAN)
    assert out.token_ids == {}
    assert out.timing.blocking_copy_bytes == 3 * ex.spec.kv_block_bytes(4, "float32")
    assert 0 < out.timing.blocking_copy_time <= out.timing.duration
    assert out.timing.stall == 0 and out.timing.stream_bytes == 0
