"""Per-sample mask statistics shared by every mask metric (RIS, GRES, Ref-ZOM).

For sample ``i`` with binary prediction ``P_i`` and ground truth ``G_i`` (both ``[H_i, W_i]``)::

    I_i = |P_i AND G_i|,   U_i = |P_i OR G_i|,   IoU_i = I_i / U_i  (0 when U_i == 0)

The counts are tensor sums (no Python loop over pixels). All metric functions are written on
these integer counts, so the pure functions (full masks) and the metric classes (which only keep
the counts per sample) run exactly the same arithmetic.

Ratios are computed in float64 with a single rounding (``a * 100. / b``), as the reference
scripts do, so that threshold tests such as ``IoU >= 0.7`` give the same answer as theirs.
An undefined ratio (``0 / 0``, e.g. oIoU when every union is empty) is ``nan``: the reference
scripts either raise ``ZeroDivisionError`` there or produce numpy's ``nan``.
"""
from typing import Dict, Sequence, Union

import numpy as np
import torch

MaskLike = Union[torch.Tensor, np.ndarray]


def to_bool_mask(mask: MaskLike, name: str = 'mask', index: int = 0) -> torch.Tensor:
    """Return ``mask`` as a 2-D bool tensor (non-zero is foreground).

    Accepts ``[H, W]`` or ``[1, H, W]`` torch tensors or numpy arrays of any numeric/bool dtype.
    """
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(np.ascontiguousarray(mask))
    elif not isinstance(mask, torch.Tensor):
        raise TypeError(f'{name}[{index}] must be a torch.Tensor or numpy.ndarray, '
                        f'got {type(mask).__name__}')
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim != 2:
        raise ValueError(f'{name}[{index}] must have shape [H, W] (or [1, H, W]), '
                         f'got {tuple(mask.shape)}')
    return mask if mask.dtype == torch.bool else mask != 0


def to_flags(flags, name: str, length: int) -> np.ndarray:
    """Return a 1-D numpy bool array of ``length`` flags (list of bool, array or tensor)."""
    if isinstance(flags, torch.Tensor):
        flags = flags.detach().cpu().numpy()
    arr = np.asarray(flags)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    arr = arr.reshape(-1)
    if arr.shape[0] != length:
        raise ValueError(f'{name} has {arr.shape[0]} entries but there are {length} samples')
    if arr.dtype != np.bool_:
        if not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f'{name} must hold booleans, got dtype {arr.dtype}')
        arr = arr != 0
    return arr


def as_counts(inter, union):
    """Validate per-sample intersection / union counts: two int64 vectors of one length > 0."""
    inter = np.asarray(inter, dtype=np.int64).reshape(-1)
    union = np.asarray(union, dtype=np.int64).reshape(-1)
    n = inter.shape[0]
    if union.shape[0] != n:
        raise ValueError(f'inter has {n} samples but union has {union.shape[0]}')
    if n == 0:
        raise ValueError('no samples to evaluate')
    return inter, union


def _check_lengths(pred_masks: Sequence, gt_masks: Sequence) -> int:
    if len(pred_masks) != len(gt_masks):
        raise ValueError(f'pred_masks has {len(pred_masks)} samples but gt_masks has '
                         f'{len(gt_masks)}')
    if len(pred_masks) == 0:
        raise ValueError('no samples to evaluate: pred_masks and gt_masks are empty')
    return len(pred_masks)


def mask_stats(pred_masks: Sequence[MaskLike],
               gt_masks: Sequence[MaskLike]) -> Dict[str, np.ndarray]:
    """Per-sample counts of a list of (prediction, ground truth) mask pairs.

    Args:
        pred_masks: N masks ``[H_i, W_i]`` (bool or 0/1; torch or numpy). A stacked
            ``[N, H, W]`` tensor/array also works.
        gt_masks: N masks with the same size as the matching prediction.

    Returns:
        dict of int64 arrays of shape ``[N]``: ``inter`` (I), ``union`` (U), ``pred_area``,
        ``gt_area``.
    """
    n = _check_lengths(pred_masks, gt_masks)
    if (isinstance(pred_masks, (torch.Tensor, np.ndarray)) and pred_masks.ndim == 3
            and isinstance(gt_masks, (torch.Tensor, np.ndarray)) and gt_masks.ndim == 3):
        return _stacked_stats(pred_masks, gt_masks)
    inter = np.zeros(n, dtype=np.int64)
    union = np.zeros(n, dtype=np.int64)
    pred_area = np.zeros(n, dtype=np.int64)
    gt_area = np.zeros(n, dtype=np.int64)
    for i in range(n):
        p = to_bool_mask(pred_masks[i], 'pred_masks', i)
        g = to_bool_mask(gt_masks[i], 'gt_masks', i)
        if p.shape != g.shape:
            raise ValueError(f'sample {i}: pred mask shape {tuple(p.shape)} differs from gt mask '
                             f'shape {tuple(g.shape)}')
        if g.device != p.device:
            g = g.to(p.device)
        counts = torch.stack([(p & g).sum(), (p | g).sum(), p.sum(), g.sum()]).cpu()
        inter[i], union[i], pred_area[i], gt_area[i] = counts.tolist()
    return dict(inter=inter, union=union, pred_area=pred_area, gt_area=gt_area)


def _stacked_stats(pred_masks, gt_masks) -> Dict[str, np.ndarray]:
    """Vectorised counts of ``[N, H, W]`` stacks (one reduction per statistic)."""
    p = torch.as_tensor(pred_masks)
    g = torch.as_tensor(gt_masks, device=p.device)
    if p.shape != g.shape:
        raise ValueError(f'pred_masks shape {tuple(p.shape)} differs from gt_masks shape '
                         f'{tuple(g.shape)}')
    p = p if p.dtype == torch.bool else p != 0
    g = g if g.dtype == torch.bool else g != 0
    counts = [(p & g), (p | g), p, g]
    counts = torch.stack([c.flatten(1).sum(1) for c in counts]).cpu().numpy().astype(np.int64)
    return dict(inter=counts[0], union=counts[1], pred_area=counts[2], gt_area=counts[3])


def iou_from_counts(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """Per-sample IoU ``I / U`` in float64, 0 where ``U == 0`` (LAVT / DMMI / ReLA convention)."""
    inter = np.asarray(inter, dtype=np.float64)
    union = np.asarray(union, dtype=np.float64)
    iou = np.zeros_like(inter)
    np.divide(inter, union, out=iou, where=union != 0)
    return iou


def percent(num, den) -> float:
    """``num * 100. / den`` as a Python float; ``nan`` when ``den == 0``."""
    num, den = float(num), float(den)
    if den == 0:
        return float('nan')
    return num * 100. / den


def precision_at(iou: np.ndarray, thresholds: Sequence[float]) -> Dict[str, float]:
    """``Pr@t`` = percentage of samples with ``IoU >= t`` (``nan`` for no samples)."""
    iou = np.asarray(iou, dtype=np.float64)
    return {f'Pr@{t:.1f}': percent(np.count_nonzero(iou >= t), iou.shape[0]) for t in thresholds}


def mean_percent(values: np.ndarray) -> float:
    """``100 * mean(values)`` like ``np.mean`` in the LAVT / DMMI scripts (``nan`` if empty)."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape[0] == 0:
        return float('nan')
    return float(np.mean(values)) * 100.
