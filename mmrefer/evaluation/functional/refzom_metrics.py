"""Ref-ZOM metrics (DMMI ``test.py`` protocol).

Samples are one-to-zero (``is_zero``) or one-to-one / one-to-many. With counts ``I_i, U_i``::

    over the non-zero samples S:  IoU_i = I_i / U_i (0 when U_i == 0)
        oIoU = 100 * sum_S I / sum_S U,  mIoU = 100 * mean_S IoU,
        Pr@t = 100 * #{i in S : IoU_i >= t} / |S|      for t in 0.5 .. 0.9
    over the zero samples Z:
        Acc  = 100 * #{i in Z : predicted mask completely empty} / |Z|

A metric over an empty group is ``nan`` (DMMI's ``np.mean([])``). Acc looks at the mask only;
mmrefer models return an all-False ``pred_mask`` whenever they flag no-target, so a raised flag
counts as correct.
"""
from typing import Dict, Sequence

import numpy as np

from .mask_stats import (MaskLike, as_counts, iou_from_counts, mask_stats, mean_percent, percent,
                         precision_at, to_flags)

REFZOM_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def refzom_per_sample(inter, union, pred_empty, is_zero) -> Dict[str, np.ndarray]:
    """Per-sample ``I``, ``U``, ``IoU`` (0 for zero samples) and ``correct_zero`` (zero samples
    predicted empty)."""
    inter, union = as_counts(inter, union)
    n = inter.shape[0]
    is_zero = to_flags(is_zero, 'is_zero', n)
    pred_empty = to_flags(pred_empty, 'pred_empty', n)
    iou = np.where(is_zero, 0.0, iou_from_counts(inter, union))
    return dict(I=inter, U=union, IoU=iou, is_zero=is_zero, correct_zero=is_zero & pred_empty)


def refzom_metrics_from_stats(inter, union, pred_empty, is_zero) -> Dict[str, float]:
    """Ref-ZOM metrics from per-sample counts, predicted-emptiness and zero flags."""
    per = refzom_per_sample(inter, union, pred_empty, is_zero)
    zero = per['is_zero']
    keep = ~zero
    results = dict(
        oIoU=percent(per['I'][keep].sum(), per['U'][keep].sum()),
        mIoU=mean_percent(per['IoU'][keep]),
        Acc=mean_percent(per['correct_zero'][zero].astype(np.float64)))
    results.update(precision_at(per['IoU'][keep], REFZOM_THRESHOLDS))
    return results


def refzom_metrics(pred_masks: Sequence[MaskLike], gt_masks: Sequence[MaskLike],
                   is_zero) -> Dict[str, float]:
    """oIoU, mIoU, Pr@0.5..0.9 over one/many samples and Acc over zero samples (percent)."""
    stats = mask_stats(pred_masks, gt_masks)
    return refzom_metrics_from_stats(stats['inter'], stats['union'], stats['pred_area'] == 0,
                                     is_zero)
