"""Pure mask metrics: hand-computed cases, edge cases and cross-checks with loop references."""
import math

import numpy as np
import pytest
import torch

from mmrefer.evaluation.functional import (gres_metrics, gres_per_sample, mask_stats,
                                           refzom_metrics, ris_metrics)
from refer_eval_reference import assert_same, dmmi_reference, lavt_reference, rela_reference


def m(rows):
    return torch.tensor(rows, dtype=torch.bool)


# ------------------------------------------------------------------------------------ RIS
def test_ris_hand_computed_mixed_sizes_and_types():
    preds = [m([[1, 1], [0, 0]]),                          # I=1 U=2 -> 0.5
             np.array([[1, 1, 1, 1, 1, 1, 1, 1, 1, 1]], dtype=np.uint8),  # I=7 U=10 -> 0.7
             np.zeros((3, 3), dtype=bool),                 # U=0 -> IoU 0
             m([[0, 1, 1]])]                               # I=2 U=2 -> 1
    gts = [m([[1, 0], [0, 0]]),
           torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0, 0, 0]], dtype=torch.uint8),
           np.zeros((3, 3), dtype=np.uint8),
           np.array([[0, 1, 1]])]
    res = ris_metrics(preds, gts)
    assert res['mIoU'] == pytest.approx((0.5 + 0.7 + 0 + 1) / 4 * 100)
    assert res['oIoU'] == pytest.approx((1 + 7 + 0 + 2) * 100 / (2 + 10 + 0 + 2))
    # IoU exactly 0.7 passes Pr@0.7 (>=)
    assert res['Pr@0.5'] == 75.0
    assert res['Pr@0.6'] == 50.0
    assert res['Pr@0.7'] == 50.0
    assert res['Pr@0.8'] == 25.0
    assert res['Pr@0.9'] == 25.0


def test_ris_all_unions_empty_and_errors():
    res = ris_metrics([np.zeros((2, 2), bool)], [np.zeros((2, 2), bool)])
    assert res['mIoU'] == 0.0 and math.isnan(res['oIoU']) and res['Pr@0.5'] == 0.0
    with pytest.raises(ValueError, match='no samples'):
        ris_metrics([], [])
    with pytest.raises(ValueError, match='sample 0'):
        ris_metrics([np.zeros((2, 2))], [np.zeros((2, 3))])
    with pytest.raises(ValueError, match='2 samples'):
        ris_metrics([np.zeros((2, 2))] * 2, [np.zeros((2, 2))])
    with pytest.raises(ValueError, match=r'pred_masks\[0\]'):
        ris_metrics([np.zeros((2, 2, 2))], [np.zeros((2, 2, 2))])


def test_mask_stats_accepts_stacked_and_leading_one():
    p = torch.tensor([[[1, 0], [1, 1]], [[0, 0], [0, 1]]])
    g = np.array([[[1, 1], [0, 1]], [[0, 0], [0, 0]]])
    s = mask_stats(p, g)
    assert s['inter'].tolist() == [2, 0]
    assert s['union'].tolist() == [4, 1]
    assert s['pred_area'].tolist() == [3, 1]
    assert s['gt_area'].tolist() == [3, 0]
    s1 = mask_stats([p[0][None]], [g[0][None]])
    assert s1['inter'].tolist() == [2] and s1['union'].tolist() == [4]
    rng = np.random.default_rng(7)
    ps, gs = rng.random((6, 5, 4)) < 0.5, (rng.random((6, 5, 4)) < 0.5).astype(np.uint8)
    stacked, listed = mask_stats(torch.from_numpy(ps), gs), mask_stats(list(ps), list(gs))
    for k in listed:
        assert stacked[k].dtype == np.int64 and stacked[k].tolist() == listed[k].tolist(), k
    with pytest.raises(ValueError, match='differs'):
        mask_stats(ps, gs[:, :4])


def _random_case(rng, n, p_empty=0.2):
    preds, gts = [], []
    for _ in range(n):
        h, w = rng.integers(1, 9, size=2)
        g = rng.random((h, w)) < rng.random()
        p = rng.random((h, w)) < rng.random()
        if rng.random() < p_empty:
            g[:] = False
        if rng.random() < p_empty:
            p[:] = False
        preds.append(torch.from_numpy(p) if rng.random() < 0.5 else p)
        gts.append(g.astype(np.uint8))
    return preds, gts


@pytest.mark.parametrize('seed', range(5))
def test_ris_matches_loop_reference(seed):
    rng = np.random.default_rng(seed)
    preds, gts = _random_case(rng, 40)
    assert_same(ris_metrics(preds, gts), lavt_reference(preds, gts))


# ------------------------------------------------------------------------------------ GRES
def _gres_case():
    preds = [
        m([[1, 0], [0, 0]]),      # targeted TN: I=1 U=2 -> 0.5
        m([[1, 1], [1, 0]]),      # targeted FP (flag): I=0 (raw 3), U=4 kept -> 0
        m([[0, 0], [0, 0]]),      # no-target TP -> IoU 1, adds nothing
        m([[1, 0], [0, 0]]),      # no-target FN -> U = 1 (pred area), IoU 0
        m([[0, 1], [0, 0]]),      # targeted TN, perfect -> 1
        m([[0, 0], [0, 0]]),      # targeted, empty pred without flag (TN) -> I=0 U=1 -> 0
        m([[1] * 10]),            # targeted TN, 1x10: I=7 U=10 -> 0.7 exactly
    ]
    gts = [
        m([[1, 1], [0, 0]]), m([[1, 1], [1, 1]]), m([[0, 0], [0, 0]]), m([[0, 0], [0, 0]]),
        m([[0, 1], [0, 0]]), m([[1, 0], [0, 0]]), m([[1] * 7 + [0] * 3]),
    ]
    pred_nt = [False, True, True, False, False, False, False]
    gt_nt = [False, False, True, True, False, False, False]
    return preds, gts, pred_nt, gt_nt


def test_gres_hand_computed_rela_cases():
    preds, gts, pred_nt, gt_nt = _gres_case()
    res = gres_metrics(preds, gts, pred_nt, gt_nt)
    cum_i, cum_u = 1 + 0 + 0 + 0 + 1 + 0 + 7, 2 + 4 + 0 + 1 + 1 + 1 + 10
    assert res['cIoU'] == pytest.approx(cum_i * 100 / cum_u)
    assert res['gIoU'] == pytest.approx((0.5 + 0 + 1 + 0 + 1 + 0 + 0.7) / 7 * 100)
    assert res['N-acc'] == 50.0          # TP=1, FN=1
    assert res['T-acc'] == 80.0          # TN=4, FP=1
    # Pr over the 5 targeted samples only: IoUs 0.5, 0, 1, 0, 0.7
    assert res['Pr@0.7'] == 40.0
    assert res['Pr@0.8'] == 20.0
    assert res['Pr@0.9'] == 20.0
    assert set(res) == {'cIoU', 'gIoU', 'N-acc', 'T-acc', 'Pr@0.7', 'Pr@0.8', 'Pr@0.9'}
    assert_same(res, rela_reference(preds, gts, pred_nt, gt_nt))

    per = gres_per_sample(*[mask_stats(preds, gts)[k] for k in ('inter', 'union')],
                          pred_nt, gt_nt)
    assert per['I'].tolist() == [1, 0, 0, 0, 1, 0, 7]
    assert per['U'].tolist() == [2, 4, 0, 1, 1, 1, 10]
    assert per['IoU'].tolist() == [0.5, 0.0, 1.0, 0.0, 1.0, 0.0, 0.7]
    assert per['outcome'].tolist() == ['TN', 'FP', 'TP', 'FN', 'TN', 'TN', 'TN']


def test_gres_empty_mask_without_flag_is_not_no_target():
    """A no-target sample answered with an empty mask but no flag is a FN with IoU 0."""
    z = np.zeros((3, 3), bool)
    res = gres_metrics([z, m([[1, 1, 0]])], [z, m([[1, 1, 0]])], [False, False], [True, False])
    assert res['N-acc'] == 0.0 and res['T-acc'] == 100.0
    assert res['gIoU'] == 50.0 and res['cIoU'] == 100.0   # FN adds U=0 here


def test_gres_false_positive_keeps_predicted_union():
    g = m([[1, 1, 0, 0]])
    p = m([[1, 0, 1, 1]])           # U = 4 (3 predicted + 1 missed GT)
    res = gres_metrics([p, np.zeros((1, 1), bool)], [g, np.zeros((1, 1), bool)],
                       [True, True], [False, True])
    assert res['cIoU'] == 0.0 and res['gIoU'] == 50.0
    assert res['T-acc'] == 0.0 and res['N-acc'] == 100.0
    # the FP's counts: I zeroed, U kept; the TP's both zeroed
    per = gres_per_sample([1, 3], [4, 5], [True, True], [False, True])
    assert per['I'].tolist() == [0, 0] and per['U'].tolist() == [4, 0]


def test_gres_without_no_target_samples_reports_zero_accuracies():
    """ReLA sets both N_acc and T_acc to 0 when a split has no no-target sample."""
    res = gres_metrics([m([[1, 0]]), m([[1, 1]])], [m([[1, 0]]), m([[0, 1]])],
                       [False, True], [False, False])
    assert res['N-acc'] == 0.0 and res['T-acc'] == 0.0
    assert res['gIoU'] == 50.0
    assert res['cIoU'] == pytest.approx(100 * 1 / 3)
    assert res['Pr@0.9'] == 50.0


def test_gres_all_no_target_split():
    z = [np.zeros((2, 2), bool)] * 3
    res = gres_metrics(z, z, [True, True, True], [True, True, True])
    assert res['gIoU'] == 100.0 and res['N-acc'] == 100.0
    for k in ('cIoU', 'T-acc', 'Pr@0.7', 'Pr@0.8', 'Pr@0.9'):   # 0/0: undefined
        assert math.isnan(res[k]), k
    res = gres_metrics(z[:2] + [m([[1, 0], [0, 0]])], z, [True, True, False], [True] * 3)
    assert res['cIoU'] == 0.0 and res['gIoU'] == pytest.approx(200 / 3)
    assert res['N-acc'] == pytest.approx(200 / 3)


def test_gres_targeted_union_zero_scores_zero():
    z = np.zeros((2, 2), bool)
    res = gres_metrics([z, m([[1, 0], [0, 0]])], [z, m([[1, 0], [0, 0]])], [False, False],
                       [False, False])
    assert res['gIoU'] == 50.0 and res['cIoU'] == 100.0 and res['Pr@0.7'] == 50.0


def test_gres_flag_validation():
    z = np.zeros((2, 2), bool)
    with pytest.raises(ValueError, match='pred_no_target'):
        gres_metrics([z], [z], [True, False], [False])
    with pytest.raises(ValueError, match='gt_no_target'):
        gres_metrics([z], [z], [True], ['yes'])


@pytest.mark.parametrize('seed', range(6))
def test_gres_matches_loop_reference(seed):
    rng = np.random.default_rng(100 + seed)
    n = 50
    preds, gts = _random_case(rng, n)
    gt_nt = rng.random(n) < 0.3
    for i in np.flatnonzero(gt_nt):
        gts[i] = np.zeros_like(gts[i])
    pred_nt = rng.random(n) < 0.3
    flags = (torch.from_numpy(pred_nt), gt_nt.tolist()) if seed % 2 else (pred_nt, gt_nt)
    assert_same(gres_metrics(preds, gts, *flags), rela_reference(preds, gts, pred_nt, gt_nt))


# ------------------------------------------------------------------------------------ Ref-ZOM
def test_refzom_hand_computed():
    preds = [m([[1, 1], [0, 0]]),   # one: I=1 U=2 -> 0.5
             m([[1, 1, 1]]),        # many: I=3 U=3 -> 1
             np.zeros((2, 2)),      # zero, empty -> correct
             m([[0, 1]]),           # zero, not empty -> wrong
             m([[0, 0], [0, 0]])]   # zero, empty -> correct
    gts = [m([[1, 0], [0, 0]]), m([[1, 1, 1]]), np.zeros((2, 2)), m([[0, 0]]),
           m([[0, 0], [0, 0]])]
    is_zero = [False, False, True, True, True]
    res = refzom_metrics(preds, gts, is_zero)
    assert res['oIoU'] == pytest.approx(4 * 100 / 5)
    assert res['mIoU'] == pytest.approx(75.0)
    assert res['Acc'] == pytest.approx(200 / 3)
    assert [res[f'Pr@{t}'] for t in ('0.5', '0.6', '0.7', '0.8', '0.9')] == [100, 50, 50, 50, 50]
    assert_same(res, dmmi_reference(preds, gts, is_zero))


def test_refzom_edge_groups():
    z = np.zeros((2, 2), bool)
    only_zero = refzom_metrics([z, m([[1, 0], [0, 0]])], [z, z], [True, True])
    assert only_zero['Acc'] == 50.0
    assert all(math.isnan(only_zero[k]) for k in ('oIoU', 'mIoU', 'Pr@0.5'))
    no_zero = refzom_metrics([m([[1, 0]])], [m([[1, 1]])], [False])
    assert math.isnan(no_zero['Acc']) and no_zero['mIoU'] == 50.0 and no_zero['Pr@0.5'] == 100.0


@pytest.mark.parametrize('seed', range(4))
def test_refzom_matches_loop_reference(seed):
    rng = np.random.default_rng(200 + seed)
    preds, gts = _random_case(rng, 40, p_empty=0.4)
    is_zero = rng.random(40) < 0.3
    assert_same(refzom_metrics(preds, gts, is_zero), dmmi_reference(preds, gts, is_zero))
