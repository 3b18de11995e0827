"""One post-processing step for both heads: threshold, no-target gating, box from mask, score,
extras (docs/contracts.md section 3).

Input, for a batch padded to ``[H, W]`` (each sample's image fills ``[:h, :w]`` of it, its
``img_shape``): the final foreground probability ``p [B, H, W]``, the no-target probability
``nt [B]`` (or None for RIS/REC-only models) and per-sample extras. Per sample ``b``::

    pred_prob   = p_b[:h, :w]
    pred_mask   = (pred_prob > mask_thr) and not no_target_b,   no_target_b = nt_b > nt_thr
                  (inside the image content only: a letterbox band holds no image pixel and
                  is never foreground; the max below is taken there too)
    pred_box    = box of pred_mask (mmdet ``mask2bbox`` convention: x2 = last column + 1,
                  all zeros for an empty mask)
    pred_score  = nt_b                                            if no_target_b
                  mean(pred_prob over pred_mask) * (1 - nt_b)     if the mask is not empty
                  max(pred_prob) * (1 - nt_b)                     otherwise   ((1 - nt_b) := 1
                                                                  without a no-target head)
    pred_mask_ungated = pred_prob > mask_thr                      (only when no_target_b: the
                  segmentation the flag cleared, for ReLA's cIoU union in GRESMetric)
    pred_extras['no_target_score'] = nt_b                        (with a no-target head)

Everything is computed on the whole batch on the device; the per-sample decisions and scores
cross to the host in one transfer.
"""
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

from .utils import content_boxes, img_regions, img_shapes

__all__ = ['masks_to_boxes', 'RefPostProcessor']


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Tight xyxy boxes ``[N, 4]`` (float32) of bool masks ``[N, H, W]``.

    Same result as mmdet's ``mask2bbox`` (``[x_min, y_min, x_max + 1, y_max + 1]``, all zeros for
    an empty mask; ``tests/models/test_post_processing.py`` compares them), written without a
    per-mask loop or a data-dependent ``nonzero``, so it never waits for the device.
    """
    if masks.dim() != 3:
        raise ValueError(f'masks_to_boxes: masks must be [N, H, W], got {tuple(masks.shape)}')
    n, h, w = masks.shape
    if n == 0:
        return masks.new_zeros((0, 4), dtype=torch.float32)
    cols, rows = masks.any(dim=1), masks.any(dim=2)  # [N, W], [N, H]
    xs = torch.arange(w, device=masks.device)
    ys = torch.arange(h, device=masks.device)
    x1 = torch.where(cols, xs, w).amin(dim=1)
    x2 = torch.where(cols, xs, -1).amax(dim=1) + 1
    y1 = torch.where(rows, ys, h).amin(dim=1)
    y2 = torch.where(rows, ys, -1).amax(dim=1) + 1
    boxes = torch.stack([x1, y1, x2, y2], dim=1).float()
    return boxes * cols.any(dim=1, keepdim=True)


class RefPostProcessor:
    """Fill the prediction fields of a batch of data samples (see the module docstring).

    Args:
        mask_thr (float): foreground threshold on the probability (``test_cfg.mask_thr``).
        nt_thr (float): no-target threshold (``test_cfg.nt_thr``).
    """

    def __init__(self, mask_thr: float = 0.5, nt_thr: float = 0.5):
        for name, v in (('mask_thr', mask_thr), ('nt_thr', nt_thr)):
            if not isinstance(v, (int, float)):
                raise TypeError(f'test_cfg.{name} must be a number, got {v!r}')
        self.mask_thr = float(mask_thr)
        self.nt_thr = float(nt_thr)

    def __call__(self, batch_data_samples: List, prob: Tensor, nt_prob: Optional[Tensor] = None,
                 map_extras: Optional[Dict[str, Tensor]] = None,
                 extras: Optional[List[dict]] = None) -> List:
        """Args:
            batch_data_samples: the samples to fill (``img_shape`` in their metainfo).
            prob: ``[B, H, W]`` foreground probability at the padded batch shape.
            nt_prob: ``[B]`` no-target probability, or None.
            map_extras: name -> ``[B, K, H, W]`` maps at the batch shape; each sample gets its
                ``[K, h, w]`` crop in ``pred_extras``.
            extras: per-sample dicts merged into ``pred_extras`` as they are.
        """
        B, H, W = prob.shape
        if len(batch_data_samples) != B:
            raise ValueError(f'RefPostProcessor: {len(batch_data_samples)} data samples but a '
                             f'batch of {B} probability maps')
        prob = prob.float()
        shapes = img_shapes(batch_data_samples, (H, W))
        # the image content: no batch padding, no letterbox band (they hold no image pixel)
        region = img_regions(content_boxes(batch_data_samples, shapes), (H, W), prob.device)
        fg = (prob > self.mask_thr) & region
        if nt_prob is None:
            is_nt = torch.zeros(B, dtype=torch.bool, device=prob.device)
            keep = torch.ones(B, device=prob.device)
        else:
            nt_prob = nt_prob.float().reshape(B)
            is_nt = nt_prob > self.nt_thr
            keep = 1 - nt_prob
        count = fg.sum(dim=(1, 2))
        mean_fg = (prob * fg).sum(dim=(1, 2)) / count.clamp(min=1)
        peak = prob.masked_fill(~region, 0).amax(dim=(1, 2))
        score = torch.where(count > 0, mean_fg, peak) * keep
        if nt_prob is not None:
            score = torch.where(is_nt, nt_prob, score)
        masks = fg & ~is_nt[:, None, None]
        boxes = masks_to_boxes(masks)
        nt_host = nt_prob if nt_prob is not None else torch.zeros_like(score)
        host = torch.stack([is_nt.float(), score, nt_host]).cpu()  # the one device -> host copy
        for b, ds in enumerate(batch_data_samples):
            h, w = shapes[b]
            no_target = bool(host[0, b])
            ds.pred_prob = prob[b, :h, :w]
            ds.pred_mask_thr = self.mask_thr
            ds.pred_mask = masks[b, :h, :w]
            if no_target:
                ds.pred_mask_ungated = fg[b, :h, :w]
            ds.pred_no_target = no_target
            ds.pred_box = boxes[b]
            ds.pred_score = float(host[1, b])
            sample_extras = {} if extras is None else dict(extras[b])
            if nt_prob is not None:
                sample_extras['no_target_score'] = float(host[2, b])
            for name, maps in (map_extras or {}).items():
                sample_extras[name] = maps[b, :, :h, :w]
            ds.pred_extras = sample_extras
        return batch_data_samples
