"""Referring expression comprehension (box) metrics.

For N aligned pairs of xyxy boxes (prediction ``b_i``, ground truth ``g_i``)::

    IoU_i    = |b_i ∩ g_i| / |b_i ∪ g_i|      (mmdet ``bbox_overlaps(..., is_aligned=True)``,
                                               float64; 0 for an empty union)
    Acc@0.5  = 100 * #{i : IoU_i >= 0.5} / N
    box_mIoU = 100 * mean_i IoU_i
"""
from typing import Dict, Sequence, Union

import numpy as np
import torch

BoxLike = Union[torch.Tensor, np.ndarray, Sequence[float]]


def to_boxes(boxes, name: str) -> torch.Tensor:
    """Return N xyxy boxes as a float64 ``[N, 4]`` tensor.

    ``boxes`` is an ``[N, 4]`` tensor/array or a list of N boxes (each ``[4]`` or ``[1, 4]``
    tensor, array or list).
    """
    if isinstance(boxes, (torch.Tensor, np.ndarray)):
        items = [boxes[i] for i in range(boxes.shape[0])] if boxes.ndim == 2 else None
        if items is None:
            raise ValueError(f'{name} must have shape [N, 4], got {tuple(boxes.shape)}')
    else:
        items = list(boxes)
    rows = []
    for i, box in enumerate(items):
        if isinstance(box, torch.Tensor):
            box = box.detach().cpu().numpy()
        arr = np.asarray(box, dtype=np.float64)
        if arr.size != 4:
            raise ValueError(f'{name}[{i}] must be one xyxy box with 4 values, got shape '
                             f'{arr.shape}')
        rows.append(arr.reshape(4))
    if not rows:
        return torch.zeros((0, 4), dtype=torch.float64)
    return torch.from_numpy(np.stack(rows))


def box_iou_aligned(pred_boxes: BoxLike, gt_boxes: BoxLike) -> np.ndarray:
    """IoU of aligned pairs of xyxy boxes (float64 array ``[N]``)."""
    from mmdet.structures.bbox import bbox_overlaps

    pred = to_boxes(pred_boxes, 'pred_boxes')
    gt = to_boxes(gt_boxes, 'gt_boxes')
    if pred.shape[0] != gt.shape[0]:
        raise ValueError(f'pred_boxes has {pred.shape[0]} boxes but gt_boxes has {gt.shape[0]}')
    return bbox_overlaps(pred, gt, mode='iou', is_aligned=True).numpy()


def rec_metrics_from_iou(iou) -> Dict[str, float]:
    """REC metrics from per-sample box IoUs."""
    iou = np.asarray(iou, dtype=np.float64).reshape(-1)
    n = iou.shape[0]
    if n == 0:
        raise ValueError('no samples to evaluate')
    return {'Acc@0.5': float(np.count_nonzero(iou >= 0.5)) * 100. / n,
            'box_mIoU': float(np.mean(iou)) * 100.}


def rec_per_sample(iou) -> Dict[str, np.ndarray]:
    """Per-sample ``IoU`` (float64 ``[N]``) of the boxes (what the dump option writes)."""
    return dict(IoU=np.asarray(iou, dtype=np.float64).reshape(-1))


def rec_metrics(pred_boxes: BoxLike, gt_boxes: BoxLike) -> Dict[str, float]:
    """Acc@0.5 and box mIoU (percent) of N aligned xyxy box pairs."""
    return rec_metrics_from_iou(box_iou_aligned(pred_boxes, gt_boxes))
