"""RIS metric (mIoU, oIoU, Pr@0.5..0.9), see :mod:`mmrefer.evaluation.functional.ris_metrics`."""
from typing import Sequence

import numpy as np

from mmrefer.registry import METRICS
from ..functional.ris_metrics import ris_metrics_from_stats, ris_per_sample
from .ref_metric_base import BaseRefMetric


@METRICS.register_module()
class RISMetric(BaseRefMetric):
    """Referring image segmentation metric (LAVT protocol) over every sample.

    Reads ``pred_mask`` and ``gt_merged_mask`` (or ``ori_gt_merged_mask``); no-target samples,
    if any, are scored like any other (empty GT); use :class:`GRESMetric` for gRefCOCO.
    Records: ``ids``, ``inter``, ``union``, ``pred_area``, ``gt_area``.
    See :class:`BaseRefMetric` for the arguments.
    """
    default_prefix = 'ris'
    COLUMNS = (('inter', np.int64), ('union', np.int64))
    DUMP_FIELDS = (('pred_area', 'pred_area'), ('gt_area', 'gt_area'))
    from_stats = staticmethod(ris_metrics_from_stats)
    per_sample = staticmethod(ris_per_sample)

    def process(self, data_batch, data_samples: Sequence) -> None:
        for ds in data_samples:
            ds = self._as_dict(ds)
            self.results.append(dict(ids=self._ids(ds), **self._counts(*self._mask_pair(ds))))
