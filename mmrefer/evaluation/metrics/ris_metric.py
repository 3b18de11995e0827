"""RIS metric (mIoU, oIoU, Pr@0.5..0.9), see :mod:`mmrefer.evaluation.functional.ris_metrics`."""
from typing import Dict, List, Sequence

import numpy as np

from mmrefer.registry import METRICS
from ..functional.ris_metrics import ris_metrics_from_stats, ris_per_sample
from .ref_metric_base import BaseRefMetric


@METRICS.register_module()
class RISMetric(BaseRefMetric):
    """Referring image segmentation metric (LAVT protocol) over every sample.

    Reads ``pred_mask`` and ``gt_merged_mask`` (or ``ori_gt_merged_mask``); no-target samples,
    if any, are scored like any other (empty GT); use :class:`GRESMetric` for gRefCOCO.
    See :class:`BaseRefMetric` for the arguments.
    """
    default_prefix = 'ris'

    def process(self, data_batch, data_samples: Sequence) -> None:
        for ds in data_samples:
            ds = self._as_dict(ds)
            pred, gt = self._mask_pair(ds)
            self.results.append(dict(ids=self._ids(ds), **self._counts(pred, gt)))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        inter = self._column(results, 'inter', np.int64)
        union = self._column(results, 'union', np.int64)
        metrics = ris_metrics_from_stats(inter, union)
        if self.dump_per_sample:
            per = ris_per_sample(inter, union)
            self._dump([dict(**r['ids'], I=i, U=u, IoU=iou, pred_area=r['pred_area'],
                             gt_area=r['gt_area'])
                        for r, i, u, iou in zip(results, per['I'], per['U'], per['IoU'])],
                       metrics)
        return metrics
