"""No-target predictor (InstAlign section 3.6, Eq. 10-12) and its ablation inputs.

    Q_global = sum_i p_i * Q_K^i                    [B, C]  (the head passes LN(Q_K))
    T_sen    = mean over valid words of T_K         [B, C]
    p_nt     = sigmoid(MLP(concat(Q_global, T_sen)))    (``inputs='qglobal_tsen'``, the paper)

Ablations: ``'qglobal'`` (MLP(Q_global)), ``'tsen'`` (MLP(T_sen)), ``'qmean'`` (MLP(mean_i Q_i),
ReLA/LQMFormer style). The module returns the logit [B].
"""
from typing import Optional

import torch
from torch import Tensor, nn

from mmrefer.registry import MODELS
from ..mixed_precision import fp32_island

_INPUTS = ('qglobal_tsen', 'qglobal', 'tsen', 'qmean')


@MODELS.register_module()
class NoTargetPredictor(nn.Module):
    """MLP over the chosen global features; returns the no-target logit [B].

    Args:
        embed_dims (int): C.
        inputs (str): one of ``'qglobal_tsen'``, ``'qglobal'``, ``'tsen'``, ``'qmean'``.
        hidden_dims (int, optional): MLP hidden width (default C).
    """

    def __init__(self, embed_dims: int, inputs: str = 'qglobal_tsen',
                 hidden_dims: Optional[int] = None):
        super().__init__()
        if inputs not in _INPUTS:
            raise ValueError(f'NoTargetPredictor: inputs must be one of {_INPUTS}, got {inputs!r}')
        self.inputs = inputs
        in_dims = 2 * embed_dims if inputs == 'qglobal_tsen' else embed_dims
        hidden = hidden_dims or embed_dims
        self.mlp = nn.Sequential(nn.Linear(in_dims, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, 1))

    @fp32_island
    def forward(self, queries: Tensor, scores: Tensor, words: Tensor,
                word_mask: Optional[Tensor] = None) -> Tensor:
        """Args: queries Q_K [B, N, C], scores p [B, N], words T_K [B, L, C], word_mask [B, L]."""
        q_global = (scores.unsqueeze(-1) * queries).sum(1)
        if word_mask is None:
            t_sen = words.mean(1)
        else:
            m = word_mask.unsqueeze(-1).to(words.dtype)
            t_sen = (words * m).sum(1) / m.sum(1).clamp(min=1)
        if self.inputs == 'qglobal_tsen':
            feat = torch.cat([q_global, t_sen], dim=-1)
        elif self.inputs == 'qglobal':
            feat = q_global
        elif self.inputs == 'tsen':
            feat = t_sen
        else:
            feat = queries.mean(1)
        return self.mlp(feat).squeeze(-1)
