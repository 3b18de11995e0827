"""``RefDataPreprocessor``: mmdet's ``DetDataPreprocessor`` plus the referring ground truth on the
device, once.

After normalising and padding the images to the batch shape ``[H, W]`` (mmdet), in training it
puts on the model's device, padded at the bottom / right like the images:

* ``gt_merged_mask``: ``PixelData(data=uint8 [1, H, W])`` (the union of the targets);
* ``gt_instances.masks``: a bool tensor ``[n, H, W]`` (from ``BitmapMasks``; mmdet's
  ``pad_gt_masks`` pads them the same way).

So the heads only stack tensors that are already where they compute (no per-sample transfer in
the loss). Validation and test batches are left as mmdet leaves them.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from mmdet.models.data_preprocessors import DetDataPreprocessor
from mmengine.structures import PixelData

from mmrefer.registry import MODELS

__all__ = ['RefDataPreprocessor']


@MODELS.register_module()
class RefDataPreprocessor(DetDataPreprocessor):
    """``DetDataPreprocessor`` (same arguments) that also pads the referring ground truth to the
    batch shape and moves it to the device in training (see the module docstring)."""

    def forward(self, data: dict, training: bool = False) -> dict:
        data = super().forward(data=data, training=training)
        if training and data['data_samples'] is not None:
            shape = tuple(data['inputs'].shape[-2:])
            self.pad_ref_gt(data['data_samples'], shape, data['inputs'].device)
        return data

    @staticmethod
    def pad_ref_gt(data_samples: Sequence, shape, device: Optional[torch.device] = None):
        """Pad ``gt_merged_mask`` and ``gt_instances.masks`` of every sample to ``shape``
        (bottom / right, zeros) as tensors on ``device``."""
        H, W = shape
        for i, ds in enumerate(data_samples):
            if 'gt_merged_mask' in ds:
                m = torch.as_tensor(ds.gt_merged_mask.data).to(device)
                m = m.reshape((1, ) + tuple(m.shape[-2:]))
                h, w = m.shape[-2:]
                if h > H or w > W:
                    raise ValueError(f'data sample {i} ({ds.metainfo.get("img_path")}): '
                                     f'gt_merged_mask {(h, w)} is larger than the batch {(H, W)}')
                ds.gt_merged_mask = PixelData(data=F.pad(m, (0, W - w, 0, H - h)))
            if 'gt_instances' in ds and 'masks' in ds.gt_instances:
                masks = ds.gt_instances.masks
                if hasattr(masks, 'masks'):  # BitmapMasks
                    masks = torch.from_numpy(masks.masks)
                masks = torch.as_tensor(masks).to(device=device, dtype=torch.bool)
                h, w = masks.shape[-2:]
                if h > H or w > W:
                    raise ValueError(f'data sample {i} ({ds.metainfo.get("img_path")}): '
                                     f'gt_instances.masks {(h, w)} are larger than the batch '
                                     f'{(H, W)}')
                ds.gt_instances.masks = F.pad(masks, (0, W - w, 0, H - h))
        return data_samples
