"""InstAlign matching (Eq. 6): mmdet HungarianAssigner + the registered costs, checked against a
brute-force cost built from the formula and solved with scipy / exhaustive search."""
import itertools
import math

import pytest
import torch
from mmengine.structures import InstanceData
from scipy.optimize import linear_sum_assignment

from mmrefer.utils.setup_env import register_all_modules

register_all_modules()

from mmrefer.registry import TASK_UTILS  # noqa: E402

COSTS = [dict(type='ScoreBCECost', weight=2.0),
         dict(type='CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
         dict(type='DiceCost', weight=5.0, pred_act=True, eps=1.0),
         dict(type='PhraseAlignmentCost', weight=1.0)]


def _formula_cost(score_logits, masks, phrase, gt):
    """L_match(i, j) = 2 BCE(p_i, 1) + 5 [BCE(s_i, s_j) + Dice(s_i, s_j)] + 1 L_phrase(i)."""
    n, m = len(score_logits), len(gt)
    cost = torch.zeros(n, m, dtype=torch.float64)
    for i in range(n):
        p = 1 / (1 + math.exp(-float(score_logits[i])))
        prob = masks[i].double().sigmoid().flatten()
        for j in range(m):
            g = gt[j].double().flatten()
            bce = -(g * prob.log() + (1 - g) * (1 - prob).log()).mean()
            dice = 1 - (2 * (prob * g).sum() + 1) / (prob.sum() + g.sum() + 1)
            cost[i, j] = 2 * -math.log(p) + 5 * (bce + dice) + float(phrase[i])
    return cost


def _case(n=6, m=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    pred = InstanceData(score_logits=torch.randn(n, generator=g),
                        masks=torch.randn(n, 5, 7, generator=g) * 3,
                        phrase_costs=torch.rand(n, generator=g) * 2)
    gt = InstanceData(masks=(torch.rand(m, 5, 7, generator=g) > 0.5).float(),
                      labels=torch.zeros(m, dtype=torch.long))
    return pred, gt


def test_costs_values():
    pred, gt = _case()
    score = TASK_UTILS.build(COSTS[0])(pred, gt)
    assert score.shape == (6, 3)
    assert torch.allclose(score[:, 1], 2 * -torch.log(torch.sigmoid(pred.score_logits)), atol=1e-5)
    phrase = TASK_UTILS.build(COSTS[3])(pred, gt)
    assert torch.allclose(phrase, pred.phrase_costs[:, None].expand(6, 3))
    total = sum(TASK_UTILS.build(c)(pred, gt) for c in COSTS)
    assert torch.allclose(total.double(), _formula_cost(pred.score_logits, pred.masks,
                                                        pred.phrase_costs, gt.masks), atol=1e-4)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_assigner_matches_scipy_and_exhaustive(seed):
    pred, gt = _case(n=5, m=3, seed=seed)
    assigner = TASK_UTILS.build(dict(type='HungarianAssigner', match_costs=COSTS))
    res = assigner.assign(pred, gt)
    brute = _formula_cost(pred.score_logits, pred.masks, pred.phrase_costs, gt.masks)
    rows, cols = linear_sum_assignment(brute.numpy())
    expected = torch.zeros(5, dtype=torch.long)
    expected[torch.as_tensor(rows)] = torch.as_tensor(cols) + 1
    assert torch.equal(res.gt_inds, expected)
    # exhaustive: the assigner's matching has the minimum total cost
    got = sum(brute[q, res.gt_inds[q] - 1] for q in range(5) if res.gt_inds[q] > 0)
    best = min(sum(brute[perm[j], j] for j in range(3))
               for perm in itertools.permutations(range(5), 3))
    assert float(got) == pytest.approx(float(best), abs=1e-6)


def test_phrase_cost_changes_the_matching():
    # two queries with identical masks and scores: the phrase term breaks the tie
    pred, gt = _case(n=2, m=1)
    pred.masks[1] = pred.masks[0]
    pred.score_logits[1] = pred.score_logits[0]
    pred.phrase_costs = torch.tensor([1.5, 0.1])
    res = TASK_UTILS.build(dict(type='HungarianAssigner', match_costs=COSTS)).assign(pred, gt)
    assert res.gt_inds.tolist() == [0, 1]
    pred.phrase_costs = torch.tensor([0.1, 1.5])
    res = TASK_UTILS.build(dict(type='HungarianAssigner', match_costs=COSTS)).assign(pred, gt)
    assert res.gt_inds.tolist() == [1, 0]


def test_no_target_sample_matches_nothing():
    pred, _ = _case()
    empty = InstanceData(masks=torch.zeros(0, 5, 7), labels=torch.zeros(0, dtype=torch.long))
    res = TASK_UTILS.build(dict(type='HungarianAssigner', match_costs=COSTS)).assign(pred, empty)
    assert (res.gt_inds == 0).all()


def test_missing_field_is_a_clear_error():
    pred, gt = _case()
    del pred.phrase_costs
    with pytest.raises(KeyError, match='phrase_costs'):
        TASK_UTILS.build(COSTS[3])(pred, gt)


def _supervision():
    from mmrefer.models.instalign import PhraseAlignedInstanceSupervision
    return PhraseAlignedInstanceSupervision(
        dict(type='HungarianAssigner', match_costs=COSTS),
        loss_score=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=2.0),
        loss_mask=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=5.0),
        loss_dice=dict(type='DiceLoss', use_sigmoid=True, loss_weight=5.0, eps=1.0),
        loss_phrase=dict(type='PhraseAlignmentLoss', loss_weight=1.0))


def test_all_layers_matched_at_once_as_mmdet_matches_each_image():
    """get_targets_layers (every layer and image, one copy to scipy and one back) gives what
    mmdet's HungarianAssigner.assign gives image by image: 3 layers, images with 2, 0 and 7
    targets (more than the 5 queries)."""
    sup = _supervision()
    g = torch.Generator().manual_seed(3)
    B, N, counts = 3, 5, (2, 0, 7)
    gts = [InstanceData(masks=(torch.rand(m, 5, 7, generator=g) > 0.5).float(),
                        labels=torch.zeros(m, dtype=torch.long)) for m in counts]
    layers = [(torch.randn(B, N, generator=g), torch.randn(B, N, 5, 7, generator=g) * 3,
               torch.rand(B, N, generator=g) * 2) for _ in range(3)]
    got = sup.get_targets_layers(layers, gts, [{}] * B)
    assert len(got) == len(layers)
    for (score, masks, phrase), (score_t, pos, mask_t, num_pos) in zip(layers, got):
        want_t, want_pos, want_masks = [], [], []
        for b in range(B):
            pred = InstanceData(score_logits=score[b], masks=masks[b], phrase_costs=phrase[b])
            gt_inds = sup.assigner.assign(pred, gts[b], img_meta={}).gt_inds  # 0 = unmatched
            want_t.append((gt_inds > 0).float())
            q = torch.arange(N)[gt_inds > 0]  # ascending
            want_pos.append(q + b * N)
            want_masks.append(gts[b].masks[gt_inds[q] - 1])
        assert torch.equal(score_t, torch.stack(want_t))
        assert torch.equal(pos, torch.cat(want_pos))
        assert torch.equal(mask_t, torch.cat(want_masks))
        assert num_pos == sum(min(N, m) for m in counts) == 7


def test_the_costs_of_a_layer_are_one_set_of_kernels_whatever_the_batch():
    """The match costs of a layer are computed for the whole batch at once: the non-view ops
    of get_targets_layers (a proxy for kernel launches) do not grow with the images, while
    mmdet's per-image assign would add ~27 per image and layer; and the matches of the
    batched costs are those of assign on each image."""
    from model_helpers import OpCount
    sup = _supervision()
    g = torch.Generator().manual_seed(5)
    ops = {}
    for B in (2, 8):
        counts = [(b % 4) for b in range(B)]
        gts = [InstanceData(masks=(torch.rand(m, 6, 6, generator=g) > 0.5).float(),
                            labels=torch.zeros(m, dtype=torch.long)) for m in counts]
        layers = [(torch.randn(B, 4, generator=g), torch.randn(B, 4, 6, 6, generator=g) * 3,
                   torch.rand(B, 4, generator=g)) for _ in range(4)]
        with OpCount(views=False) as count:
            got = sup.get_targets_layers(layers, gts, [{}] * B)
        ops[B] = count.n
        for (score, masks, phrase), (score_t, _, _, _) in zip(layers, got):
            for b in range(B):
                pred = InstanceData(score_logits=score[b], masks=masks[b],
                                    phrase_costs=phrase[b])
                gt_inds = sup.assigner.assign(pred, gts[b], img_meta={}).gt_inds
                assert torch.equal(score_t[b], (gt_inds > 0).float())
    # 8 images (6 with targets) take as many ops as 2 (1 with targets): 116 each here; the
    # per-image matching took 115 and 655
    assert ops[8] == ops[2], ops


def test_the_assigner_must_give_match_costs():
    from mmrefer.models.instalign import PhraseAlignedInstanceSupervision
    with pytest.raises(TypeError, match='must be a HungarianAssigner.*MaxIoUAssigner'):
        PhraseAlignedInstanceSupervision(
            dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5),
            loss_score=dict(type='CrossEntropyLoss', use_sigmoid=True),
            loss_mask=dict(type='CrossEntropyLoss', use_sigmoid=True),
            loss_dice=dict(type='DiceLoss', use_sigmoid=True))
