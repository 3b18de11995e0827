"""Phrase-Object Alignment loss (InstAlign Eq. 3): mean of ``1 - cos(P_i, Q_i)`` over queries.

The head passes the per-query costs of the *matched* queries (see
:func:`mmrefer.models.layers.phrase_alignment.phrase_object_alignment`), so the loss is part of
``L_match`` of the matched pairs in ``L_inst`` (Eq. 7).
"""
from typing import Optional

from torch import Tensor, nn

from mmrefer.registry import MODELS


@MODELS.register_module()
class PhraseAlignmentLoss(nn.Module):
    """``loss_weight * sum_i cost_i / avg_factor`` (``avg_factor`` defaults to the count).

    Args:
        loss_weight (float): lambda_phrase.
    """

    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, costs: Tensor, avg_factor: Optional[float] = None) -> Tensor:
        """Args: costs [M] = 1 - cos(P_i, Q_i) of the matched queries."""
        if costs.numel() == 0:
            return costs.sum() * 0
        denom = costs.numel() if avg_factor is None else max(float(avg_factor), 1.0)
        return self.loss_weight * costs.sum() / denom
