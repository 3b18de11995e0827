"""Batch geometry shared by both heads: the padded batch shape, each sample's image region in it,
and the merged ground truth stacked at that shape.

The data preprocessor pads a batch to ``[H, W]`` at the bottom / right; sample ``b``'s image fills
``[:h_b, :w_b]`` (its ``img_shape``). Heads compute at ``[H, W]`` and read each sample in its own
region, in the loss as in the prediction. The ground truth the losses stack here is the one
``RefDataPreprocessor`` padded and moved to the device (the only host -> device copy of the GT).
:func:`resize_bilinear` resizes the heads' many-plane maps.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mmrefer.structures.geometry import content_region

__all__ = ['batch_shape', 'img_shapes', 'content_boxes', 'img_regions', 'stack_merged_gt',
           'stack_no_target_gt', 'resize_bilinear']


def resize_bilinear(x: Tensor, size, channels_last: Optional[bool] = None) -> Tensor:
    """``F.interpolate(x, size, mode='bilinear', align_corners=False)`` of ``x [B, C, H, W]``,
    returned in the usual (contiguous) layout.

    On CUDA it resamples in channels-last memory. PyTorch's kernel for the usual layout runs one
    thread per *output pixel*, each looping over all ``B * C`` planes: InstAlign's masked
    attention resizes ``B x 100`` query maps to 15 x 15 (225 threads) and its pixel decoder
    ``B x 256`` planes to 120 x 120, and on the H200 (call 2, docs/benchmarks.md) 11 such calls
    took 15.5 of the 195 ms of kernels of an inference step at batch 32. The channels-last
    kernel runs one thread per output element with the same per-element arithmetic (PyTorch's
    ``UpSampleBilinear2d.cu``). Off CUDA: the plain call (the CPU kernels parallelise over the
    planes), so CPU results are unchanged. ``channels_last`` forces the choice (tests).
    """
    if channels_last is None:
        channels_last = x.is_cuda
    size = size if isinstance(size, int) else tuple(size)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
        return F.interpolate(x, size=size, mode='bilinear', align_corners=False).contiguous()
    return F.interpolate(x, size=size, mode='bilinear', align_corners=False)


def batch_shape(batch_data_samples: Sequence) -> Tuple[int, int]:
    """``(H, W)`` of the padded batch the network saw: ``batch_input_shape`` (set by the data
    preprocessor), else the largest ``img_shape``."""
    meta = batch_data_samples[0].metainfo
    if meta.get('batch_input_shape') is not None:
        return tuple(int(v) for v in meta['batch_input_shape'][:2])
    shapes = [ds.metainfo.get('img_shape') for ds in batch_data_samples]
    if any(s is None for s in shapes):
        raise KeyError('data samples lack batch_input_shape and img_shape (set by the data '
                       'preprocessor and RefResize)')
    return max(int(s[0]) for s in shapes), max(int(s[1]) for s in shapes)


def img_shapes(batch_data_samples: Sequence, pad_shape: Tuple[int, int]) -> List[Tuple[int, int]]:
    """Every sample's ``(h, w)`` (``img_shape``, default the batch shape); an ``img_shape`` larger
    than the batch is an error naming it."""
    shapes = [tuple(int(v) for v in ds.metainfo.get('img_shape', pad_shape)[:2])
              for ds in batch_data_samples]
    for (h, w), ds in zip(shapes, batch_data_samples):
        if h > pad_shape[0] or w > pad_shape[1]:
            raise ValueError(f'img_shape {(h, w)} of {ds.metainfo.get("img_path")} exceeds the '
                             f'padded batch shape {tuple(pad_shape)}')
    return shapes


def content_boxes(batch_data_samples: Sequence,
                  shapes: Sequence[Tuple[int, int]]) -> List[Tuple[int, int, int, int]]:
    """``(top, left, h, w)`` of each sample's image content: its ``img_shape`` less the
    letterbox bands of ``RefResize(letterbox=True)`` and the padding of mmdet's
    ``Resize(keep_ratio=True)`` + ``Pad`` (:func:`mmrefer.structures.geometry.content_region`);
    ``(0, 0, h, w)`` for a sample without ``img_shape`` (``shapes``: :func:`img_shapes`)."""
    return [content_region(ds.metainfo) if ds.metainfo.get('img_shape') is not None
            else (0, 0) + tuple(hw) for ds, hw in zip(batch_data_samples, shapes)]


def img_regions(shapes: Sequence[Tuple[int, ...]], pad_shape: Tuple[int, int],
                device) -> Tensor:
    """``[B, H, W]`` bool, True inside each sample's ``[:h, :w]`` (``shapes`` of ``(h, w)``) or
    ``[top:top + h, left:left + w]`` (``shapes`` of ``(top, left, h, w)``, see
    :func:`content_boxes`), with no per-sample loop."""
    H, W = pad_shape
    box = torch.tensor([(0, 0) + tuple(s) if len(s) == 2 else tuple(s) for s in shapes]).to(
        device, non_blocking=True).reshape(-1, 4)[:, :, None, None]
    rows = torch.arange(H, device=device)[None, :, None]
    cols = torch.arange(W, device=device)[None, None, :]
    return ((rows >= box[:, 0]) & (rows < box[:, 0] + box[:, 2]) &
            (cols >= box[:, 1]) & (cols < box[:, 1] + box[:, 3]))


_PREPROCESS_HINT = ('the loss reads the ground truth that RefDataPreprocessor padded to the '
                    'batch shape and put on the device (model.data_preprocessor(data, '
                    'training=True), or RefDataPreprocessor.pad_ref_gt(samples, batch_shape, '
                    'device) for hand-made samples)')


def _where(i: int, ds) -> str:
    return f'data sample {i} ({ds.metainfo.get("img_path")})'


def _on(t: Tensor, device) -> bool:
    """``t`` lives on ``device`` ('cuda' matches any CUDA index)."""
    d = torch.device(device)
    return t.device.type == d.type and (d.index is None or t.device.index == d.index)


def stack_merged_gt(batch_data_samples: Sequence, pad_shape: Tuple[int, int],
                    device) -> Tensor:
    """``gt_merged_mask`` of every sample as one float ``[B, H, W]`` tensor at the batch shape.

    The masks must be where ``RefDataPreprocessor`` leaves them: padded to ``pad_shape`` (zero
    outside each image) and on ``device``. The ground truth reaches the device once, there;
    anything else is an error naming the sample."""
    out = []
    for i, ds in enumerate(batch_data_samples):
        if 'gt_merged_mask' not in ds:
            raise KeyError(f'{_where(i, ds)} has no gt_merged_mask (see docs/contracts.md; '
                           'PackRefInputs makes it)')
        g = torch.as_tensor(ds.gt_merged_mask.data)
        g = g.reshape(g.shape[-2:])
        if tuple(g.shape) != tuple(pad_shape) or not _on(g, device):
            raise ValueError(f'{_where(i, ds)}: gt_merged_mask {tuple(g.shape)} on {g.device}, '
                             f'expected the batch shape {tuple(pad_shape)} on {device}: '
                             f'{_PREPROCESS_HINT}')
        out.append(g)
    return torch.stack(out).float()


def stack_no_target_gt(batch_data_samples: Sequence, device) -> Tensor:
    """The ``gt_no_target`` tensors ``RefDataPreprocessor`` put on the device (from the
    ``no_target`` metainfo every dataset sets), as float ``[B]``; no transfer."""
    for i, ds in enumerate(batch_data_samples):
        flag = ds.get('gt_no_target')
        if not isinstance(flag, Tensor) or not _on(flag, device):
            raise ValueError(f'{_where(i, ds)}: no gt_no_target on {device} '
                             f'(metainfo no_target: {ds.metainfo.get("no_target", "missing")}): '
                             f'{_PREPROCESS_HINT}')
    return torch.stack([ds.gt_no_target for ds in batch_data_samples]).float()
