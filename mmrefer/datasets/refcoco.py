"""RefCOCO / RefCOCO+ / RefCOCOg (``refs(unc).p``, ``refs(umd).p``, ``refs(google).p``).

Each ref names exactly one annotation (``ann_id`` int); its box (COCO xywh -> xyxy) is the REC
target. One sample per sentence; see :mod:`mmrefer.datasets.base_ref` for the shared rules and
``configs/_base_/datasets/refcoco.py`` for a config.
"""
from typing import List, Tuple

from mmrefer.registry import DATASETS
from .base_ref import BaseRefDataset

__all__ = ['RefCOCODataset']


@DATASETS.register_module()
class RefCOCODataset(BaseRefDataset):
    """RefCOCO-family dataset, one sample per sentence (default ``split_file='refs(unc).p'``).

    ``metainfo['dataset_name']`` (``refcoco``, ``refcoco+``, ``refcocog``) becomes each sample's
    ``source``. See :class:`~mmrefer.datasets.base_ref.BaseRefDataset` for the arguments.
    """

    METAINFO = dict(dataset_name='refcoco')

    def parse_targets(self, ref: dict, refs_file: str) -> Tuple[bool, List[int], str]:
        aids = self.ann_ids(ref, refs_file)
        if aids == [-1] or ref.get('no_target'):
            raise ValueError(f'{refs_file}: ref_id {ref.get("ref_id")} is a no-target ref '
                             f'(ann_id {ref["ann_id"]}, gRefCOCO style); RefCOCODataset takes '
                             'single-target refs only: use GRefCOCODataset for this file')
        if len(aids) != 1:
            raise ValueError(f'{refs_file}: ref_id {ref.get("ref_id")} has ann_id '
                             f'{ref["ann_id"]}; RefCOCO refs name exactly one annotation (use '
                             'GRefCOCODataset for multi/no-target refs)')
        return False, aids, self.dataset_name
