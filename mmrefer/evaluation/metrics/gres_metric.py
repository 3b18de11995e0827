"""GRES metric (ReLA arithmetic), see :mod:`mmrefer.evaluation.functional.gres_metrics`."""
from typing import Sequence

import numpy as np

from mmrefer.registry import METRICS
from mmrefer.structures.geometry import as_flag
from ..functional.gres_metrics import gres_metrics_from_stats, gres_per_sample
from .ref_metric_base import BaseRefMetric


@METRICS.register_module()
class GRESMetric(BaseRefMetric):
    """Generalized RES metric: cIoU, gIoU, N-acc, T-acc, Pr@0.7..0.9 (percent).

    Reads ``pred_mask``, ``pred_no_target``, ``gt_merged_mask`` and the ``no_target`` metainfo,
    and ``pred_mask_ungated`` when the model sets it. The no-target decision is the model's
    ``pred_no_target`` flag (ReLA).

    A targeted sample wrongly flagged no-target (FP) scores ``I = 0``; its union is ``|gt|`` plus
    whatever the model segmented. In ReLA the mask is not cleared by the flag, so that union is
    ``|pred U gt|``. Our heads clear ``pred_mask`` when the flag fires (the user-facing answer is
    "nothing") and keep the segmentation as ``pred_mask_ungated``; the metric counts the union
    from it, as ReLA does (from ``pred_mask`` for a model that does not set it).

    Records (``self.results``): ``ids``, ``inter``, ``union``, ``pred_area``, ``gt_area``,
    ``pred_nt``, ``gt_nt``. Subsets (e.g. one ``ids['source']``, multi-target sentences):
    ``GRESMetric.metrics_of(records, select)``. See :class:`BaseRefMetric` for the arguments.
    """
    default_prefix = 'gres'
    COLUMNS = (('inter', np.int64), ('union', np.int64), ('pred_nt', bool), ('gt_nt', bool))
    DUMP_FIELDS = (('gt_nt', 'gt_no_target'), ('pred_nt', 'pred_no_target'),
                   ('pred_area', 'pred_area'), ('gt_area', 'gt_area'))
    from_stats = staticmethod(gres_metrics_from_stats)
    per_sample = staticmethod(gres_per_sample)

    def process(self, data_batch, data_samples: Sequence) -> None:
        for ds in data_samples:
            ds = self._as_dict(ds)
            pred_nt = as_flag(self._require(ds, 'pred_no_target',
                                            'the model must fill pred_no_target'))
            key = ('pred_mask_ungated' if pred_nt and ds.get('pred_mask_ungated') is not None
                   else 'pred_mask')
            self.results.append(dict(ids=self._ids(ds), pred_nt=pred_nt,
                                     gt_nt=self._gt_no_target(ds),
                                     **self._counts(*self._mask_pair(ds, key))))
