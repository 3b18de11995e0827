"""Referring image segmentation metrics (LAVT / DMMI protocol, RefCOCO/+/g).

With per-sample counts ``I_i, U_i`` (see :mod:`.mask_stats`) over all N samples::

    IoU_i = I_i / U_i            (0 when U_i == 0, as LAVT's test.py does)
    oIoU  = 100 * sum_i I_i / sum_i U_i
    mIoU  = 100 * mean_i IoU_i
    Pr@t  = 100 * #{i : IoU_i >= t} / N      for t in 0.5, 0.6, 0.7, 0.8, 0.9

Every sample counts, including any no-target one (RefCOCO has none; use the GRES metric for
gRefCOCO). ``oIoU`` is ``nan`` when every union is empty.
"""
from typing import Dict, Sequence

import numpy as np

from .mask_stats import (MaskLike, as_counts, iou_from_counts, mask_stats, mean_percent, percent,
                         precision_at)

RIS_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def ris_per_sample(inter: np.ndarray, union: np.ndarray) -> Dict[str, np.ndarray]:
    """Per-sample ``I``, ``U`` and ``IoU`` arrays (what the dump option writes)."""
    inter, union = as_counts(inter, union)
    return dict(I=inter, U=union, IoU=iou_from_counts(inter, union))


def ris_metrics_from_stats(inter: np.ndarray, union: np.ndarray) -> Dict[str, float]:
    """RIS metrics from per-sample intersection and union counts (shape ``[N]``)."""
    per = ris_per_sample(inter, union)
    results = dict(mIoU=mean_percent(per['IoU']), oIoU=percent(per['I'].sum(), per['U'].sum()))
    results.update(precision_at(per['IoU'], RIS_THRESHOLDS))
    return results


def ris_metrics(pred_masks: Sequence[MaskLike], gt_masks: Sequence[MaskLike]) -> Dict[str, float]:
    """mIoU, oIoU and Pr@0.5..0.9 (percent) of N mask pairs (sizes may differ per sample)."""
    stats = mask_stats(pred_masks, gt_masks)
    return ris_metrics_from_stats(stats['inter'], stats['union'])
