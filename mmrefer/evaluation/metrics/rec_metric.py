"""REC metric (Acc@0.5, box mIoU), see :mod:`mmrefer.evaluation.functional.rec_metrics`."""
from typing import Sequence

import numpy as np
import torch

from mmrefer.registry import METRICS
from ..functional.rec_metrics import (box_iou_aligned, rec_metrics_from_iou, rec_per_sample,
                                      to_boxes)
from .ref_metric_base import BaseRefMetric


@METRICS.register_module()
class RECMetric(BaseRefMetric):
    """Box grounding metric: ``pred_box`` against ``gt_ref_bbox`` (``ori_gt_ref_bbox`` for
    ``eval_resolution='original'``, with the prediction mapped by ``box_to_original``).
    Records: ``ids``, ``iou``, ``pred_box``, ``gt_box``. See :class:`BaseRefMetric` for the
    arguments.
    """
    default_prefix = 'rec'
    COLUMNS = (('iou', np.float64), )
    DUMP_FIELDS = (('pred_box', 'pred_box'), ('gt_box', 'gt_box'))
    from_stats = staticmethod(rec_metrics_from_iou)
    per_sample = staticmethod(rec_per_sample)

    def _box_pair(self, ds):
        """(prediction, ground truth) float64 ``[4]`` boxes at the evaluation resolution."""
        pred = to_boxes([self._require(ds, 'pred_box', 'the model must fill pred_box')],
                        'pred_box')[0]
        if self.eval_resolution == 'input':
            gt = self._require(ds, 'gt_ref_bbox')
        else:
            from mmrefer.structures.geometry import box_to_original
            pred = box_to_original(pred, ds).to(torch.float64)
            gt = self._require(ds, 'ori_gt_ref_bbox',
                               "eval_resolution='original' needs PackRefInputs(keep_ori_gt=True)")
        return pred, to_boxes([gt], 'gt_ref_bbox')[0]

    def process(self, data_batch, data_samples: Sequence) -> None:
        for ds in data_samples:
            ds = self._as_dict(ds)
            pred, gt = self._box_pair(ds)
            iou = float(box_iou_aligned(pred[None], gt[None])[0])
            self.results.append(dict(ids=self._ids(ds), iou=iou, pred_box=pred.tolist(),
                                     gt_box=gt.tolist()))
