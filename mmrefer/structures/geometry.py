"""Geometry between the network input (``img_shape``) and the original image (``ori_shape``).

This is the one place that knows how :class:`mmrefer.datasets.transforms.RefResize` resized an
image, and the one post-processing step that brings a prediction back to the image's own size.

``RefResize`` either stretches the image to ``img_shape = (H, W)`` (``letterbox is None``), so
that ``x_in = x0 * w_scale`` and ``y_in = y0 * h_scale`` with ``scale_factor = (w_scale,
h_scale)``, or letterboxes it: resizes it to ``(h, w) = (round(h0 * h_scale), round(w0 *
w_scale))`` and pads at ``letterbox['pad'] = (left, top)``, so that ``x_in = x0 * w_scale +
left`` (the new size rounded half up, as ``mmcv.rescale_size``). mmdet's ``Resize`` (no
``letterbox`` key) is the stretch case; followed by mmdet's ``Pad``, which sets ``img_shape`` to
the padded shape, the content is the top-left ``(round(h0 * h_scale), round(w0 * w_scale))``.

Rule for masks and maps (as ReLA's / detectron2's ``sem_seg_postprocess``): keep the
**probabilities**, crop the content region ``[top:top + h, left:left + w]``, interpolate
bilinearly (``align_corners=False``) to ``ori_shape``, and only then threshold. A binary mask is
treated as a 0/1 probability map. Boxes are mapped exactly (``(x_in - left) / w_scale``).
"""
import numbers
from typing import Any, Dict, Mapping, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.structures import BaseDataElement
from torch import Tensor

__all__ = [
    'content_region', 'maps_to_original', 'mask_to_original', 'box_to_original',
    'pred_mask_to_original', 'prediction_to_original', 'to_numpy', 'as_flag'
]


def to_numpy(x: Any) -> Any:
    """Tensor -> numpy (detached, on CPU, half precision as float32); numpy arrays and Python
    values are returned unchanged."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.numpy()
    return x


def _as_tensor(x: Any) -> Tensor:
    """Tensor/ndarray/nested list -> Tensor (numpy views of any stride are copied if needed)."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    return torch.as_tensor(x)


def _squeeze(t: Tensor) -> Tensor:
    """``[1, H, W]`` -> ``[H, W]`` (``PixelData``-style masks); other shapes unchanged."""
    return t[0] if t.dim() == 3 and t.shape[0] == 1 else t


def _is_bool(x: Any) -> bool:
    return x.dtype == torch.bool if isinstance(x, torch.Tensor) else x.dtype == np.bool_


def _meta(metainfo: Mapping, key: str) -> Any:
    if key not in metainfo or metainfo[key] is None:
        raise KeyError(f'geometry: metainfo lacks {key!r} (has {sorted(metainfo)}); was the '
                       'sample packed (PackRefInputs / PackDetInputs) after RefResize or Resize?')
    return metainfo[key]


def _hw(metainfo: Mapping, key: str) -> Tuple[int, int]:
    shape = _meta(metainfo, key)
    if len(shape) < 2:
        raise ValueError(f'geometry: metainfo {key!r} must be (h, w[, c]), got {shape!r}')
    return int(shape[0]), int(shape[1])


def _scale(metainfo: Mapping) -> Tuple[float, float]:
    sf = np.asarray(_meta(metainfo, 'scale_factor'), np.float64).reshape(-1)
    if sf.size < 2 or not (sf[:2] > 0).all():
        raise ValueError(f"geometry: metainfo 'scale_factor' must be (w_scale, h_scale) > 0, got "
                         f"{metainfo['scale_factor']!r}")
    return float(sf[0]), float(sf[1])


def _pad(metainfo: Mapping) -> Tuple[float, float]:
    """(left, top) of the letterbox, (0, 0) when the image was stretched."""
    lb = metainfo.get('letterbox')
    if not lb:
        return 0, 0
    if 'pad' not in lb or len(lb['pad']) != 2:
        raise KeyError(f"geometry: metainfo 'letterbox' must be dict(pad=(left, top), scale=s), "
                       f'got {lb!r}')
    return lb['pad'][0], lb['pad'][1]


def content_region(metainfo: Mapping) -> Tuple[int, int, int, int]:
    """``(top, left, h, w)``: the rows ``top:top + h`` and columns ``left:left + w`` of the
    network input that hold the resized image.

    Stretch resize: ``(0, 0, H, W)``. mmdet's ``Resize(keep_ratio=True)`` followed by ``Pad``
    (which overwrites ``img_shape`` with the padded shape): ``(0, 0, round(h0 * h_scale),
    round(w0 * w_scale))``. Letterbox: ``(top, left) = letterbox['pad'][::-1]``,
    ``h = round(h0 * h_scale)``, ``w = round(w0 * w_scale)`` (``RefResize`` sets ``w_scale =
    w / w0``, so this recovers its ``w`` exactly).

    Args:
        metainfo (Mapping): ``img_shape``; with a letterbox also ``ori_shape`` and
            ``scale_factor``.

    Raises:
        KeyError: a needed metainfo key is missing (the message names it).
        ValueError: the region does not fit inside ``img_shape``.
    """
    H, W = _hw(metainfo, 'img_shape')
    letterbox = metainfo.get('letterbox')
    if not letterbox and (metainfo.get('scale_factor') is None
                          or metainfo.get('ori_shape') is None):
        return 0, 0, H, W
    h0, w0 = _hw(metainfo, 'ori_shape')
    w_scale, h_scale = _scale(metainfo)
    h, w = max(1, int(round(h0 * h_scale))), max(1, int(round(w0 * w_scale)))
    if not letterbox:  # stretch: (0, 0, H, W) again; mmdet's Resize + Pad: the top-left part
        return 0, 0, min(H, h), min(W, w)
    left, top = (int(round(float(v))) for v in _pad(metainfo))
    if top < 0 or left < 0 or top + h > H or left + w > W:
        raise ValueError(f'geometry: letterbox content rows {top}:{top + h}, cols {left}:'
                         f'{left + w} (from ori_shape {(h0, w0)}, scale_factor '
                         f"{metainfo['scale_factor']}, letterbox {metainfo['letterbox']}) do not "
                         f'fit in img_shape {(H, W)}')
    return top, left, h, w


def maps_to_original(maps: Any, metainfo: Mapping) -> Tensor:
    """Maps ``[..., H, W]`` at ``img_shape`` -> float32 ``[..., h0, w0]`` at ``ori_shape``.

    ``out = bilinear(maps[..., top:top + h, left:left + w], (h0, w0))`` with
    ``align_corners=False`` (see :func:`content_region`); bool maps are cast to 0/1 floats.

    Args:
        maps (Tensor | np.ndarray): float or bool, at least 2-D, last two dims ``img_shape``.
        metainfo (Mapping): ``ori_shape``, ``img_shape``, and for a letterbox ``scale_factor``
            and ``letterbox``.

    Returns:
        Tensor: float32, same leading dims, on the input's device.
    """
    t = _as_tensor(maps)
    H, W = _hw(metainfo, 'img_shape')
    h0, w0 = _hw(metainfo, 'ori_shape')
    if t.dim() < 2 or tuple(t.shape[-2:]) != (H, W):
        raise ValueError(f'maps_to_original: map shape {tuple(t.shape)} does not match '
                         f'img_shape {(H, W)} in its last two dims')
    top, left, h, w = content_region(metainfo)
    lead = tuple(t.shape[:-2])
    crop = t.float()[..., top:top + h, left:left + w].reshape(1, -1, h, w)
    if crop.shape[1] == 0:
        return crop.new_zeros(lead + (h0, w0))
    if (h, w) != (h0, w0):
        crop = F.interpolate(crop, size=(h0, w0), mode='bilinear', align_corners=False)
    return crop.reshape(lead + (h0, w0)).contiguous()


def mask_to_original(prob: Any, metainfo: Mapping, thr: float = 0.5) -> Tensor:
    """Probability map ``[H, W]`` at ``img_shape`` -> bool mask ``[h0, w0]`` at ``ori_shape``.

    ``mask = maps_to_original(prob) > thr``: letterbox cropped, bilinear to the original size,
    then thresholded (ReLA's ``sem_seg_postprocess``). A bool mask is read as a 0/1 map.

    Args:
        prob (Tensor | np.ndarray): ``[H, W]`` float probabilities (or bool).
        metainfo (Mapping): see :func:`maps_to_original`.
        thr (float): foreground where the interpolated probability is ``> thr``.
    """
    t = _as_tensor(prob)
    if t.dim() != 2:
        raise ValueError(f'mask_to_original: mask shape {tuple(t.shape)} does not match '
                         f'img_shape {tuple(_hw(metainfo, "img_shape"))} (expected [H, W])')
    if not isinstance(thr, numbers.Real) or isinstance(thr, bool) or not np.isfinite(thr):
        raise ValueError(f'mask_to_original: thr must be a finite number, got {thr!r}')
    return maps_to_original(t, metainfo) > thr


def box_to_original(box: Tensor, metainfo: Mapping) -> Tensor:
    """Box ``[4]`` (or ``[n, 4]``) xyxy at ``img_shape`` -> xyxy at ``ori_shape``.

    ``x0 = clip((x_in - left) / w_scale, 0, w0)``, ``y0 = clip((y_in - top) / h_scale, 0, h0)``;
    an all-zero box (empty mask / no target) stays all zeros. Computed in float64 for a float64
    box (the REC metric's: IoU exactly at 0.5 must not drop below it), in float32 otherwise.
    """
    h0, w0 = _hw(metainfo, 'ori_shape')
    w_scale, h_scale = _scale(metainfo)
    left, top = _pad(metainfo)
    b = _as_tensor(box)
    b = (b.double() if b.dtype == torch.float64 else b.float()).clone()
    if b.shape[-1:] != (4, ):
        raise ValueError(f'box_to_original: box shape {tuple(b.shape)} is not [4] or [n, 4]')
    b[..., 0::2] = ((b[..., 0::2] - left) / w_scale).clamp(0, w0)
    b[..., 1::2] = ((b[..., 1::2] - top) / h_scale).clamp(0, h0)
    return b


# ------------------------------------------------------------------------------ predictions
def _accessors(sample):
    """(metainfo, get) of a ``DetDataSample`` or of its ``to_dict()`` (the metric's view)."""
    if isinstance(sample, BaseDataElement):
        return sample.metainfo, lambda k, d=None: sample.get(k, d)
    if isinstance(sample, Mapping):
        return sample, sample.get
    raise TypeError(f'geometry: expected a DetDataSample or a dict, got {type(sample).__name__}')


def as_flag(value: Any, name: str = 'pred_no_target') -> bool:
    """A no-target flag (``bool``, a 0/1 integer, or a one-element bool/integer tensor or array)
    as a Python ``bool``; ``None`` is ``False``. A score such as ``0.3`` or a string such as
    ``'False'`` raises a ``ValueError`` naming ``name``: a score must be thresholded first (the
    post-processing does), never read as "anything non-zero is no-target"."""
    if value is None:
        return False
    v = np.asarray(to_numpy(value))
    if v.size != 1:
        raise ValueError(f'{name} must be a single flag, got shape {v.shape}')
    v = v.reshape(())
    if v.dtype == np.bool_:
        return bool(v)
    if v.dtype.kind in 'iuf' and v.item() in (0, 1):
        return bool(v.item())
    raise ValueError(f'{name} must be a boolean flag (True/False, 0/1), got {value!r}; threshold '
                     'a no-target score before storing it as a flag')


def pred_mask_to_original(sample, ungated: bool = False) -> Tensor:
    """The predicted mask of a sample at ``ori_shape`` (bool ``[h0, w0]``), from probabilities.

    With ``pred_prob`` (float ``[H, W]`` at ``img_shape``, before no-target gating):
    ``mask_to_original(pred_prob, thr=pred_mask_thr)`` (``pred_mask_thr`` defaults to 0.5),
    cleared when ``pred_no_target`` unless ``ungated`` (GRES's FP union counts the ungated mask).
    Without it (old checkpoints, third-party models): the stored bool mask, ``pred_mask`` (or
    ``pred_mask_ungated`` when ``ungated`` and present), as a 0/1 map with ``thr = 0.5``; it is
    used as the model gated it.

    Args:
        sample (DetDataSample | dict): a predicted sample, or its ``to_dict()``.
        ungated (bool): the mask before no-target gating.

    Raises:
        KeyError: neither ``pred_prob`` nor ``pred_mask`` is present.
    """
    meta, get = _accessors(sample)
    prob = get('pred_prob')
    if prob is not None:
        thr = get('pred_mask_thr')
        thr = 0.5 if thr is None else float(np.asarray(to_numpy(thr)).reshape(()))
        if not ungated and as_flag(get('pred_no_target')):
            return torch.zeros(_hw(meta, 'ori_shape'), dtype=torch.bool)
        return mask_to_original(_squeeze(_as_tensor(prob)).float(), meta, thr)
    key = 'pred_mask_ungated' if ungated and get('pred_mask_ungated') is not None else 'pred_mask'
    mask = get(key)
    if mask is None:
        raise KeyError(f"geometry: the sample has neither 'pred_prob' nor {key!r} (see "
                       'docs/contracts.md section 3)')
    return mask_to_original(_squeeze(_as_tensor(mask)).bool().float(), meta, 0.5)


def _extra_to_original(value: Any, img_hw: Tuple[int, int], meta: Mapping) -> Any:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if value.ndim >= 2 and tuple(value.shape[-2:]) == img_hw:
            if _is_bool(value):
                return to_numpy(maps_to_original(value, meta) > 0.5)
            return to_numpy(maps_to_original(value, meta))
        value = to_numpy(value)
        return value.item() if value.ndim == 0 else value
    if isinstance(value, np.generic):
        return value.item()
    return value


def prediction_to_original(sample) -> Dict[str, Any]:
    """A predicted sample (docs/contracts.md section 3) -> the answer at the image's own size.

    Args:
        sample (DetDataSample | dict): with metainfo ``ori_shape``, ``img_shape``,
            ``scale_factor``, ``letterbox`` and the prediction fields.

    Returns:
        dict: ``text`` (str or None); ``mask``: bool ``[h0, w0]`` numpy, from ``pred_prob`` and
        ``pred_mask_thr`` (fallback: ``pred_mask`` at 0.5, see :func:`pred_mask_to_original`),
        all False when ``pred_no_target`` (``None`` when neither field exists); ``box``: ``[x1,
        y1, x2, y2]`` floats, :func:`box_to_original` of ``pred_box`` (``None`` without it);
        ``no_target`` (bool); ``score`` (float or None); ``extras``: every ``pred_extras`` entry
        whose last two dims are ``img_shape`` mapped with :func:`maps_to_original` (float) or,
        for bool maps, thresholded at 0.5 (bool), as numpy; other tensors as numpy (0-d as
        Python scalars), other values unchanged.
    """
    meta, get = _accessors(sample)
    no_target = as_flag(get('pred_no_target'))
    mask = None
    if get('pred_prob') is not None or get('pred_mask') is not None:
        mask = to_numpy(pred_mask_to_original(sample)).astype(bool)
        if no_target:
            mask[...] = False
    box = get('pred_box')
    if box is not None:
        box = to_numpy(box_to_original(box, meta))
        if box.size != 4:
            raise ValueError(f'geometry: pred_box must be one xyxy box [4], got shape {box.shape}')
        box = [float(x) for x in box.reshape(4)]
    score = get('pred_score')
    score = None if score is None else float(np.asarray(to_numpy(score)).reshape(()))
    extras = get('pred_extras') or {}
    if not isinstance(extras, Mapping):
        raise TypeError(f'geometry: pred_extras must be a dict, got {type(extras).__name__}')
    img_hw = _hw(meta, 'img_shape')
    extras = {k: _extra_to_original(v, img_hw, meta) for k, v in extras.items()}
    return dict(text=meta.get('text'), mask=mask, box=box, no_target=no_target, score=score,
                extras=extras)
