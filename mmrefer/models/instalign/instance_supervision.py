"""Phrase-Aligned Instance Supervision of InstAlign (section 3.4, Eq. 5-7): the match costs, the
assignment and the instance loss ``L_inst``, all in this file.

Per image, with N queries, M ground-truth instances and the mask-prediction size h x w:

    p_i         = sigmoid(score_logits_i)              [N]       relevance of query i
    s_hat_i     = instance mask logits                 [N, h, w] (Eq. 4)
    L_phrase(i) = 1 - cos(P_i, Q_i)                    [N]       (Eq. 3, from the head)
    s_j         = GT instance masks at h x w           [M, h, w]

    (Eq. 6)  L_match(i, j) = 2 BCE(p_i, 1) + 5 [BCE(s_hat_i, s_j) + Dice(s_hat_i, s_j)]
                             + 1 L_phrase(i)                       cost matrix [N, M]
    (Eq. 5)  omega* = argmin_omega sum_j L_match(omega_j, j)       min(N, M) pairs
    (Eq. 7)  L_inst = sum_j L_match(omega*_j, j) + sum_{i not in omega*} BCE(p_i, 0)

The costs are those of mmdet's ``HungarianAssigner`` (``train_cfg.assigner``): the two
query-only costs below plus mmdet's ``CrossEntropyLossCost`` / ``DiceCost``, summed as its
``assign`` sums them; the matching is scipy's ``linear_sum_assignment``, as there. ``L_inst``
is normalised as in Mask2Former: the score BCE averaged over the B x N queries, with weight 2
(``loss_score``) on a matched query and 1 (``unmatched_score_weight``, Eq. 7) on the others,
``5 * BCE`` over the matched pixels, ``5 * Dice`` and ``1 * L_phrase`` over the matched
instances (their count all-reduced across ranks and kept as a tensor).

Host transfers: scipy needs the cost matrices on the host. mmdet's ``assign`` copies each one
there and the match back in two blocking uploads: three waits for the GPU per image and
supervised layer (480 per step for 10 layers and 16 images with targets). Here the head matches
all its layers at once (:meth:`PhraseAlignedInstanceSupervision.get_targets_layers`): every cost
matrix of the step in one device -> host copy, every match (score targets, matched queries,
their GT rows) back in one non-blocking copy. The number of matched pairs is known from the
shapes (``min(N, M)``), so nothing else is read back (no ``nonzero``; mmdet's
``MaskPseudoSampler`` would add one).

Kernel launches: the costs of a layer are computed for the whole batch in one go
(:meth:`PhraseAlignedInstanceSupervision.batch_cost`): the B x N queries against the batch's
sum_b M_b GT instances, ``[B N, sum M]``, of which each image's own block ``[N, M_b]`` is
solved. The cross-image entries are B times the arithmetic of the per-image matrices (6.6
GFLOP per layer at batch 16, 100 queries, 120 x 120 masks, 3 instances per image: under 1 % of
the training step) for about 27 launches per layer instead of about 27 per image and layer
(3,253 -> 284 non-view ops for 10 layers of 16 images, 12 of them with targets).
"""
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmdet.models.task_modules.assigners.match_cost import BaseMatchCost
from mmdet.utils import reduce_mean
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from mmrefer.registry import MODELS, TASK_UTILS
from ..mixed_precision import fp32_island
from ..utils import _PREPROCESS_HINT, _on, resize_bilinear

__all__ = ['ScoreBCECost', 'PhraseAlignmentCost', 'PhraseAlignmentLoss',
           'PhraseAlignedInstanceSupervision']


def _query_cost(pred_instances: InstanceData, gt_instances: InstanceData, key: str) -> Tensor:
    if key not in pred_instances:
        raise KeyError(f'{key!r} missing from pred_instances (fields: '
                       f'{list(pred_instances.keys())}) - the InstAlign head must provide it for '
                       'this match cost')
    values = pred_instances.get(key)
    if values.dim() != 1:
        raise ValueError(f'pred_instances.{key} must be [num_queries], got {tuple(values.shape)}')
    return values[:, None].expand(-1, len(gt_instances))


@TASK_UTILS.register_module()
class ScoreBCECost(BaseMatchCost):
    """``weight * BCE(sigmoid(score_logits_i), 1) = weight * softplus(-score_logits_i)``, read
    from ``pred_instances.score_logits`` [N]; returns [N, M] (constant along M)."""

    def __call__(self, pred_instances: InstanceData, gt_instances: InstanceData,
                 img_meta: Optional[dict] = None, **kwargs) -> Tensor:
        cost = F.softplus(-_query_cost(pred_instances, gt_instances, 'score_logits').float())
        return cost * self.weight


@TASK_UTILS.register_module()
class PhraseAlignmentCost(BaseMatchCost):
    """``weight * L_phrase(i) = weight * (1 - cos(P_i, Q_i))``, read from
    ``pred_instances.phrase_costs`` [N]; returns [N, M] (constant along M)."""

    def __call__(self, pred_instances: InstanceData, gt_instances: InstanceData,
                 img_meta: Optional[dict] = None, **kwargs) -> Tensor:
        return _query_cost(pred_instances, gt_instances, 'phrase_costs').float() * self.weight


@MODELS.register_module()
class PhraseAlignmentLoss(nn.Module):
    """``loss_weight * sum_i L_phrase(i) / avg_factor`` over the matched queries.

    Args:
        loss_weight (float): lambda_phrase.
    """

    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, costs: Tensor, avg_factor: Union[Tensor, float, None] = None) -> Tensor:
        """Args: costs [M] = ``1 - cos(P_i, Q_i)`` of the matched queries; avg_factor (number or
        0-dim tensor, clamped to >= 1; default M). A tensor stays on the device (no host sync)."""
        if costs.numel() == 0:
            return costs.sum() * 0
        if avg_factor is None:
            denom = costs.numel()
        elif isinstance(avg_factor, Tensor):
            denom = avg_factor.clamp(min=1)
        else:
            denom = max(float(avg_factor), 1.0)
        return self.loss_weight * costs.sum() / denom


class PhraseAlignedInstanceSupervision(BaseModule):
    """Assignment (Eq. 5-6) and ``L_inst`` (Eq. 7) for one prediction layer of the head.

    Args:
        assigner (dict): ``HungarianAssigner`` config with the Eq. 6 costs.
        loss_score (dict): BCE on the relevance logits (weight 2).
        loss_mask (dict): BCE on the matched mask logits (weight 5).
        loss_dice (dict): Dice on the matched masks (weight 5).
        loss_phrase (dict, optional): :class:`PhraseAlignmentLoss` (weight 1); None drops the
            term (ablation "w/o phrase alignment").
    """

    def __init__(self, assigner: dict, loss_score: dict, loss_mask: dict, loss_dice: dict,
                 loss_phrase: Optional[dict] = None, unmatched_score_weight: float = 1.0):
        super().__init__()
        self.assigner = TASK_UTILS.build(assigner)
        if not hasattr(self.assigner, 'match_costs'):
            raise TypeError('PhraseAlignedInstanceSupervision: the assigner must be a '
                            'HungarianAssigner (its match_costs make the Eq. 6 cost), got '
                            f'{type(self.assigner).__name__}')
        self.loss_score = MODELS.build(loss_score)
        self.loss_mask = MODELS.build(loss_mask)
        self.loss_dice = MODELS.build(loss_dice)
        self.loss_phrase = MODELS.build(loss_phrase) if loss_phrase is not None else None
        # Eq. 7: lambda_score weighs the score BCE of matched queries only (inside L_match);
        # an unmatched query's BCE(p, 0) enters with this weight
        self.unmatched_score_weight = float(unmatched_score_weight)

    @staticmethod
    def gt_instances(batch_data_samples: Sequence, pad_shape: Tuple[int, int],
                     mask_size: Tuple[int, int], device) -> List[InstanceData]:
        """Per image ``InstanceData(masks [M_b, h, w] float, labels zeros [M_b])``: the GT
        instance masks, which ``RefDataPreprocessor`` padded (bottom / right) to the batch shape
        ``pad_shape`` [H, W] and put on the device, bilinearly resized to the mask size in one
        call for the whole batch. Masks anywhere else are an error naming the sample."""
        H, W = pad_shape
        masks = []
        for i, ds in enumerate(batch_data_samples):
            if 'gt_instances' not in ds or 'masks' not in ds.gt_instances:
                raise KeyError(f'data sample {i} ({ds.metainfo.get("img_path")}) has no '
                               'gt_instances.masks (needed by the instance supervision)')
            m = ds.gt_instances.masks
            if (not isinstance(m, torch.Tensor) or tuple(m.shape[-2:]) != (H, W) or m.dim() != 3
                    or not _on(m, device)):
                got = (f'{tuple(m.shape)} tensor on {m.device}' if isinstance(m, torch.Tensor)
                       else type(m).__name__)
                raise ValueError(f'data sample {i} ({ds.metainfo.get("img_path")}): '
                                 f'gt_instances.masks is a {got}, expected [M, {H}, {W}] on '
                                 f'{device}: {_PREPROCESS_HINT}')
            masks.append(m)
        counts = [len(m) for m in masks]
        masks = torch.cat(masks).float()  # one cast for the batch (cat promotes mixed dtypes)
        masks = (resize_bilinear(masks[None], mask_size)[0] if len(masks)
                 else masks.new_zeros((0, ) + tuple(mask_size)))
        labels = torch.zeros(len(masks), dtype=torch.long, device=device)
        return [InstanceData(masks=m, labels=lb)
                for m, lb in zip(masks.split(counts), labels.split(counts))]

    def get_targets(self, score_logits: Tensor, mask_logits: Tensor, phrase_costs: Tensor,
                    batch_gt_instances: List[InstanceData],
                    batch_img_metas: List[dict]) -> Tuple[Tensor, Tensor, Tensor, int]:
        """Match every image of one layer (:meth:`get_targets_layers` of that layer).

        Args:
            score_logits [B, N], mask_logits [B, N, h, w], phrase_costs [B, N]: one layer.
            batch_gt_instances: per image ``InstanceData(masks [M_b, h, w], labels [M_b])``.

        Returns:
            tuple: ``score_targets`` [B, N] (1 = matched), ``pos_inds`` [P] (matched queries as
            indices into the flattened B x N, ascending), ``mask_targets`` [P, h, w] (their GT
            masks) and ``num_pos`` = P = sum_b min(N, M_b) (a Python int, from the shapes).
        """
        return self.get_targets_layers([(score_logits, mask_logits, phrase_costs)],
                                       batch_gt_instances, batch_img_metas)[0]

    @fp32_island
    def get_targets_layers(self, layers: Sequence[Tuple[Tensor, Tensor, Tensor]],
                           batch_gt_instances: List[InstanceData],
                           batch_img_metas: List[dict]) -> List[Tuple[Tensor, Tensor, Tensor, int]]:
        """:meth:`get_targets` of several layers (``(score_logits, mask_logits, phrase_costs)``
        each) at once: one :meth:`batch_cost` per layer, every cost matrix to the host in one
        copy, each image's block solved there (:meth:`match`), the matches back in one
        non-blocking copy."""
        B, N = layers[0][0].shape
        device = layers[0][0].device
        counts = [len(gt) for gt in batch_gt_instances]
        first_gt = np.cumsum([0] + counts[:-1])
        pairs = [(j, b) for j in range(len(layers)) for b in range(B) if counts[b]]
        all_masks = torch.cat([gt.masks for gt in batch_gt_instances])  # [sum M_b, h, w]
        matches = []
        if pairs:
            gt = InstanceData(masks=all_masks,
                              labels=torch.cat([gt.labels for gt in batch_gt_instances]))
            costs = torch.stack([self.batch_cost(InstanceData(
                score_logits=score.detach().flatten().float(),
                masks=masks.detach().flatten(0, 1).float(),
                phrase_costs=phrase.detach().flatten().float()), gt)
                for score, masks, phrase in layers])  # [L, B N, sum M]
            blocks = [(j, slice(b * N, (b + 1) * N),
                       slice(first_gt[b], first_gt[b] + counts[b])) for j, b in pairs]
            matches = self.match(costs, blocks)
        # on the host: score targets, matched queries (flat, ascending), their GT rows in the
        # batch's concatenated GT masks
        score_targets = np.zeros((len(layers), B, N), np.int64)
        pos = [[np.zeros(0, np.int64)] for _ in layers]
        gt_rows = [[np.zeros(0, np.int64)] for _ in layers]
        for (j, b), (rows, cols) in zip(pairs, matches):  # rows ascending (scipy)
            score_targets[j, b, rows] = 1
            pos[j].append(rows + b * N)
            gt_rows[j].append(cols + first_gt[b])
        pos = [np.concatenate(p) for p in pos]
        gt_rows = [np.concatenate(g) for g in gt_rows]
        sizes = [score_targets.size] + [len(p) for p in pos] + [len(g) for g in gt_rows]
        host = torch.from_numpy(np.concatenate([score_targets.ravel()] + pos + gt_rows))
        dev = host.to(device, non_blocking=True).split(sizes)
        L = len(layers)
        score_dev = dev[0].view(L, B, N).float()
        return [(score_dev[j], dev[1 + j], all_masks[dev[1 + L + j]], len(pos[j]))
                for j in range(L)]

    def batch_cost(self, pred_instances: InstanceData, gt_instances: InstanceData) -> Tensor:
        """Eq. 6 costs of every query of a batch against every GT instance of the batch:
        ``pred_instances`` [B N] (``score_logits``, ``masks`` [B N, h, w], ``phrase_costs``),
        ``gt_instances`` [sum M] -> [B N, sum M], the sum of the assigner's match costs (as
        mmdet's ``HungarianAssigner.assign`` sums them). Only the block of an image's own
        queries and instances is solved; the costs are called with ``img_meta=None``, since
        the rows come from several images (no mask or query cost reads it)."""
        return torch.stack([cost(pred_instances=pred_instances, gt_instances=gt_instances,
                                 img_meta=None) for cost in self.assigner.match_costs]).sum(0)

    @staticmethod
    def match(costs: Tensor, blocks: Sequence[Tuple[int, slice, slice]]
              ) -> List[Tuple[np.ndarray, np.ndarray]]:
        """Eq. 5 for each block ``(j, rows, cols)`` of the cost matrices ``costs`` [L, R, C]
        (``costs[j, rows, cols]``: one image's queries against its own instances): scipy's
        Hungarian solver, the matched rows (ascending, within the block) and columns. The
        matrices are copied to the host together: the one device -> host read of the loss."""
        host = costs.cpu().numpy()
        return [linear_sum_assignment(host[j, rows, cols]) for j, rows, cols in blocks]

    @fp32_island
    def loss(self, score_logits: Tensor, mask_logits: Tensor, phrase_costs: Tensor,
             batch_gt_instances: Optional[List[InstanceData]] = None,
             batch_img_metas: Optional[List[dict]] = None,
             targets: Optional[Tuple[Tensor, Tensor, Tensor, int]] = None
             ) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
        """``L_inst`` terms of one layer (shapes as :meth:`get_targets`): ``loss_score``,
        ``loss_mask``, ``loss_dice``, ``loss_phrase`` (None without ``loss_phrase``).
        ``targets``: this layer's :meth:`get_targets_layers` entry (the head matches all its
        layers at once); computed here from the GT when not given."""
        if targets is None:
            targets = self.get_targets(score_logits, mask_logits, phrase_costs,
                                       batch_gt_instances, batch_img_metas)
        score_targets, pos, mask_targets, num_pos = targets
        targets = score_targets.flatten()
        unmatched = self.unmatched_score_weight / self.loss_score.loss_weight
        weight = torch.where(targets > 0, 1.0, unmatched).to(targets)
        loss_score = self.loss_score(score_logits.flatten().float(), targets, weight=weight)
        if num_pos == 0:  # nothing matched (all no-target): zeros that keep the graph connected
            zero = mask_logits.sum() * 0
            phrase = phrase_costs.sum() * 0 if self.loss_phrase is not None else None
            return loss_score, zero, zero, phrase
        num = reduce_mean(score_logits.new_full((), float(num_pos), dtype=torch.float32))
        num = num.clamp(min=1)
        preds = mask_logits.flatten(0, 1)[pos].flatten(1).float()  # [P, h*w]
        targets = mask_targets.flatten(1).to(preds)
        loss_mask = self.loss_mask(preds, targets, avg_factor=num * preds.shape[1])
        loss_dice = self.loss_dice(preds, targets, avg_factor=num)
        phrase = (self.loss_phrase(phrase_costs.flatten()[pos].float(), avg_factor=num)
                  if self.loss_phrase is not None else None)
        return loss_score, loss_mask, loss_dice, phrase
