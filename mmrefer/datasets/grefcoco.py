"""gRefCOCO (``grefs(unc).json``, also a ``.p`` pickle): single-, multi- and no-target refs.

``ann_id`` / ``category_id`` are lists (an int is accepted); no-target refs have
``ann_id == [-1]`` (and ``no_target == True``). Targets are all listed non-crowd annotations;
the REC box is the box of their union. One sample per sentence; see
:mod:`mmrefer.datasets.base_ref` for the shared rules.
"""
from typing import List, Tuple

from mmrefer.registry import DATASETS
from .base_ref import BaseRefDataset

__all__ = ['GRefCOCODataset']


@DATASETS.register_module()
class GRefCOCODataset(BaseRefDataset):
    """gRefCOCO (GRES) dataset, one sample per sentence.

    Example::

        dict(type='GRefCOCODataset', data_root='data/', ann_file='grefcoco/instances.json',
             split_file='grefcoco/grefs(unc).json', split='val',
             data_prefix=dict(img_path='images/train2014/'))
    """

    METAINFO = dict(dataset_name='grefcoco')

    def __init__(self, *args, split_file: str = 'grefs(unc).json', **kwargs):
        super().__init__(*args, split_file=split_file, **kwargs)

    def parse_targets(self, ref: dict, refs_file: str) -> Tuple[bool, List[int], str]:
        if 'ann_id' not in ref:
            raise KeyError(f'{refs_file}: ref_id {ref.get("ref_id")} has no ann_id')
        aids = ref['ann_id']
        aids = [int(a) for a in (aids if isinstance(aids, (list, tuple)) else [aids])]
        no_target = aids == [-1] or not aids
        if bool(ref.get('no_target', no_target)) != no_target:
            raise ValueError(f'{refs_file}: ref_id {ref.get("ref_id")} has no_target='
                             f'{ref.get("no_target")} but ann_id={ref["ann_id"]}')
        if not no_target and -1 in aids:
            raise ValueError(f'{refs_file}: ref_id {ref.get("ref_id")} mixes -1 with real '
                             f'annotation ids: {aids}')
        return no_target, ([] if no_target else aids), self.dataset_name
