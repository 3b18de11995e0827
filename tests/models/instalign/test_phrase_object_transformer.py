"""Phrase-Object Transformer block and the phrase-object alignment equations (Eq. 1-3)."""
import math

import pytest
import torch

from mmrefer.models.instalign.phrase_object_transformer import phrase_object_alignment
from mmrefer.models.instalign.phrase_object_transformer import (PhraseObjectTransformer,
                                                             PhraseObjectTransformerLayer)


def test_alignment_matches_loops():
    torch.manual_seed(0)
    q, t = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    r, p, cost = phrase_object_alignment(q, t, mask)
    for b in range(2):
        valid = mask[b].bool()
        for i in range(3):
            logits = torch.tensor([float(q[b, i] @ t[b, l]) / math.sqrt(4)
                                   for l in range(5) if valid[l]])
            w = torch.exp(logits - logits.max())
            w = w / w.sum()
            assert torch.allclose(r[b, i, valid], w, atol=1e-6)
            assert torch.all(r[b, i, ~valid] == 0)
            phrase = (w[:, None] * t[b, valid]).sum(0)
            assert torch.allclose(p[b, i], phrase, atol=1e-6)
            cos = float(phrase @ q[b, i]) / float(phrase.norm() * q[b, i].norm())
            assert cost[b, i].item() == pytest.approx(1 - cos, abs=1e-5)


def test_alignment_cost_zero_when_query_equals_its_phrase():
    # a single valid word: P_i = T_0 for every query, so a query parallel to T_0 costs 0
    t = torch.tensor([[[1., 2., 0.], [5., 5., 5.]]])
    q = torch.tensor([[[2., 4., 0.], [0., 0., 1.]]])
    _, p, cost = phrase_object_alignment(q, t, torch.tensor([[1, 0]]))
    assert torch.allclose(p[0, 1], t[0, 0])
    assert cost[0, 0].item() == pytest.approx(0, abs=1e-6)
    assert cost[0, 1].item() == pytest.approx(1, abs=1e-6)


def test_alignment_bad_shapes():
    with pytest.raises(ValueError, match='queries'):
        phrase_object_alignment(torch.randn(2, 3, 4), torch.randn(2, 5, 6))


def _inputs(b=2, n=3, hw=6, l=4, c=8):
    torch.manual_seed(1)
    return (torch.randn(b, n, c), torch.randn(b, n, c), torch.randn(b, hw, c),
            torch.randn(b, hw, c), torch.randn(b, l, c), torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]))


def test_layer_text_modes():
    q, qp, v, vp, t, tm = _inputs()
    bi = PhraseObjectTransformerLayer(8, 2, 16, text_mode='bidirectional').eval()
    q1, t1 = bi(q, qp, v, vp, t, tm)
    assert q1.shape == q.shape and t1.shape == t.shape
    assert not torch.allclose(t1, t)  # text updated by the queries
    one = PhraseObjectTransformerLayer(8, 2, 16, text_mode='query_only').eval()
    _, t2 = one(q, qp, v, vp, t, tm)
    assert t2 is t
    none = PhraseObjectTransformerLayer(8, 2, 16, text_mode='none').eval()
    q3, _ = none(q, qp, v, vp, t, tm)
    q3b, _ = none(q, qp, v, vp, torch.randn_like(t), tm)
    assert torch.allclose(q3, q3b)  # the text has no influence at all
    q1b, _ = bi(q, qp, v, vp, t + torch.randn_like(t), tm)
    assert not torch.allclose(q1, q1b)
    with pytest.raises(ValueError, match='text_mode'):
        PhraseObjectTransformerLayer(8, 2, 16, text_mode='both')


def test_layer_ignores_padded_words_and_masked_pixels():
    q, qp, v, vp, t, tm = _inputs()
    layer = PhraseObjectTransformerLayer(8, 2, 16).eval()
    q1, _ = layer(q, qp, v, vp, t, tm)
    t_changed = t.clone()
    t_changed[0, 2:] += 10  # padded words of sample 0
    q2, t2 = layer(q, qp, v, vp, t_changed, tm)
    assert torch.allclose(q1[0], q2[0], atol=1e-5)
    # masked attention: pixels 3.. blocked for every query -> changing them does nothing
    am = torch.zeros(2 * 2, 3, 6, dtype=torch.bool)
    am[..., 3:] = True
    v2 = v.clone()
    v2[:, 3:] += 5
    a, _ = layer(q, qp, v, vp, t, tm, attn_mask=am)
    b, _ = layer(q, qp, v2, vp, t, tm, attn_mask=am)
    assert torch.allclose(a, b, atol=1e-5)


def test_round_robin_levels():
    pot = PhraseObjectTransformer(num_layers=9, num_levels=3, embed_dims=8, num_heads=2,
                                  ffn_dims=16)
    assert [pot.level_of(k) for k in range(9)] == [0, 1, 2] * 3
    assert len(pot.layers) == 9
