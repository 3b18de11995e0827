"""``PackRefInputs``: pack a referring sample as ``inputs`` (uint8 [3, H, W]) and an mmdet
``DetDataSample`` following docs/contracts.md section 2::

    gt_instances      InstanceData(bboxes=Tensor[n, 4], masks=BitmapMasks[n, H, W],
                                   labels=zeros[n] int64)
    gt_merged_mask    PixelData(data=uint8 Tensor[1, H, W])
    gt_ref_bbox       Tensor[4] xyxy (zeros when no target)
    ori_gt_merged_mask / ori_gt_ref_bbox   at ori_shape, only with keep_ori_gt=True
    metainfo          META_KEYS present in results (letterbox defaults to None;
                      input_ids / attention_mask / token_offsets become int64 tensors)
"""
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmengine.structures import InstanceData, PixelData

from mmrefer.registry import TRANSFORMS

__all__ = ['PackRefInputs']

#: results keys copied into the data sample's metainfo (docs/contracts.md section 2).
META_KEYS = ('img_path', 'img_id', 'ref_id', 'sent_id', 'text', 'no_target', 'source',
             'ori_shape', 'img_shape', 'scale_factor', 'letterbox', 'input_ids', 'attention_mask',
             'token_offsets')


def _mask_tensor(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8)[None])


@TRANSFORMS.register_module()
class PackRefInputs(BaseTransform):
    """Pack the outputs of ``LoadRefAnnotations`` (+ ``RefResize``) for the model.

    Args:
        keep_ori_gt (bool): also pack ``ori_gt_merged_mask`` and ``ori_gt_ref_bbox`` (needed for
            evaluation at the original resolution).
    """

    def __init__(self, keep_ori_gt: bool = False):
        self.keep_ori_gt = keep_ori_gt

    def transform(self, results: dict) -> dict:
        img = results['img']
        if img.ndim == 2:
            img = img[..., None]
        inputs = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        h, w = img.shape[:2]
        ds = DetDataSample()
        if 'gt_masks' in results:
            masks = results['gt_masks']
            if not isinstance(masks, BitmapMasks):
                raise TypeError(f'PackRefInputs: gt_masks must be BitmapMasks, got '
                                f'{type(masks).__name__}')
            n = len(masks)
            boxes = np.asarray(results.get('gt_bboxes', np.zeros((n, 4))), np.float32)
            gt = InstanceData()
            gt.bboxes = torch.from_numpy(boxes.reshape(-1, 4))
            gt.masks = masks
            gt.labels = torch.zeros(n, dtype=torch.int64)
            ds.gt_instances = gt
        if 'gt_merged_mask' in results:
            ds.gt_merged_mask = PixelData(data=_mask_tensor(results['gt_merged_mask']))
        if 'gt_ref_bbox' in results:
            ds.gt_ref_bbox = torch.as_tensor(np.asarray(results['gt_ref_bbox'], np.float32))
        if self.keep_ori_gt:
            if 'ori_gt_merged_mask' not in results:
                raise KeyError('PackRefInputs(keep_ori_gt=True) needs ori_gt_merged_mask; put '
                               'LoadRefAnnotations before RefResize in the pipeline')
            ds.ori_gt_merged_mask = PixelData(data=_mask_tensor(results['ori_gt_merged_mask']))
            ds.ori_gt_ref_bbox = torch.as_tensor(
                np.asarray(results['ori_gt_ref_bbox'], np.float32))
        meta = {}
        for k in META_KEYS:
            if k in results:
                v = results[k]
                if k in ('input_ids', 'attention_mask', 'token_offsets'):
                    v = torch.as_tensor(np.asarray(v), dtype=torch.int64)
                meta[k] = v
        meta.setdefault('img_shape', (h, w))
        meta.setdefault('letterbox', None)
        ds.set_metainfo(meta)
        return dict(inputs=inputs, data_samples=ds)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(keep_ori_gt={self.keep_ori_gt})'
