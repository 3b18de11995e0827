"""``RefResize``: resize to a fixed input size, stretched (ReLA/LAVT 480x480 protocol) or
letterboxed (keep the aspect ratio, resize by ``s = min(W / w0, H / h0)``, pad centred).

Updates ``img``, ``gt_masks`` / ``gt_merged_mask``, ``gt_bboxes`` / ``gt_ref_bbox``
(``x * w_scale + left``), and sets ``img_shape = (H, W)``, ``scale_factor = (w_scale,
h_scale)`` and ``letterbox`` (``None`` or ``dict(pad=(left, top), scale=s)``).
:mod:`mmrefer.structures.geometry` undoes it, with ``scale_factor``. In letterbox mode each
side of the content is at least 1 px (mmcv's ``rescale_size`` gives 0 px for a 1000 x 1 image):
``scale_factor`` is the content's own per-axis scale, ``(0.48, 1.0)`` there, while
``letterbox['scale']`` stays ``s = 0.48``. GT boxes are clipped to the content, not to the
padded canvas.

The GT masks, which the metrics compare with at the input size, follow one of two protocols
(``gt_mask_resize``):

* ``'nearest'`` (LAVT, DMMI: PIL ``Image.NEAREST`` on the decoded mask): nearest neighbour
  sampled at pixel centres, ``src = floor((dst + 0.5) / scale)`` up to exact ties, where
  ``(dst + 0.5) / scale`` is a whole number and the pixel below is taken (OpenCV
  ``INTER_NEAREST_EXACT``, which gives PIL's choice there too; plain ``INTER_NEAREST`` samples
  ``floor(dst / scale)`` and shifts the mask by up to a pixel);
* ``'polygon'`` (ReLA, gRefCOCO): polygon vertices are scaled (and shifted by the letterbox
  pad) and rasterised by pycocotools at the output size, as detectron2 does; RLE masks, which
  have no vertices, use ``'nearest'``. Needs the raw ``gt_segms`` that
  :class:`LoadRefAnnotations` keeps.
"""
from typing import Tuple

import cv2
import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.structures.mask import BitmapMasks

from mmrefer.registry import TRANSFORMS
from ..masks import decode_ref_mask, scale_polygons

__all__ = ['RefResize', 'resize_mask_nearest', 'rasterize_polygons']

GT_MASK_RESIZE = ('nearest', 'polygon')


def resize_mask_nearest(mask: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Nearest resize of a 2-D mask to ``size = (w, h)``, sampled at pixel centres (as PIL
    ``Image.NEAREST``)."""
    return cv2.resize(np.ascontiguousarray(mask), size, interpolation=cv2.INTER_NEAREST_EXACT)


def rasterize_polygons(polys, factor: Tuple[float, float], offset: Tuple[float, float],
                       size: Tuple[int, int]) -> np.ndarray:
    """Rasterise COCO polygons (flat ``[x0, y0, x1, y1, ...]`` lists) after mapping each vertex
    to ``x * factor[0] + offset[0]``, ``y * factor[1] + offset[1]``, at ``size = (w, h)``
    (uint8 ``[h, w]``). Parts with fewer than 3 vertices are ignored, as in decoding."""
    w, h = size
    return decode_ref_mask(scale_polygons(polys, factor, offset), h, w)


@TRANSFORMS.register_module()
class RefResize(BaseTransform):
    """Resize a referring sample to ``scale`` = (W, H).

    Args:
        scale (tuple[int, int]): output (width, height).
        letterbox (bool): keep the aspect ratio and pad (centred) instead of stretching.
        interpolation (str): image interpolation (``mmcv.imresize``); the letterbox padding is 0.
        gt_mask_resize (str): ``'nearest'`` (LAVT) or ``'polygon'`` (ReLA), see the module doc.
    """

    def __init__(self, scale: Tuple[int, int] = (480, 480), letterbox: bool = False,
                 interpolation: str = 'bilinear', gt_mask_resize: str = 'nearest'):
        if isinstance(scale, int):
            scale = (scale, scale)
        if len(scale) != 2 or min(scale) <= 0:
            raise ValueError(f'RefResize: scale must be (width, height) > 0, got {scale}')
        self.scale = (int(scale[0]), int(scale[1]))
        self.letterbox = letterbox
        self.interpolation = interpolation
        if gt_mask_resize not in GT_MASK_RESIZE:
            raise ValueError(f'RefResize: gt_mask_resize must be one of {GT_MASK_RESIZE}, got '
                             f'{gt_mask_resize!r}')
        self.gt_mask_resize = gt_mask_resize

    def transform(self, results: dict) -> dict:
        img = results['img']
        h0, w0 = img.shape[:2]
        W, H = self.scale
        if self.letterbox:
            s = min(W / w0, H / h0)
            # round half up, as mmcv.rescale_size (mmdet's Resize(keep_ratio=True)) does
            nw, nh = min(W, max(1, int(w0 * s + 0.5))), min(H, max(1, int(h0 * s + 0.5)))
            left, top = (W - nw) // 2, (H - nh) // 2
        else:
            s, nw, nh, left, top = None, W, H, 0, 0
        w_scale, h_scale = nw / w0, nh / h0
        # mmcv.impad's padding: (left, top, right, bottom), zeros (no-op when stretching)
        padding = (left, top, W - nw - left, H - nh - top)
        results['img'] = mmcv.impad(
            mmcv.imresize(img, (nw, nh), interpolation=self.interpolation), padding=padding)
        if 'gt_masks' in results or 'gt_merged_mask' in results:
            self._resize_masks(results, (nw, nh), (W, H), padding, (w_scale, h_scale))
        factor = np.array([w_scale, h_scale, w_scale, h_scale], np.float32)
        offset = np.array([left, top, left, top], np.float32)
        # clipped to the image content, not the padded canvas (mmdet's clip_object_border): an
        # annotation box past the image edge (COCO has some) must not reach into the padding
        low = offset
        high = np.array([left + nw, top + nh, left + nw, top + nh], np.float32)
        if 'gt_bboxes' in results:
            b = np.asarray(results['gt_bboxes'], np.float32).reshape(-1, 4)
            results['gt_bboxes'] = np.clip(b * factor + offset, low, high).astype(np.float32)
        if 'gt_ref_bbox' in results:
            b = np.asarray(results['gt_ref_bbox'], np.float32).reshape(4)
            if b.any():  # zeros mean "no target" and stay zeros
                b = np.clip(b * factor + offset, low, high).astype(np.float32)
            results['gt_ref_bbox'] = b
        results['img_shape'] = (H, W)
        results['scale_factor'] = (w_scale, h_scale)
        results['letterbox'] = dict(pad=(left, top), scale=s) if self.letterbox else None
        return results

    def _resize_masks(self, results: dict, inner, outer, padding, factor) -> None:
        """``gt_masks`` and ``gt_merged_mask`` at ``outer = (W, H)``; the image content fills
        ``inner = (nw, nh)``, padded by ``padding = (left, top, right, bottom)``."""
        (W, H), pad = outer, padding[:2]

        def place(m: np.ndarray) -> np.ndarray:  # nearest-resized mask into the canvas
            return mmcv.impad(resize_mask_nearest(m, inner), padding=padding)

        if self.gt_mask_resize == 'nearest':
            if 'gt_masks' in results:
                src = results['gt_masks'].masks
                results['gt_masks'] = BitmapMasks(
                    np.stack([place(m) for m in src]) if len(src) else
                    np.zeros((0, H, W), np.uint8), H, W)
            if 'gt_merged_mask' in results:
                results['gt_merged_mask'] = place(results['gt_merged_mask'])
            return
        segms = results.get('gt_segms')
        n = len(results['gt_masks']) if 'gt_masks' in results else None
        if segms is None or n is None or len(segms) != n:
            raise KeyError(f"RefResize(gt_mask_resize='polygon'): the sample "
                           f"(img_path={results.get('img_path')}) needs 'gt_segms', the raw "
                           f'polygons/RLE of its {n} instances, as LoadRefAnnotations keeps them; '
                           f'got {None if segms is None else len(segms)}')
        masks = [rasterize_polygons(sg, factor, pad, (W, H)) if isinstance(sg, list)
                 else place(results['gt_masks'].masks[i]) for i, sg in enumerate(segms)]
        stacked = np.stack(masks) if masks else np.zeros((0, H, W), np.uint8)
        if 'gt_masks' in results:
            results['gt_masks'] = BitmapMasks(stacked, H, W)
        if 'gt_merged_mask' in results:
            results['gt_merged_mask'] = stacked.any(0).astype(np.uint8) if masks else \
                np.zeros((H, W), np.uint8)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(scale={self.scale}, letterbox={self.letterbox}, '
                f'interpolation={self.interpolation!r}, '
                f'gt_mask_resize={self.gt_mask_resize!r})')
