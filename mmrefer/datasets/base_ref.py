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
  stays a target with an empty mask (as pycocotools' ``annToMask``, ReLA and LAVT give it),
  counted and reported with the same warning;
* a ref naming an annotation id absent from ``instances.json`` raises a ``KeyError`` naming the
  file, ``ref_id`` and ``ann_id`` (the official files never do this, so it means mismatched files);
* a targeted ref left without any usable target (all crowd, or no polygon part left) is skipped
  and counted;
* a ref without ``split``, an image entry without ``file_name`` / ``height`` / ``width``, a
  sentence with neither ``raw`` nor ``sent`` and a sentence without ``sent_id`` raise a
  ``KeyError`` naming the file and the ref, image or sentence (the official ``refer.py`` /
  ``G_REFER`` fail on them too);
* empty sentences are skipped and counted; sentences are otherwise kept verbatim (``raw``, as
  ReLA, LAVT and DMMI feed their tokenizers, falling back to ``sent``);
* an unknown split raises a ``ValueError`` listing the splits the file holds.

``instances.json`` is indexed by pycocotools' ``COCO`` (:func:`load_coco_instances`); masks are
measured by the one segmentation decoder, :mod:`mmrefer.datasets.masks`.
"""
import contextlib
import copy
import io
import json
import logging
import math
import os.path as osp
from collections import Counter
from typing import List, Mapping, Optional, Sequence, Tuple, Union

from mmengine.dataset import BaseDataset
from mmengine.logging import print_log
from pycocotools.coco import COCO

from .masks import check_rle, segm_area, valid_polygons
from .safe_pickle import load_refs, read_annotation_file

__all__ = ['BaseRefDataset', 'load_coco_instances']


def load_coco_instances(path: str) -> COCO:
    """Read a COCO ``instances.json`` into a :class:`pycocotools.coco.COCO` index (``imgs``,
    ``anns``, ``getAnnIds``, ...), quietly (``COCO.createIndex`` prints to stdout).

    Raises ``FileNotFoundError`` / ``ValueError`` / ``KeyError`` naming the file when it is
    missing, empty, not JSON, not a COCO dict, without ``images`` / ``annotations`` (or with
    none of them), or when an entry lacks a field the index needs.
    """
    raw = read_annotation_file(path, 'instances')
    try:
        dataset = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f'instances file {path!r} is not valid JSON: {e}') from e
    except UnicodeDecodeError as e:
        head = raw[:8] if isinstance(raw, (bytes, bytearray)) else raw[:8].encode()
        raise ValueError(f'instances file {path!r} is not UTF-8 JSON (first bytes {head!r}; '
                         f'{e.reason} at byte {e.start}): ann_file must be the COCO '
                         'instances.json (a refs pickle goes in split_file)') from e
    if not isinstance(dataset, dict):
        raise ValueError(f'instances file {path!r} must hold a COCO dict, got '
                         f'{type(dataset).__name__}')
    for key in ('images', 'annotations'):
        if key not in dataset:
            raise KeyError(f'instances file {path!r} has no {key!r} field')
        if not isinstance(dataset[key], list):
            raise ValueError(f'instances file {path!r}: field {key!r} must be a list, got '
                             f'{type(dataset[key]).__name__}')
        if not dataset[key]:
            raise ValueError(f'instances file {path!r} holds no {key}')
        # pycocotools' index keeps the last of two entries with one id: the other is lost
        ids = Counter(e.get('id') for e in dataset[key] if isinstance(e, Mapping))
        dup = [i for i, n in ids.items() if n > 1]
        if dup:
            raise ValueError(f'instances file {path!r}: {key[:-1]} id {dup[0]!r} appears '
                             f'{ids[dup[0]]} times ({len(dup)} duplicated id(s) in {key!r})')
    coco = COCO()
    coco.dataset = dataset
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
    except (KeyError, TypeError) as e:
        raise KeyError(f'instances file {path!r}: an image or annotation lacks the field {e} '
                       '(images need id; annotations need id and image_id)') from e
    return coco


def as_id(value, where: str) -> int:
    """An id field (an int, or a string of digits) as int; a float, a bool or other text is an
    error naming ``where`` (``int()`` would silently turn 94.9 into annotation 94)."""
    if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())):
        raise ValueError(f'{where} = {value!r} is not an integer id')
    return int(value)


def checked_bbox(bbox, where: str, height: int, width: int) -> List[float]:
    """COCO ``[x, y, w, h]`` -> xyxy, after checking that it is 4 finite numbers with
    ``w, h >= 0`` that meet the ``height x width`` image; anything else is an error naming
    ``where`` (an inverted or NaN box would silently score REC 0)."""
    if isinstance(bbox, (str, bytes)) or not isinstance(bbox, Sequence) or len(bbox) != 4:
        raise ValueError(f'{where}: bbox {bbox!r:.80} must be [x, y, w, h] (4 numbers)')
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError) as e:
        raise ValueError(f'{where}: bbox {bbox!r:.80} must be [x, y, w, h] (4 numbers)') from e
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise ValueError(f'{where}: bbox {list(bbox)} is not finite')
    if w < 0 or h < 0:
        raise ValueError(f'{where}: bbox {list(bbox)} has a negative width/height (COCO boxes '
                         'are [x, y, w, h], not [x1, y1, x2, y2])')
    if x >= width or y >= height or x + w < 0 or y + h < 0:  # (a 0-wide box at x=0 is in)
        raise ValueError(f'{where}: bbox {list(bbox)} lies outside its {width}x{height} image')
    return [x, y, x + w, y + h]


def union_box(boxes: Sequence[Sequence[float]]) -> Optional[List[float]]:
    """Smallest xyxy box holding all ``boxes`` (None for no box)."""
    if not boxes:
        return None
    return [min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes)]


class BaseRefDataset(BaseDataset):
    """Base of the referring datasets (one sample per sentence).

    Args:
        data_root (str): root that ``ann_file``, ``split_file`` and ``data_prefix`` are joined to.
        ann_file (str): COCO ``instances.json``.
        split_file (str, optional): refs file (pickle or JSON, decided by content); default
            the class's ``SPLIT_FILE`` (``refs(unc).p``, ``grefs(unc).json``, ``refs(final).p``).
        split (str | Sequence[str], optional): split(s) to keep (exact match); default the
            class's ``SPLIT`` (``val``; Ref-ZOM ``test``).
        data_prefix (dict): ``img_path`` folder holding the images.
        exclude_images_of (list[dict], optional): drop images that appear in other refs files'
            splits, each entry ``dict(split_file=..., splits=[...])``, paths relative to
            ``data_root``. Used to train on RefCOCO/+/g without their val/test images.
        **kwargs: passed to :class:`mmengine.dataset.BaseDataset` (``pipeline``, ``metainfo``,
            ``test_mode``, ``lazy_init``, ``indices``, ...).
    """

    METAINFO = dict(dataset_name='ref')
    SPLIT_FILE = 'refs(unc).p'
    SPLIT = 'val'

    def __init__(self,
                 data_root: str = '',
                 ann_file: str = 'instances.json',
                 split_file: Optional[str] = None,
                 split: Union[str, Sequence[str], None] = None,
                 data_prefix: dict = dict(img_path='train2014/'),
                 exclude_images_of: Optional[List[dict]] = None,
                 **kwargs):
        self.split_file = self.SPLIT_FILE if split_file is None else split_file
        self.split = self.SPLIT if split is None else split
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

    @staticmethod
    def ann_ids(ref: dict, refs_file: str) -> List[int]:
        """The ref's ``ann_id`` (an int or a list) as a list of ints; ``KeyError`` naming the
        file and ``ref_id`` when it has none."""
        if 'ann_id' not in ref:
            raise KeyError(f'{refs_file}: ref_id {ref.get("ref_id")} has no ann_id')
        aids = ref['ann_id']
        return [as_id(a, f'{refs_file}: ref_id {ref.get("ref_id")}: ann_id')
                for a in (aids if isinstance(aids, (list, tuple)) else [aids])]

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
            if not isinstance(entry, Mapping) or 'split_file' not in entry \
                    or 'splits' not in entry:
                raise KeyError(f'exclude_images_of entry {entry!r} must be a dict with '
                               'split_file and splits')
            sf, splits = entry['split_file'], entry['splits']
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
        """``dict(mask, bbox, bbox_label=0, ignore_flag=0)`` of a non-crowd annotation, or None
        when nothing of its mask is left (see the module doc); bad fields raise, naming the
        file, the annotation and the image."""
        seg = ann.get('segmentation')
        where = f'{self.ann_file}: annotation {ann["id"]} of image {img["id"]}'
        h, w = img['height'], img['width']  # positive ints (_check_image_entry)
        if 'bbox' not in ann:
            raise KeyError(f'{self.ann_file}: annotation {ann["id"]} has no bbox')
        bbox = checked_bbox(ann['bbox'], where, h, w)
        if isinstance(seg, list):
            if not all(isinstance(p, (list, tuple)) for p in seg):
                raise ValueError(f'{where} has a bad segmentation: polygons must be a list of '
                                 f'[x0, y0, x1, y1, ...] lists, got {seg!r:.60}')
            odd = sum(len(part) % 2 for part in seg)
            if odd:  # x without y: pycocotools and our rescaling ignore the last number
                stats['polygon parts with an odd coordinate count (last number ignored)'] += odd
                if len(examples) < 5:
                    examples.append(ann['id'])
            mask = valid_polygons(seg)
            if len(mask) < len(seg):
                stats['degenerate polygon parts dropped'] += len(seg) - len(mask)
                if len(examples) < 5:
                    examples.append(ann['id'])
            if not mask:
                stats['annotations dropped (no valid polygon)'] += 1
                return None
        else:
            mask = seg
        try:
            area = segm_area(mask, h, w)
            if isinstance(mask, Mapping):  # an RLE: decode it now, not hours into training
                check_rle(mask, h, w)
        except (KeyError, ValueError, TypeError) as e:
            raise type(e)(f'{where} has a bad segmentation: {e}') from e
        if area == 0:  # still a target: kept with an empty mask, as pycocotools, ReLA and LAVT
            stats['zero-area target masks kept (empty)'] += 1
            if len(examples) < 5:
                examples.append(ann['id'])
        return dict(mask=mask, bbox=bbox, bbox_label=0, ignore_flag=0)

    def _check_image_entry(self, img: dict) -> None:
        """``file_name`` a non-empty string, ``height`` / ``width`` positive integers; else an
        error naming the file, the image and the field."""
        if not isinstance(img['file_name'], str) or not img['file_name']:
            raise ValueError(f"{self.ann_file}: image {img['id']} field 'file_name' must be a "
                             f"non-empty string, got {img['file_name']!r}")
        for key in ('height', 'width'):
            v = img[key]
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f'{self.ann_file}: image {img["id"]} field {key!r} = {v!r} is '
                                 'not a positive integer')

    # ---------------------------------------------------------------------------- loading
    def load_data_list(self) -> List[dict]:
        coco = load_coco_instances(self.ann_file)
        imgs, anns = coco.imgs, coco.anns
        refs_file = self._path(self.split_file)
        refs = load_refs(refs_file)
        if not refs:
            raise ValueError(f'refs file {refs_file!r} holds no refs')
        splits = [self.split] if isinstance(self.split, str) else list(self.split)
        no_split = next((r for r in refs if 'split' not in r), None)
        if no_split is not None:  # refer.py / G_REFER index every ref by its split
            raise KeyError(f"{refs_file}: ref {no_split.get('ref_id', '?')} has no 'split' field "
                           f'(keys: {sorted(no_split)})')
        bad_split = next((r for r in refs if not isinstance(r['split'], str)), None)
        if bad_split is not None:
            raise ValueError(f"{refs_file}: ref {bad_split.get('ref_id', '?')} field 'split' must "
                             f"be a string, got {type(bad_split['split']).__name__} "
                             f"{bad_split['split']!r}")
        avail = sorted({str(r.get('split')) for r in refs})
        unknown = [s for s in splits if s not in avail]
        if unknown:
            raise ValueError(f'{type(self).__name__}: split(s) {unknown} not in {refs_file!r}; '
                             f'available splits: {avail}')
        excluded = self._excluded_image_ids()
        stats, examples = Counter(), []
        data_list, seen_refs = [], set()
        for ref in refs:
            if ref.get('split') not in splits:
                continue
            for key in ('ref_id', 'image_id', 'sentences'):
                if key not in ref:
                    raise KeyError(f'{refs_file}: ref {ref.get("ref_id", "?")} has no {key!r} '
                                   f'field (keys: {sorted(ref)})')
            ref_id = as_id(ref['ref_id'], f'{refs_file}: ref_id')
            img_id = as_id(ref['image_id'], f'{refs_file}: ref_id {ref_id}: image_id')
            if ref_id in seen_refs:  # its sentences would be trained / evaluated twice
                raise ValueError(f'{refs_file}: ref_id {ref_id} appears more than once in split '
                                 f'{ref["split"]!r}')
            seen_refs.add(ref_id)
            if not isinstance(ref['sentences'], (list, tuple)):
                raise TypeError(f"{refs_file}: ref_id {ref_id} field 'sentences' must be a list "
                                f"of sentence dicts, got {type(ref['sentences']).__name__} "
                                f"{ref['sentences']!r:.60}")
            if not ref['sentences']:
                stats['refs skipped (no sentences)'] += 1
                continue
            if img_id in excluded:
                stats['refs dropped by exclude_images_of'] += 1
                continue
            if img_id not in imgs:
                raise KeyError(f'{refs_file}: ref_id {ref_id} names image_id {img_id}, which is '
                               f'not in {self.ann_file}')
            img = imgs[img_id]
            missing = [k for k in ('file_name', 'height', 'width') if k not in img]
            if missing:
                raise KeyError(f'{self.ann_file}: image {img_id} (named by ref_id {ref_id} of '
                               f'{refs_file}) has no field(s) {missing}')
            self._check_image_entry(img)
            no_target, ann_ids, source = self.parse_targets(ref, refs_file)
            instances = []
            for aid in ([] if no_target else ann_ids):
                if aid not in anns:
                    raise KeyError(f'{refs_file}: ref_id {ref_id} names ann_id {aid}, which is '
                                   f'not in {self.ann_file}')
                ann = anns[aid]
                if as_id(ann.get('image_id', img_id), f'{self.ann_file}: annotation {aid}: '
                         'image_id') != img_id:
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
            # REC target: the union's box (RefCOCO: the one annotation's own box)
            ref_bbox = None if no_target else union_box([inst['bbox'] for inst in instances])
            img_path = osp.join(self.data_prefix.get('img_path', ''), img['file_name'])
            for k, sent in enumerate(ref['sentences']):
                if not isinstance(sent, Mapping) or ('raw' not in sent and 'sent' not in sent):
                    raise KeyError(f"{refs_file}: ref_id {ref_id} sentence {k} has neither 'raw' "
                                   f"nor 'sent' ({sent!r:.200})")
                if sent.get('sent_id') is None:  # ids identify samples in results and dumps
                    raise KeyError(f"{refs_file}: ref_id {ref_id} sentence {k} has no 'sent_id' "
                                   f'({sent!r:.200})')
                for field in ('raw', 'sent'):
                    if sent.get(field) is not None and not isinstance(sent[field], str):
                        raise TypeError(f"{refs_file}: ref_id {ref_id} sentence {k}: field "
                                        f"{field!r} must be a string, got "
                                        f"{type(sent[field]).__name__} {sent[field]!r:.60}")
                # raw first (what ReLA/LAVT/DMMI tokenize), sent when raw is missing or blank
                text = next((t for t in (sent.get('raw'), sent.get('sent')) if t and t.strip()),
                            '')
                if not any(c.isprintable() and not c.isspace() for c in text):
                    stats['empty sentences skipped'] += 1  # blank or control characters only
                    continue
                data_list.append(dict(
                    img_path=img_path, img_id=img_id, ref_id=ref_id,
                    sent_id=as_id(sent['sent_id'],
                                  f'{refs_file}: ref_id {ref_id} sentence {k}: sent_id'),
                    text=text, no_target=bool(no_target),
                    source=source, height=int(img['height']), width=int(img['width']),
                    instances=instances, ref_bbox=ref_bbox))
                stats[f'sentences ({source})'] += 1
        if not data_list:
            raise ValueError(f'{type(self).__name__}: no sample left for split {self.split!r} '
                             f'of {refs_file!r} ({dict(stats)})')
        summary = ', '.join(f'{k}: {v}' for k, v in sorted(stats.items()))
        # bad data (not exclude_images_of, a deliberate filter) makes the summary a warning
        bad = any(('skipped' in k or 'dropped' in k or 'zero-area' in k or 'ignored' in k)
                  and 'exclude_images_of' not in k for k in stats)
        print_log(f'{type(self).__name__} [{self.dataset_name}] split={self.split}: '
                  f'{len(data_list)} samples; {summary}', logger='current',
                  level=logging.WARNING if bad else logging.INFO)
        if examples:
            print_log(f'{type(self).__name__}: degenerate polygon parts (< 3 points, dropped), '
                      f'odd coordinate counts or zero-area masks (kept empty) in '
                      f'{self.ann_file}, e.g. annotation ids {examples}',
                      logger='current', level=logging.WARNING)
        return data_list
