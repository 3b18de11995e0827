"""Adaptive Instance Aggregation (Eq. 8) and the ablation modes."""
import pytest
import torch

from mmrefer.models.instalign.instance_aggregation import AdaptiveInstanceAggregation


def test_aia_equation():
    s = torch.tensor([[[[1., -2.]], [[-4., 3.]]]])  # [1, 2, 1, 2]
    p = torch.tensor([[0.5, 0.25]])
    aia = AdaptiveInstanceAggregation('aia', prelu_init=0.1)
    # PReLU: x if x > 0 else 0.1 x
    expected = torch.tensor([[[0.5 * 1 + 0.25 * -0.4, 0.5 * -0.2 + 0.25 * 3]]])
    assert torch.allclose(aia(s, p), expected)
    assert torch.allclose(aia(s, p).sigmoid(), torch.sigmoid(expected))  # M = sigmoid(.)
    no_prelu = AdaptiveInstanceAggregation('aia_no_prelu')
    assert torch.allclose(no_prelu(s, p), torch.tensor([[[0.5 - 1.0, -1.0 + 0.75]]]))
    assert not any(True for _ in no_prelu.parameters())


def test_aia_gradients_reach_scores_and_prelu():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 3, 4, 4, generator=g).requires_grad_()
    p = torch.rand(2, 3, generator=g).requires_grad_()
    aia = AdaptiveInstanceAggregation('aia')
    aia(s, p).sum().backward()
    # analytic gradients of sum_hw sum_i p_i PReLU_a(s_i): d/dp_i = sum PReLU(s_i),
    # d/ds_i = p_i (1 or a), d/da = sum_i p_i sum min(s_i, 0)
    a = aia.prelu.weight.detach()
    sd = s.detach()
    prelu = torch.where(sd > 0, sd, a * sd)
    torch.testing.assert_close(p.grad, prelu.sum((2, 3)))
    torch.testing.assert_close(s.grad, p.detach()[..., None, None] * torch.where(sd > 0, 1.0, a))
    torch.testing.assert_close(aia.prelu.weight.grad,
                               (p.detach()[..., None, None] * sd.clamp(max=0)).sum().reshape(1))


def test_threshold_selection():
    s = torch.tensor([[[[2., -3.]], [[-1., 4.]], [[9., 9.]]]])
    p = torch.tensor([[0.9, 0.6, 0.2]])
    out = AdaptiveInstanceAggregation('threshold', threshold=0.5)(s, p)
    assert torch.allclose(out, torch.tensor([[[2., 4.]]]))  # max of the selected logits
    none = AdaptiveInstanceAggregation('threshold', threshold=0.95)(s, p)
    assert (none.sigmoid() < 1e-6).all()  # nothing selected -> empty mask


def test_bad_args():
    with pytest.raises(ValueError, match='mode'):
        AdaptiveInstanceAggregation('mean')
    with pytest.raises(ValueError, match='disagree'):
        AdaptiveInstanceAggregation()(torch.randn(1, 3, 2, 2), torch.rand(1, 2))
