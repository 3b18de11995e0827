"""Generalized RES metrics (gRefCOCO), ReLA's ``refer_evaluation.py`` after its 2023-08-26 fix.

Each sample has counts ``I_i, U_i`` of the predicted mask against the merged GT mask, the GT
no-target flag ``g_i`` and the model's no-target flag ``p_i``. The no-target decision is the flag
alone (an empty mask without the flag is not a no-target answer). Effective counts::

    g_i and p_i        (TP)  I'_i = 0, U'_i = 0,   IoU'_i = 1
    g_i and not p_i    (FN)  I'_i = 0, U'_i = U_i, IoU'_i = 0    (U_i = predicted area)
    not g_i and p_i    (FP)  I'_i = 0, U'_i = U_i, IoU'_i = 0    (U kept: the mask is not zeroed)
    not g_i, not p_i   (TN)  I'_i = I_i, U'_i = U_i, IoU'_i = I_i / U_i (0 when U_i == 0)

    cIoU  = 100 * sum I' / sum U'                        (nan when sum U' == 0)
    gIoU  = 100 * sum IoU' / N                           (all N samples)
    N-acc = 100 * TP / (TP + FN),  T-acc = 100 * TN / (TN + FP)
    Pr@t  = 100 * #{targeted i : IoU'_i >= t} / #targeted   for t in 0.7, 0.8, 0.9

ReLA reports N-acc / T-acc as fractions; we report percent. As in ReLA, when the split has no
no-target sample at all both N-acc and T-acc are 0. When it has no targeted sample T-acc and Pr@t
are ``nan`` (ReLA divides by zero there).
"""
from typing import Dict, Sequence

import numpy as np

from .mask_stats import (MaskLike, as_counts, iou_from_counts, mask_stats, percent,
                         precision_at, to_flags)

GRES_THRESHOLDS = (0.7, 0.8, 0.9)


def _check(inter, union, pred_nt, gt_nt):
    inter, union = as_counts(inter, union)
    n = inter.shape[0]
    return (inter, union, to_flags(pred_nt, 'pred_no_target', n),
            to_flags(gt_nt, 'gt_no_target', n))


def gres_per_sample(inter, union, pred_no_target, gt_no_target) -> Dict[str, np.ndarray]:
    """Effective per-sample ``I``, ``U``, ``IoU`` (ReLA's detailed results) and the TP/FN/FP/TN
    outcome of the no-target decision."""
    inter, union, pred_nt, gt_nt = _check(inter, union, pred_no_target, gt_no_target)
    tp = gt_nt & pred_nt
    eff_inter = np.where(gt_nt | pred_nt, 0, inter)
    eff_union = np.where(tp, 0, union)
    iou = iou_from_counts(eff_inter, eff_union)
    iou[tp] = 1.0
    outcome = np.where(gt_nt, np.where(pred_nt, 'TP', 'FN'), np.where(pred_nt, 'FP', 'TN'))
    return dict(I=eff_inter, U=eff_union, IoU=iou, outcome=outcome)


def gres_metrics_from_stats(inter, union, pred_no_target, gt_no_target) -> Dict[str, float]:
    """GRES metrics from raw per-sample counts ``I``, ``U`` and the two flag arrays."""
    inter, union, pred_nt, gt_nt = _check(inter, union, pred_no_target, gt_no_target)
    per = gres_per_sample(inter, union, pred_nt, gt_nt)
    n = inter.shape[0]
    tp = int(np.count_nonzero(gt_nt & pred_nt))
    fn = int(np.count_nonzero(gt_nt & ~pred_nt))
    fp = int(np.count_nonzero(~gt_nt & pred_nt))
    tn = int(np.count_nonzero(~gt_nt & ~pred_nt))
    # ReLA accumulates gIoU with a running float sum; cumsum is that same sequential sum.
    giou_sum = float(np.cumsum(per['IoU'])[-1])
    results = dict(cIoU=percent(per['I'].sum(), per['U'].sum()), gIoU=100. * (giou_sum / n))
    if tp + fn > 0:
        results['N-acc'] = percent(tp, tp + fn)
        results['T-acc'] = percent(tn, tn + fp)
    else:  # ReLA: no no-target sample in the split -> both accuracies are 0
        results['N-acc'] = 0.0
        results['T-acc'] = 0.0
    results.update(precision_at(per['IoU'][~gt_nt], GRES_THRESHOLDS))
    return results


def gres_metrics(pred_masks: Sequence[MaskLike], gt_masks: Sequence[MaskLike], pred_no_target,
                 gt_no_target) -> Dict[str, float]:
    """cIoU, gIoU, N-acc, T-acc, Pr@0.7..0.9 (percent) of N samples (ReLA arithmetic).

    Args:
        pred_masks: N predicted masks ``[H_i, W_i]``.
        gt_masks: N merged GT masks (all zero for no-target samples).
        pred_no_target: N bools, the model's no-target flags.
        gt_no_target: N bools, True for no-target expressions.
    """
    stats = mask_stats(pred_masks, gt_masks)
    return gres_metrics_from_stats(stats['inter'], stats['union'], pred_no_target, gt_no_target)
