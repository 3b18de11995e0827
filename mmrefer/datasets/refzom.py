"""Ref-ZOM (``refs(final).p``, DMMI, ICCV 2023): one-to-zero / one / many expressions.

Each ref carries ``source`` in ``zero``/``one``/``many`` (the sample's ``source``); ``ann_id``
is an int or a list. No-target is decided by ``source == 'zero'`` only: the ``ann_id`` of such
refs (an empty list, or an unrelated id in some records) is ignored. Splits: ``train``,
``test``. Images come from COCO train2014 + val2014 merged (``trainval2014``); see
``configs/_base_/datasets/refzom.py`` for a config.
"""
from collections import Counter
from typing import List, Tuple

from mmengine.logging import print_log

from mmrefer.registry import DATASETS
from .base_ref import BaseRefDataset

__all__ = ['RefZOMDataset']

SOURCES = ('zero', 'one', 'many')


@DATASETS.register_module()
class RefZOMDataset(BaseRefDataset):
    """Ref-ZOM dataset, one sample per sentence (defaults ``split_file='refs(final).p'``,
    ``split='test'``); see :class:`~mmrefer.datasets.base_ref.BaseRefDataset`."""

    METAINFO = dict(dataset_name='refzom')
    SPLIT_FILE = 'refs(final).p'
    SPLIT = 'test'

    def parse_targets(self, ref: dict, refs_file: str) -> Tuple[bool, List[int], str]:
        source = ref.get('source')
        if source not in SOURCES:
            raise ValueError(f'{refs_file}: ref_id {ref.get("ref_id")} has source={source!r}; '
                             f'expected one of {SOURCES}')
        if source == 'zero':
            return True, [], source
        aids = self.ann_ids(ref, refs_file)
        if not aids:
            raise ValueError(f'{refs_file}: ref_id {ref.get("ref_id")} has source={source!r} '
                             'but an empty ann_id')
        return False, aids, source

    def load_data_list(self) -> List[dict]:
        data_list = super().load_data_list()
        counts = Counter(d['source'] for d in data_list)
        print_log(f'RefZOMDataset split={self.split}: sentences per source '
                  f'{ {s: counts.get(s, 0) for s in SOURCES} }', logger='current')
        return data_list
