"""Shared plumbing of the mmrefer metrics: reading data samples, resolution, per-sample dump,
and the public API over per-sample records.

The metrics keep only small per-sample records in ``self.results`` (ids, integer counts, flags),
never masks; ``compute_metrics`` hands those records to the pure functions of
:mod:`mmrefer.evaluation.functional`, so both paths share one arithmetic. Tools that score a
subset (multi-target sentences, one source, ...) use the same records through the public
class methods :meth:`BaseRefMetric.columns`, :meth:`BaseRefMetric.metrics_of` and
:meth:`BaseRefMetric.per_sample_of`.
"""
import os.path as osp
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.fileio import dump
from mmengine.logging import print_log
from mmengine.structures import BaseDataElement
from mmengine.utils import mkdir_or_exist

from mmrefer.structures.geometry import as_flag, pred_mask_to_original

from ..functional.mask_stats import mask_stats, to_bool_mask

#: metainfo keys copied into every per-sample record (those present), so dumps can be joined
#: back to the annotations whatever the rank that processed a sample.
ID_KEYS = ('sample_idx', 'img_id', 'ref_id', 'sent_id', 'source', 'img_path', 'text')
EVAL_RESOLUTIONS = ('input', 'original')


def _builtin(value: Any) -> Any:
    """Convert tensors / numpy scalars to plain Python values for JSON."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_builtin(v) for v in value]
    if isinstance(value, dict):
        return {k: _builtin(v) for k, v in value.items()}
    return value


class BaseRefMetric(BaseMetric):
    """Base of RIS/REC/GRES/Ref-ZOM metrics.

    A subclass's ``process`` appends one record per sample to ``self.results``:
    ``dict(ids=..., <column>=...)`` with the columns of :attr:`COLUMNS`. It names the arithmetic
    as two pure functions of :mod:`mmrefer.evaluation.functional` taking those columns, in
    :attr:`COLUMNS` order: :attr:`from_stats` (the summary) and :attr:`per_sample` (per-sample
    arrays, e.g. ``I``, ``U``, ``IoU``); :attr:`DUMP_FIELDS` are the record fields copied into a
    dump as they are, renamed ``(record key, dump key)``.

    Args:
        eval_resolution (str): ``'input'`` counts pixels/boxes at the network input size
            (``img_shape``, the ReLA/LAVT 480x480 protocol) against ``gt_merged_mask`` /
            ``gt_ref_bbox``; ``'original'`` maps the prediction back with
            :mod:`mmrefer.structures.geometry` and compares with ``ori_gt_merged_mask`` /
            ``ori_gt_ref_bbox`` (pack with ``PackRefInputs(keep_ori_gt=True)``). Masks are
            mapped from the probability ``pred_prob`` (bilinear, then ``> pred_mask_thr``;
            cleared by ``pred_no_target`` for ``pred_mask``, not for ``pred_mask_ungated``), or
            from the bool mask itself when the model gives no ``pred_prob``.
        dump_per_sample (str, optional): path of a ``.json`` or ``.pkl`` file that receives the
            per-sample records (ids, I, U, IoU, ...) and the summary; written on rank 0.
        collect_device (str): ``'cpu'`` or ``'gpu'``, as in mmengine's ``BaseMetric``.
        prefix (str, optional): metric name prefix; defaults to ``default_prefix``.
        collect_dir (str, optional): tmp dir for cpu collection, as in ``BaseMetric``.
    """

    #: ``(record key, numpy dtype)`` of the columns the arithmetic reads, in argument order.
    COLUMNS: Tuple[Tuple[str, Any], ...] = ()
    #: ``(record key, dump key)`` of record fields written to a dump unchanged.
    DUMP_FIELDS: Tuple[Tuple[str, str], ...] = ()
    #: ``f(*columns) -> dict[str, float]``: the summary metrics.
    from_stats: Callable[..., Dict[str, float]]
    #: ``f(*columns) -> dict[str, np.ndarray]``: per-sample arrays for the dump.
    per_sample: Callable[..., Dict[str, np.ndarray]]

    def __init__(self,
                 eval_resolution: str = 'input',
                 dump_per_sample: Optional[str] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 collect_dir: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        if eval_resolution not in EVAL_RESOLUTIONS:
            raise ValueError(f'{type(self).__name__}: eval_resolution must be one of '
                             f'{EVAL_RESOLUTIONS}, got {eval_resolution!r}')
        if dump_per_sample is not None:
            ext = osp.splitext(str(dump_per_sample))[1].lower()
            if ext not in ('.json', '.pkl', '.pickle'):
                raise ValueError(f'{type(self).__name__}: dump_per_sample must end with .json or '
                                 f'.pkl, got {dump_per_sample!r}')
        self.eval_resolution = eval_resolution
        self.dump_per_sample = dump_per_sample

    # ----------------------------------------------------------------------------- reading
    @staticmethod
    def _as_dict(data_sample) -> Mapping:
        """The Evaluator passes ``to_dict()`` output; accept data elements too."""
        if isinstance(data_sample, BaseDataElement):
            return data_sample.to_dict()
        if not isinstance(data_sample, Mapping):
            raise TypeError(f'data sample must be a dict or a data element, got '
                            f'{type(data_sample).__name__}')
        return data_sample

    def _ids(self, ds: Mapping) -> Dict[str, Any]:
        return {k: _builtin(ds[k]) for k in ID_KEYS if k in ds}

    def _require(self, ds: Mapping, key: str, hint: str = '') -> Any:
        if key not in ds or ds[key] is None:
            ids = {k: ds[k] for k in ('img_id', 'ref_id', 'sent_id') if k in ds}
            raise KeyError(f'{type(self).__name__}: data sample {ids} has no field {key!r}'
                           f'{"; " + hint if hint else ""} (fields: {sorted(ds)})')
        return ds[key]

    @staticmethod
    def _pixel_data(value) -> torch.Tensor:
        """``PixelData`` (as dict with 'data', or the element) or a bare tensor/array."""
        if isinstance(value, Mapping):
            value = value['data']
        elif isinstance(value, BaseDataElement):
            value = value.data
        return value

    def _gt_no_target(self, ds: Mapping) -> bool:
        return as_flag(self._require(ds, 'no_target', 'the dataset must set no_target'),
                       'no_target')

    def _mask_pair(self, ds: Mapping, pred_key: str = 'pred_mask'):
        """(prediction, ground truth) 2-D bool masks at the evaluation resolution.

        ``'input'``: the prediction is ``ds[pred_key]``. ``'original'``: it is
        :func:`mmrefer.structures.pred_mask_to_original` of the sample (from ``pred_prob`` when
        present, gated by ``pred_no_target`` unless ``pred_key == 'pred_mask_ungated'``; else
        from ``ds[pred_key]``).
        """
        pred = self._require(ds, pred_key, f'the model must fill {pred_key}')
        if self.eval_resolution == 'input':
            pred = to_bool_mask(pred, pred_key)
            gt = self._pixel_data(self._require(ds, 'gt_merged_mask'))
        else:
            pred = pred_mask_to_original(ds, ungated=pred_key == 'pred_mask_ungated')
            gt = self._pixel_data(
                self._require(ds, 'ori_gt_merged_mask',
                              "eval_resolution='original' needs PackRefInputs(keep_ori_gt=True)"))
        gt = to_bool_mask(gt, 'gt_merged_mask')
        if gt.shape != pred.shape:
            raise ValueError(f'{type(self).__name__}: sample {self._ids(ds)}: pred mask shape '
                             f'{tuple(pred.shape)} differs from gt mask shape {tuple(gt.shape)} '
                             f'(eval_resolution={self.eval_resolution!r})')
        return pred, gt.to(pred.device)

    @staticmethod
    def _counts(pred: torch.Tensor, gt: torch.Tensor) -> Dict[str, int]:
        """I, U, predicted and GT areas of one sample (same code as the pure functions)."""
        stats = mask_stats([pred], [gt])
        return {k: int(v[0]) for k, v in stats.items()}

    # ------------------------------------------------------------------ records -> metrics
    @classmethod
    def columns(cls, records: Sequence[dict],
                select: Optional[Sequence] = None) -> Dict[str, np.ndarray]:
        """The :attr:`COLUMNS` of per-sample records (``self.results`` or their collection) as
        numpy arrays ``[N]``, keyed by record key, in argument order.

        Args:
            records: records written by this class's ``process``.
            select: optional subset: a bool mask ``[N]`` or integer indices.
        """
        if len(records) == 0:
            raise ValueError(f'{cls.__name__}: no per-sample records to evaluate')
        missing = [k for k, _ in cls.COLUMNS if k not in records[0]]
        if missing:
            raise KeyError(f'{cls.__name__}: records lack {missing} (keys: {sorted(records[0])}); '
                           f'pass records written by {cls.__name__}.process')
        cols = {k: np.asarray([r[k] for r in records], dtype=dt) for k, dt in cls.COLUMNS}
        if select is None:
            return cols
        select = np.asarray(select)
        if select.dtype == bool and select.shape != (len(records), ):
            raise ValueError(f'{cls.__name__}: select mask has shape {select.shape}, expected '
                             f'({len(records)},)')
        return {k: v[select] for k, v in cols.items()}

    @classmethod
    def metrics_of(cls, records: Sequence[dict],
                   select: Optional[Sequence] = None) -> Dict[str, float]:
        """The metrics (unprefixed keys, e.g. ``gIoU``) of the records, or of the subset
        ``select`` (bool mask or indices), with the arithmetic of ``compute_metrics``."""
        return cls.from_stats(*cls.columns(records, select).values())

    @classmethod
    def per_sample_of(cls, records: Sequence[dict]) -> List[dict]:
        """One row per record: its ids, its :attr:`DUMP_FIELDS` and the per-sample values of
        :attr:`per_sample` (what ``dump_per_sample`` writes)."""
        per = cls.per_sample(*cls.columns(records).values())
        return [dict(**r['ids'], **{out: r[key] for key, out in cls.DUMP_FIELDS},
                     **{k: v[i] for k, v in per.items()}) for i, r in enumerate(records)]

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        metrics = self.metrics_of(results)
        if self.dump_per_sample:
            self._dump(self.per_sample_of(results), metrics)
        return metrics

    # ----------------------------------------------------------------------------- dumping
    def _dump(self, records: List[dict], summary: Dict[str, float]) -> None:
        path = str(self.dump_per_sample)
        if osp.dirname(path):
            mkdir_or_exist(osp.dirname(path))
        payload = dict(
            metric=type(self).__name__,
            eval_resolution=self.eval_resolution,
            summary=_builtin(summary),
            samples=[_builtin(r) for r in records])
        dump(payload, path)
        print_log(f'{type(self).__name__}: per-sample results of {len(records)} samples written '
                  f'to {path}', logger='current')
