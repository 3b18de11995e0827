"""Match costs of InstAlign's Phrase-Aligned Instance Supervision (section 3.4, Eq. 6).

    L_match(i, j) = 2 * BCE(p_i, 1) + 5 * [BCE(s_i, s_j) + Dice(s_i, s_j)] + 1 * L_phrase(i)

used through mmdet's ``HungarianAssigner``. The mask terms are mmdet's ``CrossEntropyLossCost`` and
``DiceCost``; this file adds the two query-only terms (constant along the GT axis):

- :class:`ScoreBCECost`: ``BCE(sigmoid(score_logit_i), 1) = softplus(-score_logit_i)``, reading
  ``pred_instances.score_logits`` [N].
- :class:`PhraseAlignmentCost`: ``L_phrase(i) = 1 - cos(P_i, Q_i)``, reading
  ``pred_instances.phrase_costs`` [N] (computed by the head with
  :func:`~mmrefer.models.instalign.phrase_object_transformer.phrase_object_alignment`).
"""
from typing import Optional

import torch.nn.functional as F
from mmdet.models.task_modules.assigners.match_cost import BaseMatchCost
from mmengine.structures import InstanceData
from torch import Tensor, nn

from mmrefer.registry import MODELS, TASK_UTILS


def _query_cost(pred_instances: InstanceData, gt_instances: InstanceData, key: str) -> Tensor:
    if key not in pred_instances:
        raise KeyError(f'{key!r} missing from pred_instances (fields: {list(pred_instances.keys())})'
                       ' - the InstAlign head must provide it for this match cost')
    values = pred_instances.get(key)
    if values.dim() != 1:
        raise ValueError(f'pred_instances.{key} must be [num_queries], got {tuple(values.shape)}')
    return values[:, None].expand(-1, len(gt_instances))


@TASK_UTILS.register_module()
class ScoreBCECost(BaseMatchCost):
    """``weight * BCE(sigmoid(score_logits), 1)``, shape [num_queries, num_gts]."""

    def __call__(self, pred_instances: InstanceData, gt_instances: InstanceData,
                 img_meta: Optional[dict] = None, **kwargs) -> Tensor:
        cost = F.softplus(-_query_cost(pred_instances, gt_instances, 'score_logits').float())
        return cost * self.weight


@TASK_UTILS.register_module()
class PhraseAlignmentCost(BaseMatchCost):
    """``weight * (1 - cos(P_i, Q_i))``, shape [num_queries, num_gts]."""

    def __call__(self, pred_instances: InstanceData, gt_instances: InstanceData,
                 img_meta: Optional[dict] = None, **kwargs) -> Tensor:
        return _query_cost(pred_instances, gt_instances, 'phrase_costs').float() * self.weight


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
