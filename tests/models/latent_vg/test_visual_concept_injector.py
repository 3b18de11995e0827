"""VisualConceptInjector against a loop-based re-computation of its equations."""
import pytest
import torch
import torch.nn.functional as F

from mmrefer.models.latent_vg.visual_concept_injector import VisualConceptInjector


def _reference(x, sizes, concepts, row_normalize):
    """Per-sample loops: target patches, patch softmax, C^V, column-normalised assignment."""
    n_vis, n_txt = sizes[0], sizes[1]
    out = x.clone()
    slots = []
    start = n_vis + n_txt
    for n in sizes[2:]:
        slots += list(range(start + 2, start + n))
        start += n
    for b in range(x.shape[0]):
        vis = x[b, 1:n_vis]
        t = x[b, n_vis]
        r = torch.stack([F.cosine_similarity(v, t, dim=0) for v in vis])
        keep = r >= r.mean()
        cv = []
        for c in concepts:
            logits = torch.stack([F.cosine_similarity(c, v, dim=0) for v in vis])
            w = torch.where(keep, logits.exp(), torch.zeros_like(logits))
            w = w / w.sum()
            cv.append((w[:, None] * vis).sum(0))
        cv = torch.stack(cv)
        attrs = x[b, slots]
        s = torch.tensor([[float(F.cosine_similarity(a, c, dim=0)) for c in cv] for a in attrs])
        s = s.exp() / s.exp().sum(0, keepdim=True)  # each concept: distribution over attributes
        if row_normalize:
            s = s / s.sum(1, keepdim=True)
        out[b, slots] = s @ cv
    return out


def test_matches_reference_and_keeps_other_tokens():
    torch.manual_seed(0)
    sizes = [7, 3, 4, 5]  # 6 patches, text 3, Z^1 (k=2), Z^2 (k=3)
    x = torch.randn(2, sum(sizes), 8)
    for row_normalize in (True, False):
        vci = VisualConceptInjector(embed_dims=8, num_concepts=5, row_normalize=row_normalize)
        y = vci(x, sizes)
        ref = _reference(x, sizes, vci.concepts.detach(), row_normalize)
        torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)
    changed = (y - x).abs().sum(-1)[0] > 0
    attr_pos = [12, 13, 16, 17, 18]
    assert changed[attr_pos].all() and changed.sum() == len(attr_pos)


def test_orthogonal_init_and_residual():
    vci = VisualConceptInjector(embed_dims=16, num_concepts=10)
    gram = vci.concepts @ vci.concepts.T
    torch.testing.assert_close(gram, torch.eye(10), atol=1e-5, rtol=0)
    x = torch.randn(1, 5 + 2 + 4, 16)
    sizes = [5, 2, 4]
    res = VisualConceptInjector(16, 10, residual=True)
    res.concepts.data.copy_(vci.concepts.data)
    torch.testing.assert_close(res(x, sizes)[:, 9:] - x[:, 9:], vci(x, sizes)[:, 9:])


def test_gradient_reaches_concepts():
    vci = VisualConceptInjector(8, 4)
    x = torch.randn(2, 5 + 2 + 5, 8)
    vci(x, [5, 2, 5]).sum().backward()
    assert vci.concepts.grad is not None and vci.concepts.grad.abs().sum() > 0


def test_per_layer_banks():
    """num_banks=L: layer i reads bank i only (each bank orthogonal), the same equations."""
    torch.manual_seed(0)
    sizes = [7, 3, 4, 5]
    x = torch.randn(2, sum(sizes), 8)
    vci = VisualConceptInjector(embed_dims=8, num_concepts=5, num_banks=3)
    assert tuple(vci.concepts.shape) == (3, 5, 8)
    for i in range(3):
        torch.testing.assert_close(vci.concepts[i] @ vci.concepts[i].T, torch.eye(5), atol=1e-5,
                                   rtol=0)
        ref = _reference(x, sizes, vci.concepts[i].detach(), True)
        torch.testing.assert_close(vci(x, sizes, layer=i), ref, rtol=1e-4, atol=1e-5)
    vci(x, sizes, layer=1).sum().backward()
    grad = vci.concepts.grad.abs().sum(dim=(1, 2))
    assert grad[1] > 0 and grad[0] == 0 and grad[2] == 0
    with pytest.raises(IndexError, match='layer 3 has no concept bank'):
        vci(x, sizes, layer=3)


def _clustered_patches(num_clusters=10, patches=900, dims=256, seed=0):
    """Patches around ``num_clusters`` random directions (within-cluster cosine about 0.8),
    every patch about equally related to the sentence (t_cls = their mean)."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(num_clusters, dims, generator=g), dim=-1) * 10
    label = torch.arange(patches) % num_clusters
    vis = (centres[label] + 0.15 * torch.randn(patches, dims, generator=g))[None]
    return vis, vis.mean(1), centres, label


@pytest.mark.parametrize('tau', [1.0, 0.07])
def test_temperature_decides_whether_concepts_stay_distinct(tau):
    """Best case: each concept token points at one cluster. Softmax over cosine logits in
    [-1, 1] at temperature 1 spreads a concept over every target patch (weights differ by at
    most e^2), so the injected attributes come out nearly identical; at 0.07 each concept
    retrieves its own cluster and the attributes differ (docs/latentvg.md, VCI temperature)."""
    vis, t_cls, centres, label = _clustered_patches()
    vci = VisualConceptInjector(vis.shape[-1], len(centres), concept_temperature=tau,
                                assign_temperature=tau)
    with torch.no_grad():
        vci.concepts.copy_(F.normalize(centres, dim=-1))
    # the weight each concept puts on its own cluster, from the injector's own retrieval
    vis_n = F.normalize(vis[0], dim=-1)
    rel = vis_n @ F.normalize(t_cls[0], dim=-1)
    logits = (F.normalize(vci.concepts, dim=-1) @ vis_n.T / tau).masked_fill(
        ~(rel >= rel.mean()), float('-inf'))
    w = logits.softmax(-1)
    kept = [k for k in range(len(centres)) if (rel >= rel.mean())[label == k].any()]
    assert len(kept) >= 3
    own = torch.stack([w[k, label == k].sum() for k in kept]).mean()   # clusters with targets
    attrs = torch.randn(1, 14, vis.shape[-1], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        new = F.normalize(vci.inject(vis, t_cls, attrs)[0], dim=-1)
    off_diag = (new @ new.T)[~torch.eye(14, dtype=torch.bool)]
    if tau == 1.0:
        assert own < 2.5 / len(kept)          # 1 / len(kept) would be uniform
        assert off_diag.min() > 0.999         # all 14 attributes the same direction
    else:
        assert own > 0.8
        assert off_diag.min() < 0.9
