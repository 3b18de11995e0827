"""``RefDataPreprocessor``: mmdet's ``DetDataPreprocessor`` plus the referring ground truth on the
device, once.

After normalising and padding the images to the batch shape ``[H, W]`` (mmdet), in training it
pads on the host and copies to the model's device in **one transfer per batch** (a single uint8
buffer ``[B + sum_b n_b, H, W]``, pinned on CUDA and copied ``non_blocking``), then hands every
sample views of it:

* ``gt_merged_mask``: ``PixelData(data=uint8 [1, H, W])`` (the union of the targets);
* ``gt_instances.masks``: a bool tensor ``[n, H, W]`` (from ``BitmapMasks``; padded at the
  bottom / right like the images, as mmdet's ``pad_gt_masks`` does);
* ``gt_no_target``: a bool 0-d tensor, the ``no_target`` metainfo (set when the metainfo has it;
  a second, ``[B]``-sized transfer).

So the heads only stack tensors that are already where they compute (no transfer and no host
read in the loss). The merged masks stay on the host through mmengine's ``cast_data`` (which moves
each sample's fields on its own) until that copy; the small per-sample fields (``gt_ref_bbox``,
``gt_instances.bboxes`` / ``labels``) travel as mmengine moves them. Images of one shape become
one batch first (:meth:`RefDataPreprocessor._batch_images`): one copy to the device and batch
ops instead of mmengine's per-image loop, in training and test alike. Validation and test
ground truth is left as mmdet leaves it.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from mmdet.models.data_preprocessors import DetDataPreprocessor
from mmengine.structures import PixelData

from mmrefer.registry import MODELS
from mmrefer.structures import as_flag

__all__ = ['RefDataPreprocessor']


@MODELS.register_module()
class RefDataPreprocessor(DetDataPreprocessor):
    """``DetDataPreprocessor`` (same arguments) that also pads the referring ground truth to the
    batch shape and moves it to the device in training (see the module docstring).

    ``non_blocking`` defaults to True here (mmengine's default is False): a blocking host ->
    device copy of the batch waits for everything queued on the CUDA stream, the tail of the
    previous step included."""

    def __init__(self, *args, non_blocking: bool = True, **kwargs):
        super().__init__(*args, non_blocking=non_blocking, **kwargs)
        # mmengine swaps BGR <-> RGB with a list index (``img[[2, 1, 0], ...]``): on a GPU a host
        # -> device copy of the index and a wait for it, once per image. ``flip`` is the same
        # permutation of three channels without an index tensor.
        self._flip_channels, self._channel_conversion = self._channel_conversion, False

    def forward(self, data: dict, training: bool = False) -> dict:
        samples = data.get('data_samples')
        held = None
        if training and samples is not None:
            # mmengine's cast_data would move each sample's merged mask on its own: it stays on
            # the host until pad_ref_gt puts every mask of the batch on the device in one copy
            held = [ds.gt_merged_mask if 'gt_merged_mask' in ds else None for ds in samples]
        try:
            if held is not None:  # each sample object once (a batch may repeat one)
                for ds in {id(ds): ds for ds, m in zip(samples, held) if m is not None}.values():
                    del ds.gt_merged_mask
            data = dict(data, inputs=self._batch_images(data['inputs']))
            if self._flip_channels:
                data = self.cast_data(data)
                data['inputs'] = self._bgr_rgb_swap(data['inputs'])
            data = super().forward(data=data, training=training)
        finally:
            if held is not None:  # the caller's samples keep their field
                _put_back(samples, held)
        if held is not None:
            _put_back(data['data_samples'], held)
        if training and data['data_samples'] is not None:
            shape = tuple(data['inputs'].shape[-2:])
            self.pad_ref_gt(data['data_samples'], shape, data['inputs'].device)
        return data

    def _batch_images(self, inputs):
        """Images of one shape and dtype (a list, as ``pseudo_collate`` gives them) as one
        ``[B, C, H, W]`` batch, on the model's device in one copy (pinned on CUDA): mmengine
        then swaps, normalises and pads the batch in a few ops, where for a list it moves,
        converts and normalises image by image (the same values: the same per-element
        arithmetic, and the same pad shapes for images of one shape). Other inputs (images of
        several shapes, a batch already) are returned as they are."""
        if (not isinstance(inputs, (list, tuple)) or not inputs
                or not all(isinstance(t, torch.Tensor) for t in inputs)
                or len({(tuple(t.shape), t.dtype, t.device) for t in inputs}) != 1
                or inputs[0].dim() != 3
                # a channel count the mean / std do not fit: mmengine's list path names it
                or (self._enable_normalize and self.mean.shape[0] not in (1, inputs[0].shape[0]))
                or (self._flip_channels and inputs[0].shape[0] != 3)):
            return inputs
        return _to_device(torch.stack(list(inputs)), self._device, self._non_blocking)

    @staticmethod
    def _bgr_rgb_swap(inputs):
        """Reverse the channels of ``[3, H, W]`` images (a list) or a ``[B, 3, H, W]`` batch."""
        if isinstance(inputs, torch.Tensor):
            if inputs.dim() != 4 or inputs.size(1) != 3:
                raise ValueError('RefDataPreprocessor: bgr_to_rgb / rgb_to_bgr need a [B, 3, H, '
                                 f'W] batch, got shape {tuple(inputs.shape)}')
            return inputs.flip(1)
        out = []
        for i, img in enumerate(inputs):
            if img.dim() != 3 or img.size(0) != 3:
                raise ValueError('RefDataPreprocessor: bgr_to_rgb / rgb_to_bgr need [3, H, W] '
                                 f'images, image {i} has shape {tuple(img.shape)}')
            out.append(img.flip(0))
        return out

    @staticmethod
    def pad_ref_gt(data_samples: Sequence, shape, device: Optional[torch.device] = None):
        """Pad ``gt_merged_mask`` and ``gt_instances.masks`` of every sample to ``shape``
        (bottom / right, zeros) and put them, with ``gt_no_target``, on ``device`` in one copy
        (see the module docstring). A no-target sample with GT instances is an error."""
        H, W = shape
        merged, instances, flags = [], [], []  # (sample index, mask piece / flag)
        for i, ds in enumerate(data_samples):
            name = ds.metainfo.get('img_path')
            if 'gt_merged_mask' in ds:
                m = torch.as_tensor(ds.gt_merged_mask.data)
                merged.append((i, _checked(m.reshape((1, ) + tuple(m.shape[-2:])), H, W,
                                           f'data sample {i} ({name}): gt_merged_mask')))
            n = None
            if 'gt_instances' in ds and 'masks' in ds.gt_instances:
                masks = ds.gt_instances.masks
                if hasattr(masks, 'masks'):  # BitmapMasks
                    masks = torch.from_numpy(masks.masks)
                masks = torch.as_tensor(masks)
                instances.append((i, _checked(masks, H, W,
                                              f'data sample {i} ({name}): gt_instances.masks')))
                n = len(masks)
            if 'no_target' in ds.metainfo:
                flag = as_flag(ds.metainfo['no_target'], f'data sample {i} ({name}) no_target')
                if flag and n:
                    raise ValueError(f'data sample {i} ({name}, {ds.metainfo.get("text")!r}) is '
                                     f'no_target but has {n} GT instances')
                flags.append((i, flag))
        # merged masks first, instance masks after them (in sample order within each)
        pieces = [p for _, p in merged + instances]
        if pieces:
            if all(p.device.type == 'cpu' for p in pieces):
                # padded straight into one (pinned on CUDA) host buffer: one host copy, one upload
                pin = device is not None and torch.device(device).type == 'cuda'
                buf = torch.zeros((sum(len(p) for p in pieces), H, W), dtype=torch.uint8,
                                  pin_memory=pin)
                start = 0
                for p in pieces:
                    buf[start:start + len(p), :p.shape[-2], :p.shape[-1]] = p
                    start += len(p)
                buf = _to_device(buf, device)
            else:  # some are on a device already: no read back, one copy per host piece
                buf = torch.cat([F.pad(_to_device(p, device),
                                       (0, W - p.shape[-1], 0, H - p.shape[-2])) for p in pieces])
            # a view per sample; the instance masks as bool in one op for the batch
            n_merged = sum(len(p) for _, p in merged)
            for (i, p), v in zip(merged, buf[:n_merged].split([len(p) for _, p in merged])):
                data_samples[i].gt_merged_mask = PixelData(data=v)
            for (i, p), v in zip(instances, buf[n_merged:].bool().split(
                    [len(p) for _, p in instances])):
                data_samples[i].gt_instances.masks = v
        if flags:
            nt = _to_device(torch.tensor([f for _, f in flags]), device)
            for (i, _), v in zip(flags, nt.unbind()):
                data_samples[i].gt_no_target = v
        return data_samples


def _checked(m: torch.Tensor, H: int, W: int, what: str) -> torch.Tensor:
    """``m [k, h, w]`` as uint8 (non-zero = 1), after checking it fits the batch ``[H, W]``."""
    h, w = m.shape[-2:]
    if h > H or w > W:
        raise ValueError(f'{what} {(h, w)} is larger than the batch {(H, W)}')
    return m if m.dtype == torch.uint8 else (m != 0).to(torch.uint8)


def _put_back(samples: Sequence, held: Sequence) -> None:
    """Set each sample's held ``gt_merged_mask`` (``None``: it had none) back on it."""
    for ds, m in zip(samples, held):
        if m is not None:
            ds.gt_merged_mask = m


def _to_device(t: torch.Tensor, device, non_blocking: bool = True) -> torch.Tensor:
    """One host -> device copy, asynchronous where that is safe. To CUDA a host tensor is pinned
    first (a no-op for a buffer allocated pinned), so the copy overlaps with the GPU's work;
    elsewhere only a pinned tensor is copied asynchronously (MPS may read a pageable temporary
    after it is freed)."""
    if device is None or t.device == torch.device(device):
        return t
    device = torch.device(device)
    if device.type == 'cuda' and t.device.type == 'cpu' and not t.is_pinned():
        t = t.pin_memory()
    return t.to(device, non_blocking=non_blocking and (device.type == 'cuda' or t.is_pinned()))
