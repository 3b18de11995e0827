"""The one decoder of COCO segmentations in mmrefer (pycocotools ``frPyObjects`` / ``merge`` /
``decode`` / ``area``), used by the datasets, ``LoadRefAnnotations`` and ``RefResize``.

A segmentation is what ``instances.json`` holds (and what a sample's ``instances[].mask`` keeps):

* polygons: a list of flat ``[x0, y0, x1, y1, ...]`` lists. Parts with fewer than 3 vertices
  (< 6 numbers) are ignored: pycocotools would read a 4-number part as a *box*;
* an uncompressed RLE ``dict(size=[h, w], counts=[int, ...])`` (column-major run lengths);
* a compressed RLE ``dict(size=[h, w], counts=str | bytes)``.

:func:`segm_to_rle` turns any of them into one pycocotools RLE at ``h x w``, following
``pycocotools.coco.COCO.annToRLE``; :func:`decode_ref_mask` and :func:`segm_area` are its
``decode`` / ``area``.
"""
from typing import Mapping, Sequence, Tuple, Union

import numpy as np
import pycocotools.mask as mask_utils

__all__ = ['segm_to_rle', 'decode_ref_mask', 'segm_area', 'valid_polygons', 'scale_polygons']

Segmentation = Union[list, dict]


def valid_polygons(polys: Sequence[Sequence[float]]) -> list:
    """The parts of a polygon segmentation with at least 3 vertices (6 numbers), unchanged."""
    return [p for p in polys if len(p) >= 6]


def segm_to_rle(segm: Segmentation, h: int, w: int) -> dict:
    """One pycocotools RLE (``dict(size=[h, w], counts=bytes)``) of a segmentation at ``h x w``.

    Polygons are rasterised by ``frPyObjects`` and their parts merged (an all-degenerate polygon
    list gives the empty mask); an uncompressed RLE goes through ``frPyObjects``; a compressed
    one is used as is. Raises ``KeyError`` (RLE without ``counts``/``size``), ``ValueError`` (RLE
    ``size`` other than ``[h, w]``) or ``TypeError`` (anything else), naming the problem.
    """
    if isinstance(segm, list):
        polys = valid_polygons(segm)
        if not polys:
            return mask_utils.encode(np.zeros((h, w), np.uint8, order='F'))
        return mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
    if not isinstance(segm, dict):
        raise TypeError(f'cannot decode a segmentation of type {type(segm).__name__}; expected '
                        'polygons (list) or an RLE dict')
    if 'counts' not in segm or 'size' not in segm:
        raise KeyError(f'RLE segmentation needs counts and size, got keys {sorted(segm)}')
    size = [int(v) for v in segm['size']]
    if size != [h, w]:
        raise ValueError(f'RLE size {size} differs from the image size {[h, w]}')
    counts = segm['counts']
    if isinstance(counts, list):
        return mask_utils.frPyObjects(dict(size=size, counts=counts), h, w)
    return dict(size=size, counts=counts.encode('ascii') if isinstance(counts, str) else counts)


def decode_ref_mask(segm: Segmentation, h: int, w: int) -> np.ndarray:
    """uint8 ``[h, w]`` mask of a segmentation (:func:`segm_to_rle` + ``decode``)."""
    return mask_utils.decode(segm_to_rle(segm, h, w)).astype(np.uint8, copy=False)


def check_rle(rle: Mapping, h: int, w: int) -> None:
    """Raise ``ValueError`` unless the RLE ``rle`` decodes to an ``h x w`` mask (uncompressed:
    its counts sum to ``h * w``; compressed: pycocotools decodes it)."""
    counts = rle.get('counts')
    if isinstance(counts, list):
        if sum(counts) != h * w:
            raise ValueError(f'uncompressed RLE counts sum to {sum(counts)}, not {h} x {w} = '
                             f'{h * w}')
        return
    try:
        mask_utils.decode(segm_to_rle(rle, h, w))
    except ValueError as e:
        raise ValueError(f'RLE counts do not decode ({e})') from e


def segm_area(segm: Segmentation, h: int, w: int) -> int:
    """Pixel count of a segmentation at ``h x w`` (:func:`segm_to_rle` + ``area``)."""
    return int(mask_utils.area(segm_to_rle(segm, h, w)))


def scale_polygons(polys: Sequence[Sequence[float]], factor: Tuple[float, float],
                   offset: Tuple[float, float]) -> list:
    """Polygons with every vertex mapped to ``(x * fx + ox, y * fy + oy)`` (float64), the
    degenerate parts dropped (:func:`valid_polygons`)."""
    f, o = np.asarray(factor, np.float64), np.asarray(offset, np.float64)
    out = []
    for p in valid_polygons(polys):
        xy = np.asarray(p[:len(p) // 2 * 2], np.float64).reshape(-1, 2) * f + o
        out.append(xy.reshape(-1).tolist())
    return out
