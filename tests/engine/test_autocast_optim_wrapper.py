"""AutocastOptimWrapper: --amp on machines without CUDA (bf16 autocast, no loss scaling)."""
import pytest
import torch
import torch.nn as nn

from mmrefer.engine import AutocastOptimWrapper


def test_forward_runs_in_bf16_and_step_updates():
    model = nn.Linear(4, 3)
    wrapper = AutocastOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    before = model.weight.detach().clone()
    with wrapper.optim_context(model):
        assert torch.is_autocast_enabled('cpu')
        out = model(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16
    assert not torch.is_autocast_enabled('cpu')
    wrapper.update_params(out.float().pow(2).mean())
    assert model.weight.dtype == torch.float32  # master weights stay fp32
    assert not torch.equal(before, model.weight)


def test_rejects_unknown_dtype():
    with pytest.raises(ValueError, match='float64'):
        AutocastOptimWrapper(torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1),
                             dtype='float64')
