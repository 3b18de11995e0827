"""Ref-ZOM metric (DMMI protocol), see :mod:`mmrefer.evaluation.functional.refzom_metrics`."""
from typing import Sequence

import numpy as np

from mmrefer.registry import METRICS
from mmrefer.structures.geometry import as_flag
from ..functional.refzom_metrics import refzom_metrics_from_stats, refzom_per_sample
from .ref_metric_base import BaseRefMetric


@METRICS.register_module()
class RefZOMMetric(BaseRefMetric):
    """Ref-ZOM metric: oIoU, mIoU, Pr@0.5..0.9 over one/many samples, Acc over zero samples.

    A sample is one-to-zero when its ``no_target`` metainfo is true (or, without that key, when
    ``source == 'zero'``). As in DMMI, a zero sample is answered correctly when ``pred_mask`` is
    completely empty (mmrefer heads clear it whenever they raise the no-target flag).
    Records: ``ids``, ``inter``, ``union``, ``pred_area``, ``gt_area``, ``pred_empty``,
    ``is_zero``. See :class:`BaseRefMetric` for the arguments.
    """
    default_prefix = 'refzom'
    COLUMNS = (('inter', np.int64), ('union', np.int64), ('pred_empty', bool), ('is_zero', bool))
    DUMP_FIELDS = (('pred_empty', 'pred_empty'), ('pred_area', 'pred_area'),
                   ('gt_area', 'gt_area'))
    from_stats = staticmethod(refzom_metrics_from_stats)
    per_sample = staticmethod(refzom_per_sample)

    def _is_zero(self, ds) -> bool:
        if 'no_target' in ds and ds['no_target'] is not None:
            return as_flag(ds['no_target'], 'no_target')
        return self._require(ds, 'source', 'Ref-ZOM samples need no_target or source') == 'zero'

    def process(self, data_batch, data_samples: Sequence) -> None:
        for ds in data_samples:
            ds = self._as_dict(ds)
            counts = self._counts(*self._mask_pair(ds))
            self.results.append(dict(ids=self._ids(ds), is_zero=self._is_zero(ds),
                                     pred_empty=counts['pred_area'] == 0, **counts))
