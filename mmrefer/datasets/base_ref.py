"""Shared loader for referring datasets: ``instances.json`` (COCO) + a refs file, one sample per
sentence.

Each sample (``get_data_info(i)``, see docs/contracts.md section 1)::

    img_path, img_id, ref_id, sent_id, text, no_target, source, height, width,
    instances=[dict(mask=polygons|RLE, bbox=[x1, y1, x2, y2], bbox_label=0, ignore_flag=0)],
    ref_bbox=[x1, y1, x2, y2] | None

Rules shared by all datasets (subclasses only say how a ref names its targets):

* images are resolved through ``instances.json`` by ``image_id``, never the ref's ``file_name``;
* crowd annotations are skipped; polygon parts with fewer than 3 points are dropped (an
  annotation left without any part is dropped), counted and reported in one warning;
* an annotation whose mask covers no pixel (zero area, e.g. collinear points or an empty RLE)
  is dropped, counted and reported with the same warning;
* a ref naming an annotation id absent from ``instances.json`` raises a ``KeyError`` naming the
  file, ``ref_id`` and ``ann_id`` (the official files never do this, so it means mismatched files);
* a targeted ref left without any usable target (all crowd / degenerate) is skipped and counted;
* empty sentences are skipped and counted; sentences are otherwise kept verbatim (``raw``, as
  ReLA, LAVT and DMMI feed their tokenizers, falling back to ``sent``);
* an unknown split raises a ``ValueError`` listing the splits the file holds.
"""
import copy
import json
import logging
import os.path as osp
from collections import Counter
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import pycocotools.mask as mask_utils
from mmengine.dataset import BaseDataset
from mmengine.logging import print_log

from .safe_pickle import load_refs, read_annotation_file

__all__ = ['BaseRefDataset', 'load_coco_instances']


def load_coco_instances(path: str) -> Tuple[Dict[int, dict], Dict[int, dict]]:
    """Read a COCO ``instances.json``; return ``(images_by_id, annotations_by_id)``."""
    raw = read_annotation_file(path, 'instances')
    try:
        coco = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f'instances file {path!r} is not valid JSON: {e}') from e
    if not isinstance(coco, dict):
        raise ValueError(f'instances file {path!r} must hold a COCO dict, got '
                         f'{type(coco).__name__}')
    for key in ('images', 'annotations'):
        if key not in coco:
            raise KeyError(f'instances file {path!r} has no {key!r} field')
    if not coco['images']:
        raise ValueError(f'instances file {path!r} holds no images')
    if not coco['annotations']:
        raise ValueError(f'instances file {path!r} holds no annotations')
    imgs = {int(im['id']): im for im in coco['images']}
    anns = {int(a['id']): a for a in coco['annotations']}
    return imgs, anns


def _xywh_to_xyxy(b: Sequence[float]) -> List[float]:
    x, y, w, h = (float(v) for v in b[:4])
    return [x, y, x + w, y + h]


def union_box(boxes: Sequence[Sequence[float]]) -> Optional[List[float]]:
    """Smallest xyxy box holding all ``boxes`` (None for no box)."""
    if not boxes:
        return None
    return [min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes)]


def _mask_area(mask, h: int, w: int) -> int:
    """Pixel count of polygons (list of flat coordinate lists) or an RLE dict at ``h x w``."""
    if isinstance(mask, list):
        rle = mask_utils.merge(mask_utils.frPyObjects([list(map(float, p)) for p in mask], h, w))
    elif isinstance(mask['counts'], list):
        rle = mask_utils.frPyObjects(mask, h, w)
    else:
        rle = dict(size=list(mask['size']), counts=mask['counts'].encode('ascii')
                   if isinstance(mask['counts'], str) else mask['counts'])
    return int(mask_utils.area(rle))


class BaseRefDataset(BaseDataset):
    """Base of the referring datasets (one sample per sentence).

    Args:
        data_root (str): root that ``ann_file``, ``split_file`` and ``data_prefix`` are joined to.
        ann_file (str): COCO ``instances.json``.
        split_file (str): refs file (pickle or JSON, decided by content).
        split (str | Sequence[str]): split(s) to keep (exact match).
        data_prefix (dict): ``img_path`` folder holding the images.
        exclude_images_of (list, optional): drop images that appear in other refs files' splits,
            each entry ``dict(split_file=..., splits=[...])`` or ``(split_file, splits)``; paths
            relative to ``data_root``. Used to train on RefCOCO/+/g without their val/test images.
        **kwargs: passed to :class:`mmengine.dataset.BaseDataset` (``pipeline``, ``metainfo``,
            ``test_mode``, ``lazy_init``, ``indices``, ...).
    """

    METAINFO = dict(dataset_name='ref')

    def __init__(self,
                 data_root: str = '',
                 ann_file: str = 'instances.json',
                 split_file: str = 'refs(unc).p',
                 split: Union[str, Sequence[str]] = 'val',
                 data_prefix: dict = dict(img_path='train2014/'),
                 exclude_images_of: Optional[list] = None,
                 **kwargs):
        self.split_file = split_file
        self.split = split
        self.exclude_images_of = exclude_images_of
        super().__init__(data_root=data_root, ann_file=ann_file, data_prefix=data_prefix,
                         **kwargs)

    @classmethod
    def _load_metainfo(cls, metainfo: Optional[Mapping] = None) -> dict:
        # mmengine tries to open every str value as a file (and warns); ours are plain names
        out = copy.deepcopy(cls.METAINFO)
        if metainfo is not None:
            if not isinstance(metainfo, Mapping):
                raise TypeError(f'{cls.__name__}: metainfo must be a dict, got '
                                f'{type(metainfo).__name__}')
            out.update(copy.deepcopy(dict(metainfo)))
        return out

    # --------------------------------------------------------------------- subclass interface
    def parse_targets(self, ref: dict, refs_file: str) -> Tuple[bool, List[int], str]:
        """Return ``(no_target, ann_ids, source)`` for a ref."""
        raise NotImplementedError

    def ref_bbox(self, ref: dict, ann_ids: List[int], instances: List[dict]) -> Optional[list]:
        """REC target box (xyxy); default: box of the union of the instances."""
        return union_box([inst['bbox'] for inst in instances])

    # ----------------------------------------------------------------------------- helpers
    def _path(self, p: str) -> str:
        if osp.isabs(p) or not self.data_root:
            return p
        return osp.join(self.data_root, p)

    @property
    def dataset_name(self) -> str:
        return self.metainfo.get('dataset_name', type(self).__name__)

    def _excluded_image_ids(self) -> set:
        out = set()
        for entry in self.exclude_images_of or []:
            if isinstance(entry, dict):
                if 'split_file' not in entry or 'splits' not in entry:
                    raise KeyError(f'exclude_images_of entry {entry!r} needs split_file and '
                                   'splits')
                sf, splits = entry['split_file'], entry['splits']
            else:
                sf, splits = entry
            splits = [splits] if isinstance(splits, str) else list(splits)
            path = self._path(sf)
            refs = load_refs(path)
            avail = {r.get('split') for r in refs}
            missing = [s for s in splits if s not in avail]
            if missing:
                raise ValueError(f'exclude_images_of: {path!r} has no split(s) {missing}; '
                                 f'available: {sorted(map(str, avail))}')
            out.update(int(r['image_id']) for r in refs if r.get('split') in splits)
        return out

    def _ann_to_instance(self, ann: dict, img: dict, stats: Counter,
                         examples: list) -> Optional[dict]:
        seg = ann.get('segmentation')
        h, w = int(img['height']), int(img['width'])
        if isinstance(seg, dict):
            if 'counts' not in seg or 'size' not in seg:
                raise KeyError(f'{self.ann_file}: annotation {ann["id"]} has an RLE '
                               f'segmentation without counts/size: keys {sorted(seg)}')
            if [int(v) for v in seg['size']] != [h, w]:
                raise ValueError(f'{self.ann_file}: annotation {ann["id"]} RLE size '
                                 f'{seg["size"]} differs from image {img["id"]} size [{h}, {w}]')
            mask = seg
        elif isinstance(seg, list):
            mask = [p for p in seg if len(p) >= 6]
            if len(mask) < len(seg):
                stats['degenerate polygon parts dropped'] += len(seg) - len(mask)
                if len(examples) < 5:
                    examples.append(ann['id'])
            if not mask:
                stats['annotations dropped (no valid polygon)'] += 1
                return None
        else:
            raise ValueError(f'{self.ann_file}: annotation {ann.get("id")} has segmentation of '
                             f'type {type(seg).__name__}; expected polygons or RLE dict')
        if 'bbox' not in ann:
            raise KeyError(f'{self.ann_file}: annotation {ann.get("id")} has no bbox')
        if _mask_area(mask, h, w) == 0:
            stats['annotations dropped (zero-area mask)'] += 1
            if len(examples) < 5:
                examples.append(ann['id'])
            return None
        return dict(mask=mask, bbox=_xywh_to_xyxy(ann['bbox']), bbox_label=0, ignore_flag=0)

    # ---------------------------------------------------------------------------- loading
    def load_data_list(self) -> List[dict]:
        imgs, anns = load_coco_instances(self.ann_file)
        refs_file = self._path(self.split_file)
        refs = load_refs(refs_file)
        if not refs:
            raise ValueError(f'refs file {refs_file!r} holds no refs')
        splits = [self.split] if isinstance(self.split, str) else list(self.split)
        avail = sorted({str(r.get('split')) for r in refs})
        unknown = [s for s in splits if s not in avail]
        if unknown:
            raise ValueError(f'{type(self).__name__}: split(s) {unknown} not in {refs_file!r}; '
                             f'available splits: {avail}')
        excluded = self._excluded_image_ids()
        stats, examples = Counter(), []
        data_list = []
        for ref in refs:
            if ref.get('split') not in splits:
                continue
            for key in ('ref_id', 'image_id', 'sentences'):
                if key not in ref:
                    raise KeyError(f'{refs_file}: ref {ref.get("ref_id", "?")} has no {key!r} '
                                   f'field (keys: {sorted(ref)})')
            ref_id, img_id = int(ref['ref_id']), int(ref['image_id'])
            if img_id in excluded:
                stats['refs dropped by exclude_images_of'] += 1
                continue
            if img_id not in imgs:
                raise KeyError(f'{refs_file}: ref_id {ref_id} names image_id {img_id}, which is '
                               f'not in {self.ann_file}')
            img = imgs[img_id]
            no_target, ann_ids, source = self.parse_targets(ref, refs_file)
            instances = []
            for aid in ([] if no_target else ann_ids):
                if aid not in anns:
                    raise KeyError(f'{refs_file}: ref_id {ref_id} names ann_id {aid}, which is '
                                   f'not in {self.ann_file}')
                ann = anns[aid]
                if int(ann.get('image_id', img_id)) != img_id:
                    raise ValueError(f'{refs_file}: ref_id {ref_id} (image {img_id}) names '
                                     f'ann_id {aid} of image {ann.get("image_id")}')
                if ann.get('iscrowd', 0):
                    stats['crowd target annotations skipped'] += 1
                    continue
                inst = self._ann_to_instance(ann, img, stats, examples)
                if inst is not None:
                    instances.append(inst)
            if not no_target and not instances:
                stats['refs skipped (no usable target)'] += 1
                continue
            ref_bbox = None if no_target else self.ref_bbox(ref, ann_ids, instances)
            img_path = osp.join(self.data_prefix.get('img_path', ''), img['file_name'])
            for k, sent in enumerate(ref['sentences']):
                # raw first (what ReLA/LAVT/DMMI tokenize), sent when raw is missing or blank
                text = next((t for t in (sent.get('raw'), sent.get('sent'))
                             if t and (not isinstance(t, str) or t.strip())), '')
                if not text.strip():
                    stats['empty sentences skipped'] += 1
                    continue
                data_list.append(dict(
                    img_path=img_path, img_id=img_id, ref_id=ref_id,
                    sent_id=int(sent.get('sent_id', k)), text=text, no_target=bool(no_target),
                    source=source, height=int(img['height']), width=int(img['width']),
                    instances=instances, ref_bbox=ref_bbox))
                stats[f'sentences ({source})'] += 1
        if not data_list:
            raise ValueError(f'{type(self).__name__}: no sample left for split {self.split!r} '
                             f'of {refs_file!r} ({dict(stats)})')
        summary = ', '.join(f'{k}: {v}' for k, v in sorted(stats.items()))
        # bad data (not exclude_images_of, a deliberate filter) makes the summary a warning
        bad = any(('skipped' in k or 'dropped' in k) and 'exclude_images_of' not in k
                  for k in stats)
        print_log(f'{type(self).__name__} [{self.dataset_name}] split={self.split}: '
                  f'{len(data_list)} samples; {summary}', logger='current',
                  level=logging.WARNING if bad else logging.INFO)
        if examples:
            print_log(f'{type(self).__name__}: dropped degenerate polygon parts (< 3 points) or '
                      f'zero-area masks in {self.ann_file}, e.g. annotation ids {examples}',
                      logger='current', level=logging.WARNING)
        return data_list
