"""Positive-margin contrastive loss and the InfoNCE / triplet / ArcFace variants, by hand."""
import math

import pytest
import torch

from mmrefer.models.latent_vg.contrastive_losses import (ArcFaceContrastiveLoss, InfoNCELoss,
                                                        TripletContrastiveLoss)
from mmrefer.models.latent_vg.contrastive_losses import PositiveMarginContrastiveLoss


def _cos(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def _embeds():
    torch.manual_seed(0)
    return torch.randn(3, 5), torch.randn(3, 2, 5)


def _loop_loss(t, z, positive_fn, tau):
    B, N = z.shape[:2]
    total = 0.0
    for i in range(N):
        for b in range(B):
            pos = positive_fn(_cos(t[b], z[b, i])) / tau
            neg = [_cos(t[b], z[c, i]) / tau for c in range(B) if c != b]
            total += -(pos - math.log(math.exp(pos) + sum(math.exp(v) for v in neg)))
    return total / (B * N)


def test_positive_margin_matches_loop():
    t, z = _embeds()
    loss = PositiveMarginContrastiveLoss(gamma=0.2, temperature=0.5, loss_weight=2.0)(t, z)
    ref = _loop_loss(t, z, lambda s: min(1.0, 0.2 + s), 0.5)
    assert math.isclose(float(loss), 2.0 * ref, rel_tol=1e-5)


def test_positive_margin_cap_stops_gradient():
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z = torch.tensor([[[1.0, 0.05]], [[0.05, 1.0]]], requires_grad=True)  # s ~ 0.999 > 1 - gamma
    loss = PositiveMarginContrastiveLoss(gamma=0.2, temperature=0.1)(t, z)
    expected = _loop_loss(t, z.detach(), lambda s: 1.0, 0.1)
    assert math.isclose(float(loss), expected, rel_tol=1e-3)
    # the capped positive is a constant: the gradient is that of the negatives only
    grad = torch.autograd.grad(loss, z)[0]
    zz = z.detach().clone().requires_grad_(True)
    sim = torch.nn.functional.cosine_similarity(t[:, None, None], zz[None, :], dim=-1)[..., 0]
    logits = torch.where(torch.eye(2, dtype=torch.bool), torch.ones(2, 2), sim) / 0.1
    manual = torch.nn.functional.cross_entropy(logits, torch.arange(2))
    torch.testing.assert_close(grad, torch.autograd.grad(manual, zz)[0])
    assert grad.abs().sum() > 0


def test_infonce_matches_loop_and_single_sample_zero():
    t, z = _embeds()
    loss = InfoNCELoss(temperature=0.07)(t, z)
    assert math.isclose(float(loss), _loop_loss(t, z, lambda s: s, 0.07), rel_tol=1e-5)
    assert float(InfoNCELoss()(t[:1], z[:1])) == pytest.approx(0.0, abs=1e-7)


def test_arcface_matches_loop():
    t, z = _embeds()
    loss = ArcFaceContrastiveLoss(margin=0.3, temperature=0.2)(t, z)
    ref = _loop_loss(t, z, lambda s: math.cos(math.acos(s) + 0.3), 0.2)
    assert math.isclose(float(loss), ref, rel_tol=1e-4)


def test_triplet_hardest_negative():
    t, z = _embeds()
    loss = TripletContrastiveLoss(margin=0.5)(t, z)
    total = 0.0
    for i in range(2):
        for b in range(3):
            hardest = max(_cos(t[b], z[c, i]) for c in range(3) if c != b)
            total += max(0.0, 0.5 - _cos(t[b], z[b, i]) + hardest)
    assert math.isclose(float(loss), total / 6, rel_tol=1e-5)
    assert float(TripletContrastiveLoss()(t[:1], z[:1])) == 0.0


def test_shape_errors():
    with pytest.raises(ValueError, match='latent_embeds'):
        InfoNCELoss()(torch.randn(2, 4), torch.randn(3, 1, 4))
    with pytest.raises(ValueError, match='temperature'):
        PositiveMarginContrastiveLoss(temperature=0)
