"""Ref-ZOM metric (DMMI protocol), see :mod:`mmrefer.evaluation.functional.refzom_metrics`."""
from typing import Dict, List, Sequence

import numpy as np

from mmrefer.registry import METRICS
from ..functional.refzom_metrics import refzom_metrics_from_stats, refzom_per_sample
from .ref_metric_base import BaseRefMetric

ACC_SOURCES = ('empty_mask', 'flag')


@METRICS.register_module()
class RefZOMMetric(BaseRefMetric):
    """Ref-ZOM metric: oIoU, mIoU, Pr@0.5..0.9 over one/many samples, Acc over zero samples.

    A sample is one-to-zero when its ``no_target`` metainfo is true (or, without that key, when
    ``source == 'zero'``).

    Args:
        acc_source (str): ``'empty_mask'`` (DMMI: a zero sample is correct when ``pred_mask`` is
            completely empty) or ``'flag'`` (InstanceVG: when ``pred_no_target`` is set).
        **kwargs: see :class:`BaseRefMetric`.
    """
    default_prefix = 'refzom'

    def __init__(self, acc_source: str = 'empty_mask', **kwargs) -> None:
        super().__init__(**kwargs)
        if acc_source not in ACC_SOURCES:
            raise ValueError(f'RefZOMMetric: acc_source must be one of {ACC_SOURCES}, '
                             f'got {acc_source!r}')
        self.acc_source = acc_source

    def _is_zero(self, ds) -> bool:
        if 'no_target' in ds and ds['no_target'] is not None:
            return self._flag(ds['no_target'])
        return self._require(ds, 'source', 'Ref-ZOM samples need no_target or source') == 'zero'

    def process(self, data_batch, data_samples: Sequence) -> None:
        for ds in data_samples:
            ds = self._as_dict(ds)
            pred, gt = self._mask_pair(ds)
            counts = self._counts(pred, gt)
            if self.acc_source == 'empty_mask':
                pred_empty = counts['pred_area'] == 0
            else:
                pred_empty = self._flag(self._require(ds, 'pred_no_target'))
            self.results.append(dict(ids=self._ids(ds), is_zero=self._is_zero(ds),
                                     pred_empty=pred_empty, **counts))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        cols = [self._column(results, k, dt) for k, dt in
                (('inter', np.int64), ('union', np.int64), ('pred_empty', bool),
                 ('is_zero', bool))]
        metrics = refzom_metrics_from_stats(*cols)
        if self.dump_per_sample:
            per = refzom_per_sample(*cols)
            self._dump([
                dict(**r['ids'], is_zero=bool(z), pred_empty=r['pred_empty'], I=i, U=u, IoU=iou,
                     correct_zero=bool(c), pred_area=r['pred_area'], gt_area=r['gt_area'])
                for r, i, u, iou, z, c in zip(results, per['I'], per['U'], per['IoU'],
                                              per['is_zero'], per['correct_zero'])
            ], metrics)
        return metrics
