"""Loading transforms: the image (with errors that name the sample) and the referring GT.

``LoadRefAnnotations`` turns a sample's ``instances`` (polygons or RLE, see
docs/contracts.md section 1) into, at the original image size ``(h, w)``::

    gt_masks          BitmapMasks [n, h, w]   one per target instance (n = 0 for no-target)
    gt_bboxes         float32 [n, 4] xyxy     the annotations' boxes
    gt_bboxes_labels  int64 [n] zeros;  gt_ignore_flags bool [n] False
    gt_merged_mask    uint8 [h, w]            union of gt_masks
    gt_segms          list                    the instances' raw polygons / RLE (ReLA-style
                                              re-rasterisation in RefResize)
    gt_ref_bbox       float32 [4] xyxy        REC target (zeros when there is none)
    ori_gt_merged_mask, ori_gt_ref_bbox       the same two, kept for evaluation at the original
                                              resolution (``RefResize`` replaces the others)
"""
from typing import Optional

import numpy as np
from mmcv.transforms import BaseTransform, LoadImageFromFile
from mmdet.structures.mask import BitmapMasks

from mmrefer.registry import TRANSFORMS
from ..masks import decode_ref_mask

__all__ = ['LoadRefImageFromFile', 'LoadRefAnnotations', 'decode_ref_mask']


def _sample_desc(results: dict) -> str:
    keys = ('img_id', 'ref_id', 'sent_id')
    return ', '.join(f'{k}={results[k]}' for k in keys if k in results)


@TRANSFORMS.register_module()
class LoadRefImageFromFile(LoadImageFromFile):
    """mmcv ``LoadImageFromFile`` (default ``color_type='color'``: grayscale and RGBA files are
    loaded as 3-channel BGR) whose errors name the path and the sample (img_id, ref_id)."""

    def transform(self, results: dict) -> Optional[dict]:
        path = results.get('img_path')
        try:
            out = super().transform(results)
        except FileNotFoundError as e:
            raise FileNotFoundError(f'image file not found: {path} (sample {_sample_desc(results)})'
                                    ) from e
        except Exception as e:  # corrupt bytes: mmcv asserts / cv2 raises
            raise ValueError(f'could not decode image {path} (sample {_sample_desc(results)}): '
                             f'{type(e).__name__}: {e}') from e
        if out is not None and (out['img'].ndim != 3 or out['img'].shape[2] != 3):
            raise ValueError(f'image {path} (sample {_sample_desc(results)}) loaded with shape '
                             f'{out["img"].shape}; use color_type="color" for 3-channel BGR')
        return out


@TRANSFORMS.register_module()
class LoadRefAnnotations(BaseTransform):
    """Decode the referring GT of a sample at the original image resolution (see module doc).

    Required keys: ``instances``; ``ori_shape`` (from the image loader) or ``height``/``width``.
    The image size must agree with ``instances.json``'s ``height``/``width``.
    """

    def transform(self, results: dict) -> dict:
        if 'instances' not in results:
            raise KeyError(f'LoadRefAnnotations: sample {_sample_desc(results)} has no '
                           '"instances"')
        if 'ori_shape' in results:
            h, w = (int(v) for v in results['ori_shape'][:2])
            if 'height' in results and (results['height'], results['width']) != (h, w):
                hint = (' (transposed: an EXIF orientation tag? try LoadRefImageFromFile('
                        "color_type='color_ignore_orientation'))"
                        if (results['height'], results['width']) == (w, h) else '')
                raise ValueError(
                    f'image {results.get("img_path")} (sample {_sample_desc(results)}) is '
                    f'{h}x{w} but instances.json says {results["height"]}x{results["width"]}'
                    f'{hint}')
        else:
            h, w = int(results['height']), int(results['width'])
        insts = results['instances']
        masks = np.zeros((len(insts), h, w), np.uint8)
        for i, inst in enumerate(insts):
            try:
                masks[i] = decode_ref_mask(inst['mask'], h, w)
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f'LoadRefAnnotations: bad mask of instance {i} in sample '
                                 f'{_sample_desc(results)}: {e}') from e
        results['gt_masks'] = BitmapMasks(masks, h, w)
        results['gt_segms'] = [inst['mask'] for inst in insts]  # for RefResize('polygon')
        results['gt_bboxes'] = np.array([inst['bbox'] for inst in insts],
                                        np.float32).reshape(-1, 4)
        results['gt_bboxes_labels'] = np.array([inst.get('bbox_label', 0) for inst in insts],
                                               np.int64)
        results['gt_ignore_flags'] = np.array([bool(inst.get('ignore_flag', 0)) for inst in insts],
                                              bool)
        merged = masks.any(0).astype(np.uint8) if len(insts) else np.zeros((h, w), np.uint8)
        results['gt_merged_mask'] = merged
        ref_bbox = results.get('ref_bbox')
        results['gt_ref_bbox'] = (np.zeros(4, np.float32) if ref_bbox is None
                                  else np.asarray(ref_bbox, np.float32).reshape(4))
        results['ori_gt_merged_mask'] = merged
        results['ori_gt_ref_bbox'] = results['gt_ref_bbox'].copy()
        return results
