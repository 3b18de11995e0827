"""GRES metric (ReLA arithmetic), see :mod:`mmrefer.evaluation.functional.gres_metrics`."""
from typing import Dict, List, Optional, Sequence

import numpy as np

from mmrefer.registry import METRICS
from ..functional.gres_metrics import gres_metrics_from_stats, gres_per_sample
from .ref_metric_base import BaseRefMetric

NT_SOURCES = ('flag', 'empty_mask')


@METRICS.register_module()
class GRESMetric(BaseRefMetric):
    """Generalized RES metric: cIoU, gIoU, N-acc, T-acc, Pr@0.7..0.9 (percent).

    Reads ``pred_mask``, ``pred_no_target``, ``gt_merged_mask`` and the ``no_target`` metainfo,
    and ``pred_mask_ungated`` when the model sets it.

    A targeted sample wrongly flagged no-target (FP) scores ``I = 0``; its union is ``|gt|`` plus
    whatever the model segmented. In ReLA the mask is not cleared by the flag, so that union is
    ``|pred U gt|``. Our heads clear ``pred_mask`` when the flag fires (the user-facing answer is
    "nothing") and keep the segmentation as ``pred_mask_ungated``; by default the metric counts
    the union from it, as ReLA does.

    Args:
        nt_source (str): where the predicted no-target decision comes from: ``'flag'`` (ReLA,
            the model's ``pred_no_target``) or ``'empty_mask'`` (an all-empty ``pred_mask``).
        zero_mask_on_nt (bool): count flagged samples with the cleared ``pred_mask`` (their union
            is ``|gt|``) instead of ``pred_mask_ungated``. Default False: ReLA's cIoU.
        per_source (bool): also report every metric per ``source`` (``'<source>/cIoU'``, ...)
            when more than one source is present, as ReLA does; the unprefixed keys are over
            all samples (ReLA's ``full`` plus N-acc/T-acc).
        **kwargs: see :class:`BaseRefMetric` (``eval_resolution``, ``dump_per_sample``,
            ``collect_device``, ``prefix``).
    """
    default_prefix = 'gres'

    def __init__(self, nt_source: str = 'flag', per_source: bool = False,
                 zero_mask_on_nt: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        if nt_source not in NT_SOURCES:
            raise ValueError(f'GRESMetric: nt_source must be one of {NT_SOURCES}, '
                             f'got {nt_source!r}')
        self.nt_source = nt_source
        self.per_source = per_source
        self.zero_mask_on_nt = zero_mask_on_nt

    def process(self, data_batch, data_samples: Sequence) -> None:
        for ds in data_samples:
            ds = self._as_dict(ds)
            if self.nt_source == 'flag':
                pred_nt = self._flag(self._require(ds, 'pred_no_target',
                                                   'the model must fill pred_no_target'))
                key = ('pred_mask_ungated' if pred_nt and not self.zero_mask_on_nt
                       and ds.get('pred_mask_ungated') is not None else 'pred_mask')
                counts = self._counts(*self._mask_pair(ds, key))
            else:
                counts = self._counts(*self._mask_pair(ds))
                pred_nt = counts['pred_area'] == 0
            self.results.append(dict(ids=self._ids(ds), pred_nt=pred_nt,
                                     gt_nt=self._gt_no_target(ds),
                                     source=str(ds.get('source', '')), **counts))

    @staticmethod
    def _metrics(results: List[dict], select: Optional[np.ndarray] = None) -> Dict[str, float]:
        cols = [BaseRefMetric._column(results, k, dt) for k, dt in
                (('inter', np.int64), ('union', np.int64), ('pred_nt', bool), ('gt_nt', bool))]
        if select is not None:
            cols = [c[select] for c in cols]
        return gres_metrics_from_stats(*cols)

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        metrics = self._metrics(results)
        sources = list(dict.fromkeys(r['source'] for r in results))
        if self.per_source and len(sources) > 1:
            src_col = np.asarray([r['source'] for r in results])
            for src in sources:
                for k, v in self._metrics(results, src_col == src).items():
                    metrics[f'{src}/{k}'] = v
        if self.dump_per_sample:
            per = gres_per_sample(
                self._column(results, 'inter', np.int64), self._column(results, 'union', np.int64),
                self._column(results, 'pred_nt', bool), self._column(results, 'gt_nt', bool))
            self._dump([
                dict(**r['ids'], gt_no_target=r['gt_nt'], pred_no_target=r['pred_nt'],
                     outcome=str(o), I=i, U=u, IoU=iou, pred_area=r['pred_area'],
                     gt_area=r['gt_area'])
                for r, i, u, iou, o in zip(results, per['I'], per['U'], per['IoU'], per['outcome'])
            ], metrics)
        return metrics
