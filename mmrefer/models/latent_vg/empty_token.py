"""Empty token of the Latent-VG GRES variant (supplementary B).

A learnable token ``e`` (``[1, 1, C]``) cross-attends to the encoder output ``X`` (``[B, T, C]``,
padding masked) and is classified as "no target"::

    e' = LN(e + MHA(q=e, k=X, v=X))
    e''= LN(e' + FFN(e'))
    logit_nt = w^T e'' + b                          ([B])

Trained with binary cross-entropy (weight 0.5); at test a sample with
``sigmoid(logit_nt) > threshold`` gets an all-zero mask.
"""
from typing import Optional

import torch
import torch.nn as nn

from mmrefer.registry import MODELS
from ..mixed_precision import fp32_island


@MODELS.register_module()
class EmptyTokenPredictor(nn.Module):
    """No-target classifier driven by a learnable empty token.

    Args:
        embed_dims (int): width ``C`` of the encoder output.
        num_heads (int): heads of the cross-attention.
        ffn_ratio (float): FFN hidden width / ``C``.
        dropout (float): attention / FFN dropout.
    """

    def __init__(self, embed_dims: int = 768, num_heads: int = 8, ffn_ratio: float = 2.0,
                 dropout: float = 0.0):
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'EmptyTokenPredictor: embed_dims {embed_dims} not divisible by '
                             f'num_heads {num_heads}')
        self.empty_token = nn.Parameter(torch.zeros(1, 1, embed_dims))
        nn.init.normal_(self.empty_token, std=0.02)
        self.cross_attn = nn.MultiheadAttention(embed_dims, num_heads, dropout=dropout,
                                                batch_first=True)
        self.norm1 = nn.LayerNorm(embed_dims)
        hidden = int(embed_dims * ffn_ratio)
        self.ffn = nn.Sequential(nn.Linear(embed_dims, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, embed_dims))
        self.norm2 = nn.LayerNorm(embed_dims)
        self.classifier = nn.Linear(embed_dims, 1)

    def forward(self, memory: torch.Tensor,
                padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``memory [B, T, C]``, ``padding_mask [B, T]`` (True = pad) -> logits ``[B]``."""
        # repeat, not expand: FlopCounterMode cannot track a view of a parameter under no_grad
        q = self.empty_token.repeat(memory.size(0), 1, 1)
        attn, _ = self.cross_attn(q, memory, memory, key_padding_mask=padding_mask,
                                  need_weights=False)
        e = self.norm1(q + attn)
        e = self.norm2(e + self.ffn(e))
        return self._logit(e)

    @fp32_island
    def _logit(self, e: torch.Tensor) -> torch.Tensor:
        """The no-target logit ``w^T e'' + b`` in fp32."""
        return self.classifier(e)[:, 0, 0]
