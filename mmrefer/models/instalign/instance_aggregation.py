"""Adaptive Instance Aggregation (InstAlign section 3.5, Eq. 8) and its ablation variants.

Given instance mask logits s [B, N, h, w] and relevance probabilities p [B, N]:

    ``mode='aia'``            M = sigmoid(sum_i p_i * PReLU(s_i))   (the paper)
    ``mode='aia_no_prelu'``   M = sigmoid(sum_i p_i * s_i)
    ``mode='threshold'``      M = max over {i : p_i > t} of sigmoid(s_i)   (hard selection,
                              all zero when no query passes; ablation "fixed threshold")

The module returns the merged *logits* (the argument of the sigmoid; for ``threshold`` the max of
the selected logits, or a large negative number where nothing is selected) so that the merged
BCE + Dice loss can use the numerically stable ``*_with_logits`` forms.
"""
import torch
from torch import Tensor, nn

from mmrefer.registry import MODELS
from ..mixed_precision import fp32_island

_MODES = ('aia', 'aia_no_prelu', 'threshold')


@MODELS.register_module()
class AdaptiveInstanceAggregation(nn.Module):
    """Merge per-query instance masks into one referring mask.

    Args:
        mode (str): ``'aia'``, ``'aia_no_prelu'`` or ``'threshold'``.
        threshold (float): relevance threshold t of ``'threshold'`` mode.
        prelu_init (float): initial negative slope of the (single-parameter) PReLU.
    """

    def __init__(self, mode: str = 'aia', threshold: float = 0.5, prelu_init: float = 0.25):
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f'AdaptiveInstanceAggregation: mode must be one of {_MODES}, '
                             f'got {mode!r}')
        self.mode = mode
        self.threshold = threshold
        self.prelu = nn.PReLU(num_parameters=1, init=prelu_init) if mode == 'aia' else None

    @fp32_island
    def forward(self, mask_logits: Tensor, scores: Tensor) -> Tensor:
        """Args: mask_logits [B, N, h, w], scores p [B, N] in [0, 1]. Returns logits [B, h, w]."""
        if mask_logits.shape[:2] != scores.shape:
            raise ValueError('AdaptiveInstanceAggregation: mask_logits [B,N,h,w] and scores '
                             f'[B,N] disagree: {tuple(mask_logits.shape)} vs {tuple(scores.shape)}')
        if self.mode == 'threshold':
            keep = (scores > self.threshold)[..., None, None]
            low = torch.finfo(mask_logits.dtype).min / 2
            return mask_logits.masked_fill(~keep, low).amax(dim=1).clamp(min=-1e4)
        s = self.prelu(mask_logits) if self.prelu is not None else mask_logits
        return torch.einsum('bn,bnhw->bhw', scores, s)
