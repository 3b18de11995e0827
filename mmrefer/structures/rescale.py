"""Map predictions at the network input size back to the original image (undo ``RefResize``).

``RefResize`` either stretches the image to ``img_shape`` (``letterbox is None``), so that
``x_in = x0 * w_scale`` and ``y_in = y0 * h_scale`` with ``scale_factor = (w_scale, h_scale)``,
or letterboxes it: resizes by ``s`` to ``(round(h0*s), round(w0*s))`` and pads at
``letterbox['pad'] = (left, top)``, so that ``x_in = x0 * w_scale + left``.

Both functions read ``ori_shape`` (h0, w0), ``img_shape`` (H, W), ``scale_factor`` and
``letterbox`` from a sample's metainfo.
"""
from typing import Mapping

import torch.nn.functional as F
from torch import Tensor

__all__ = ['mask_to_original', 'box_to_original', 'box_to_input']


def _meta(metainfo: Mapping, key: str):
    if key not in metainfo:
        raise KeyError(f'rescale: metainfo lacks {key!r} (has {sorted(metainfo)}); '
                       'was the sample packed by PackRefInputs after RefResize?')
    return metainfo[key]


def _content_region(metainfo: Mapping):
    """(top, left, h_in, w_in): the part of the input that holds the resized image."""
    h0, w0 = _meta(metainfo, 'ori_shape')[:2]
    H, W = _meta(metainfo, 'img_shape')[:2]
    lb = metainfo.get('letterbox')
    if not lb:
        return 0, 0, H, W
    w_scale, h_scale = _meta(metainfo, 'scale_factor')[:2]
    left, top = lb['pad']
    return int(top), int(left), int(round(h0 * h_scale)), int(round(w0 * w_scale))


def mask_to_original(mask: Tensor, metainfo: Mapping) -> Tensor:
    """Bool mask ``[H, W]`` at ``img_shape`` -> bool mask ``[h0, w0]`` at ``ori_shape``.

    The letterbox padding is cropped away, then the content is resized (nearest) to the original
    size.
    """
    h0, w0 = _meta(metainfo, 'ori_shape')[:2]
    H, W = _meta(metainfo, 'img_shape')[:2]
    if mask.dim() != 2 or tuple(mask.shape) != (H, W):
        raise ValueError(f'mask_to_original: mask shape {tuple(mask.shape)} does not match '
                         f'img_shape {(H, W)}')
    top, left, h, w = _content_region(metainfo)
    crop = mask[top:top + h, left:left + w]
    if tuple(crop.shape) == (h0, w0):
        return crop.bool().clone()
    out = F.interpolate(crop[None, None].float(), size=(int(h0), int(w0)), mode='nearest')
    return out[0, 0] > 0.5


def box_to_original(box: Tensor, metainfo: Mapping) -> Tensor:
    """Box ``[4]`` (or ``[n, 4]``) xyxy at ``img_shape`` -> xyxy at ``ori_shape``, clipped."""
    h0, w0 = _meta(metainfo, 'ori_shape')[:2]
    w_scale, h_scale = _meta(metainfo, 'scale_factor')[:2]
    lb = metainfo.get('letterbox')
    left, top = lb['pad'] if lb else (0, 0)
    b = box.float().clone()
    b[..., 0::2] = ((b[..., 0::2] - left) / w_scale).clamp(0, w0)
    b[..., 1::2] = ((b[..., 1::2] - top) / h_scale).clamp(0, h0)
    return b


def box_to_input(box: Tensor, metainfo: Mapping) -> Tensor:
    """Inverse of :func:`box_to_original`: xyxy at ``ori_shape`` -> xyxy at ``img_shape``."""
    w_scale, h_scale = _meta(metainfo, 'scale_factor')[:2]
    lb = metainfo.get('letterbox')
    left, top = lb['pad'] if lb else (0, 0)
    b = box.float().clone()
    b[..., 0::2] = b[..., 0::2] * w_scale + left
    b[..., 1::2] = b[..., 1::2] * h_scale + top
    return b

