"""gRefCOCO (``grefs(unc).json``, also a ``.p`` pickle): single-, multi- and no-target refs.

``ann_id`` / ``category_id`` are lists (an int is accepted); no-target refs have
``ann_id == [-1]`` (and ``no_target == True``). Targets are all listed non-crowd annotations;
the REC box is the box of their union. One sample per sentence; see
:mod:`mmrefer.datasets.base_ref` for the shared rules and ``configs/_base_/datasets/grefcoco.py``
for a config.
"""
from typing import List, Tuple

from mmrefer.registry import DATASETS
from .base_ref import BaseRefDataset

__all__ = ['GRefCOCODataset']


@DATASETS.register_module()
class GRefCOCODataset(BaseRefDataset):
    """gRefCOCO (GRES) dataset, one sample per sentence (default
    ``split_file='grefs(unc).json'``); see :class:`~mmrefer.datasets.base_ref.BaseRefDataset`."""

    METAINFO = dict(dataset_name='grefcoco')
    SPLIT_FILE = 'grefs(unc).json'

    def parse_targets(self, ref: dict, refs_file: str) -> Tuple[bool, List[int], str]:
        aids = self.ann_ids(ref, refs_file)
        no_target = aids == [-1] or not aids
        if bool(ref.get('no_target', no_target)) != no_target:
            raise ValueError(f'{refs_file}: ref_id {ref.get("ref_id")} has no_target='
                             f'{ref.get("no_target")} but ann_id={ref["ann_id"]}')
        if not no_target and -1 in aids:
            raise ValueError(f'{refs_file}: ref_id {ref.get("ref_id")} mixes -1 with real '
                             f'annotation ids: {aids}')
        return no_target, ([] if no_target else aids), self.dataset_name
