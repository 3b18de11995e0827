"""``RefResize``: resize to a fixed input size, stretched (ReLA/LAVT 480x480 protocol) or
letterboxed (keep the aspect ratio, resize by ``s = min(W / w0, H / h0)``, pad centred).

Updates ``img``, ``gt_masks`` / ``gt_merged_mask`` (nearest), ``gt_bboxes`` / ``gt_ref_bbox``
(``x * w_scale + left``), and sets ``img_shape = (H, W)``, ``scale_factor = (w_scale,
h_scale)`` and ``letterbox`` (``None`` or ``dict(pad=(left, top), scale=s)``).
:mod:`mmrefer.structures.rescale` undoes it.
"""
from typing import Tuple

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform

from mmrefer.registry import TRANSFORMS

__all__ = ['RefResize']


@TRANSFORMS.register_module()
class RefResize(BaseTransform):
    """Resize a referring sample to ``scale`` = (W, H).

    Args:
        scale (tuple[int, int]): output (width, height).
        letterbox (bool): keep the aspect ratio and pad (centred) instead of stretching.
        interpolation (str): image interpolation (masks always use nearest).
        pad_val (int | tuple): image padding value for letterbox.
    """

    def __init__(self, scale: Tuple[int, int] = (480, 480), letterbox: bool = False,
                 interpolation: str = 'bilinear', pad_val=0):
        if isinstance(scale, int):
            scale = (scale, scale)
        if len(scale) != 2 or min(scale) <= 0:
            raise ValueError(f'RefResize: scale must be (width, height) > 0, got {scale}')
        self.scale = (int(scale[0]), int(scale[1]))
        self.letterbox = letterbox
        self.interpolation = interpolation
        self.pad_val = pad_val

    def transform(self, results: dict) -> dict:
        img = results['img']
        h0, w0 = img.shape[:2]
        W, H = self.scale
        if self.letterbox:
            s = min(W / w0, H / h0)
            nw, nh = min(W, max(1, int(round(w0 * s)))), min(H, max(1, int(round(h0 * s))))
            left, top = (W - nw) // 2, (H - nh) // 2
        else:
            s, nw, nh, left, top = None, W, H, 0, 0
        w_scale, h_scale = nw / w0, nh / h0
        resized = mmcv.imresize(img, (nw, nh), interpolation=self.interpolation)
        if self.letterbox:
            canvas = np.empty((H, W) + img.shape[2:], img.dtype)
            canvas[...] = self.pad_val
            canvas[top:top + nh, left:left + nw] = resized
            resized = canvas
        results['img'] = resized
        if 'gt_masks' in results:
            m = results['gt_masks'].resize((nh, nw))
            results['gt_masks'] = m.expand(H, W, top, left) if self.letterbox else m
        if 'gt_merged_mask' in results:
            mm = mmcv.imresize(results['gt_merged_mask'], (nw, nh), interpolation='nearest')
            if self.letterbox:
                full = np.zeros((H, W), mm.dtype)
                full[top:top + nh, left:left + nw] = mm
                mm = full
            results['gt_merged_mask'] = mm
        factor = np.array([w_scale, h_scale, w_scale, h_scale], np.float32)
        offset = np.array([left, top, left, top], np.float32)
        limit = np.array([W, H, W, H], np.float32)
        if 'gt_bboxes' in results:
            b = np.asarray(results['gt_bboxes'], np.float32).reshape(-1, 4)
            results['gt_bboxes'] = np.clip(b * factor + offset, 0, limit).astype(np.float32)
        if 'gt_ref_bbox' in results:
            b = np.asarray(results['gt_ref_bbox'], np.float32).reshape(4)
            if b.any():  # zeros mean "no target" and stay zeros
                b = np.clip(b * factor + offset, 0, limit).astype(np.float32)
            results['gt_ref_bbox'] = b
        results['img_shape'] = (H, W)
        results['scale_factor'] = (w_scale, h_scale)
        results['letterbox'] = dict(pad=(left, top), scale=s) if self.letterbox else None
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(scale={self.scale}, letterbox={self.letterbox}, '
                f'interpolation={self.interpolation!r})')
