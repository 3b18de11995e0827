"""RefCOCO / RefCOCO+ / RefCOCOg (``refs(unc).p``, ``refs(umd).p``, ``refs(google).p``).

Each ref names exactly one annotation (``ann_id`` int); its box (COCO xywh -> xyxy) is the REC
target. One sample per sentence; see :mod:`mmrefer.datasets.base_ref` for the shared rules.
"""
from typing import List, Optional, Tuple

from mmrefer.registry import DATASETS
from .base_ref import BaseRefDataset, union_box

__all__ = ['RefCOCODataset']


@DATASETS.register_module()
class RefCOCODataset(BaseRefDataset):
    """RefCOCO-family dataset, one sample per sentence.

    Example::

        dict(type='RefCOCODataset', data_root='data/', ann_file='refcoco/instances.json',
             split_file='refcoco/refs(unc).p', split='val',
             data_prefix=dict(img_path='images/train2014/'),
             metainfo=dict(dataset_name='refcoco'))

    ``metainfo['dataset_name']`` (``refcoco``, ``refcoco+``, ``refcocog``) becomes each sample's
    ``source``. See :class:`~mmrefer.datasets.base_ref.BaseRefDataset` for the arguments.
    """

    METAINFO = dict(dataset_name='refcoco')

    def parse_targets(self, ref: dict, refs_file: str) -> Tuple[bool, List[int], str]:
        if 'ann_id' not in ref:
            raise KeyError(f'{refs_file}: ref_id {ref.get("ref_id")} has no ann_id')
        aid = ref['ann_id']
        if isinstance(aid, (list, tuple)):
            if len(aid) != 1:
                raise ValueError(f'{refs_file}: ref_id {ref.get("ref_id")} has ann_id {aid}; '
                                 'RefCOCO refs name exactly one annotation (use '
                                 'GRefCOCODataset for multi/no-target refs)')
            aid = aid[0]
        return False, [int(aid)], self.dataset_name

    def ref_bbox(self, ref: dict, ann_ids: List[int], instances: List[dict]) -> Optional[list]:
        # the single target annotation's own box
        return union_box([instances[0]['bbox']]) if instances else None
