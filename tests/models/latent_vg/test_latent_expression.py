"""LatentExpressionInitializer: subject selection, dropout, length transform, [z_cls; s; A]."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmrefer.models.latent_vg.latent_expression import LatentExpressionInitializer


def _make(mode='latent', **kw):
    torch.manual_seed(0)
    m = LatentExpressionInitializer(embed_dims=4, text_len=6, attr_lengths=(2, 3),
                                    drop_probs=(0.2, 0.15), use_norm=False, mode=mode, **kw)
    if m.subject_selector is not None:
        with torch.no_grad():  # logit_j = first channel of t_j
            m.subject_selector.weight.copy_(torch.tensor([[1., 0., 0., 0.]]))
            m.subject_selector.bias.zero_()
    return m


def _text():
    t = torch.zeros(2, 6, 4)
    t[:, :, 1:] = torch.arange(2 * 6 * 3, dtype=torch.float).view(2, 6, 3) / 10
    # first-channel logits: sample 0 peaks at text position 3, sample 1 at the PAD position 5
    t[0, :, 0] = torch.tensor([9., 1., 2., 5., 0., 0.])
    t[1, :, 0] = torch.tensor([9., 1., 4., 2., 3., 50.])
    pad = torch.tensor([[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    return t, pad


def test_eval_argmax_subject_and_equation():
    m = _make().eval()
    t, pad = _text()
    out = m(t, pad)
    # <s> (position 0) is never a candidate; pads are masked out
    assert out['subject_index'].tolist() == [3, 2]
    assert torch.equal(out['subject'][:, 0], torch.stack([t[0, 3], t[1, 2]]))
    assert torch.equal(out['subject_weights'].sum(-1), torch.ones(2))
    sem = t[:, 1:] * (~pad[:, 1:])[..., None]
    for i, (k, z) in enumerate(zip((2, 3), out['expressions'])):
        assert z.shape == (2, k + 2, 4)
        phi = m.length_transforms[i]
        expected = torch.einsum('km,bmc->bkc', phi.weight, sem) + phi.bias[None, :, None]
        torch.testing.assert_close(z[:, 2:], expected)
        torch.testing.assert_close(z[:, 0], t[:, 0])  # z_cls starts at t_cls
        torch.testing.assert_close(z[:, 1], out['subject'][:, 0])
    # eval is deterministic (no Gumbel noise, no dropout)
    again = m(t, pad)
    for a, b in zip(out['expressions'], again['expressions']):
        assert torch.equal(a, b)


def test_train_gumbel_straight_through():
    m = _make().train()
    m.drop_probs = (0.0, 0.0)
    t, pad = _text()
    t.requires_grad_(True)
    noise = torch.zeros(2, 5)
    noise[0, 0] = 10.0  # pushes sample 0 to slot 0 (text position 1) despite a lower logit
    out = m(t, pad, noise=noise)
    assert out['subject_index'].tolist() == [1, 2]
    w = out['subject_weights']
    assert torch.equal(w.detach(), F.one_hot(torch.tensor([0, 1]), 5).float())  # hard forward
    # straight-through: gradient is the soft Gumbel-softmax gradient
    tau = m.temperature
    logits = m.subject_selector(t[:, 1:]).squeeze(-1)
    soft = F.softmax(((logits + noise) / tau).masked_fill(pad[:, 1:], float('-inf')), dim=-1)
    g_soft, = torch.autograd.grad((soft * torch.arange(5.)).sum(), m.log_temperature)
    g_w, = torch.autograd.grad((w * torch.arange(5.)).sum(), m.log_temperature)
    assert torch.isfinite(g_w) and g_w.abs() > 0
    torch.testing.assert_close(g_w, g_soft)


def test_temperature_learnable_init():
    m = LatentExpressionInitializer(8, 5, (2, ), (0.1, ))
    assert math.isclose(float(m.temperature.detach()), 0.07, rel_tol=1e-6)
    assert m.log_temperature.requires_grad
    fixed = LatentExpressionInitializer(8, 5, (2, ), (0.1, ), learnable_temperature=False)
    assert not any(p is fixed.log_temperature for p in fixed.parameters())


def test_dropout_train_only_and_rate():
    torch.manual_seed(1)
    m = LatentExpressionInitializer(embed_dims=64, text_len=201, attr_lengths=(1, 1),
                                    drop_probs=(0.5, 0.0), use_norm=False)
    with torch.no_grad():
        for phi in m.length_transforms:  # A = sum over slots -> exposes the dropout
            phi.weight.fill_(1.0)
            phi.bias.zero_()
    t = torch.ones(4, 201, 64)
    m.train()
    with torch.no_grad():
        a1, a2 = [z[:, 2] for z in m(t)["expressions"]]
    # p=0.5 element dropout with 1/(1-p) rescale: each element of the sum is 0 or 2 -> mean 200
    assert abs(float(a1.mean()) - 200) < 6 and float(a1.std()) > 1
    torch.testing.assert_close(a2, torch.full_like(a2, 200.))  # p = 0: untouched
    m.eval()
    b1 = m(t)['expressions'][0][:, 2]
    torch.testing.assert_close(b1, torch.full_like(b1, 200.))


def test_naive_mode_and_errors():
    m = _make(mode='naive').train()
    t, pad = _text()
    out = m(t, pad)
    assert out['subject'] is None and out['subject_index'].tolist() == [-1, -1]
    for z in out['expressions']:
        torch.testing.assert_close(z[:, 1], t[:, 0])  # subject slot holds t_cls
    again = m(t, pad)  # naive: no dropout even in training
    assert torch.equal(out['expressions'][1], again['expressions'][1])
    with pytest.raises(ValueError, match='text_len'):
        m(torch.zeros(2, 7, 4))
    with pytest.raises(ValueError, match='same length'):
        LatentExpressionInitializer(4, 6, (2, 3), (0.1, ))
    with pytest.raises(ValueError, match='mode'):
        LatentExpressionInitializer(4, 6, mode='x')
