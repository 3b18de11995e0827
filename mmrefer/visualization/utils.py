"""Helpers shared by the inferencer and the visualizer: tensors to numpy, and float maps from the
network input (``img_shape``) back to the original image (``ori_shape``).

Binary masks and boxes are mapped with :mod:`mmrefer.structures.rescale` (the one place that knows
how the pipeline resized or letterboxed). Soft maps (Latent-VG per-expression maps, InstAlign
per-instance masks) are mapped here with the same geometry: crop the letterbox content region
``[top : top + h_scale*h0, left : left + w_scale*w0]`` when ``letterbox`` is set, then resize
(bilinear) to ``ori_shape``.
"""
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F


def to_numpy(x: Any) -> Any:
    """Tensor -> numpy (detached, on CPU); numpy and Python values are returned unchanged."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.numpy()
    return x


def _shape2(shape, field: str):
    if shape is None or len(shape) < 2:
        raise KeyError(f'metainfo field {field!r} is missing or malformed: {shape!r}')
    return int(shape[0]), int(shape[1])


def maps_to_original(maps: Any, metainfo: dict) -> Optional[np.ndarray]:
    """Map soft maps ``[K, H, W]`` at ``img_shape`` to ``[K, H0, W0]`` at ``ori_shape``.

    Args:
        maps: Tensor/ndarray ``[K, H, W]`` (float or bool) at the network input size.
        metainfo (dict): needs ``ori_shape``; ``img_shape`` and ``letterbox`` are optional
            (``letterbox = dict(pad=(left, top), scale=s)`` as in docs/contracts.md; the content
            size uses ``scale_factor`` like :mod:`mmrefer.structures.rescale`).

    Returns:
        np.ndarray float32 ``[K, H0, W0]`` (``None`` when ``maps`` is ``None``).
    """
    if maps is None:
        return None
    t = torch.as_tensor(to_numpy(maps)).float()
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3:
        raise ValueError(f'maps must be [K, H, W], got shape {tuple(t.shape)}')
    oh, ow = _shape2(metainfo.get('ori_shape'), 'ori_shape')
    letterbox = metainfo.get('letterbox')
    if letterbox:
        left, top = (int(round(v)) for v in letterbox['pad'])
        sf = metainfo.get('scale_factor')
        w_s, h_s = (sf[0], sf[1]) if sf is not None else (letterbox['scale'],) * 2
        h, w = max(1, int(round(oh * h_s))), max(1, int(round(ow * w_s)))
        t = t[:, top:top + h, left:left + w]
    if t.shape[0] == 0:
        return np.zeros((0, oh, ow), np.float32)
    if tuple(t.shape[-2:]) != (oh, ow):
        t = F.interpolate(t[None], size=(oh, ow), mode='bilinear', align_corners=False)[0]
    return t.numpy().astype(np.float32)


def write_png(rgb: np.ndarray, path: str) -> str:
    """Write an RGB uint8 image (creating the folder); raises ``OSError`` naming the path."""
    import os
    import os.path as osp

    import cv2
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if not cv2.imwrite(path, np.ascontiguousarray(rgb[..., ::-1])):
        raise OSError(f'could not write image file {path!r}')
    return path
