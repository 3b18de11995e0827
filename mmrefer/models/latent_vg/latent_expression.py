"""Latent expression initializer of Latent-VG (ICCV 2025, Sec. 3.1).

Notation: ``B`` batch, ``L`` text length (``<s>`` first), ``m = L - 1`` semantic slots,
``C`` width, ``N`` latent expressions, ``k_i`` attribute length of expression ``i``.

Input ``T = [t_cls, t_1 .. t_m]`` (``[B, L, C]``, word embeddings) and the text padding mask.

* subject token (Gumbel-softmax selection over the non-pad semantic tokens)::

      l_j = w^T t_j + b                        (Linear(C -> 1), pads masked out)
      train: y = onehot(argmax_j (l_j + g_j)/tau)  with straight-through gradient of
             softmax((l + g)/tau),  g_j = -log(-log u_j), u_j ~ U(0, 1)
      test:  y = onehot(argmax_j l_j)
      s = sum_j y_j t_j                        ([B, 1, C]),  tau learnable (init 0.07)

* attributes of expression ``i`` (element-wise dropout ``p_i``, off in eval; length transform
  ``phi_i = Linear(m -> k_i)`` along the token axis)::

      A_0^i = phi_i(Drop_{p_i}(T_sem)^T)^T     ([B, k_i, C])
      Z_0^i = LN_i([t_cls ; s ; A_0^i])         ([B, k_i + 2, C]),  z_cls^i starts at t_cls

``mode='naive'`` is the ablation without subject selection and dropout:
``Z_0^i = LN_i([t_cls ; t_cls ; phi_i(T_sem)])`` and the visual CLS slot is kept.
"""
import math
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmrefer.registry import MODELS
from ..mixed_precision import fp32_island


def _one_hot(index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """One-hot ``[B, m]`` of ``index [B]`` with ``like``'s width, dtype and device
    (``F.one_hot`` checks the index range with a host read on some devices)."""
    slots = torch.arange(like.size(-1), device=index.device)
    return (index[:, None] == slots).to(like)


@MODELS.register_module()
class LatentExpressionInitializer(nn.Module):
    """Build ``N`` latent expressions ``Z_0^i`` and the subject token from text embeddings.

    Args:
        embed_dims (int): token width ``C``.
        text_len (int): ``L``, the (padded) text length including ``<s>``; ``phi_i`` maps
            ``L - 1`` slots to ``k_i``.
        attr_lengths (Sequence[int]): ``k_i`` per expression (paper: (4, 10)).
        drop_probs (Sequence[float]): dropout ``p_i`` per expression (paper: (0.2, 0.15)).
        temperature (float): initial Gumbel temperature ``tau`` (0.07).
        learnable_temperature (bool): learn ``log tau`` (``mode='latent'`` only: the naive
            ablation has no subject selection, so no temperature is built).
        mode (str): ``'latent'`` (the paper) or ``'naive'`` (ablation, see module doc).
        use_norm (bool): per-expression LayerNorm on ``Z_0^i``.
    """

    def __init__(self,
                 embed_dims: int = 768,
                 text_len: int = 20,
                 attr_lengths: Sequence[int] = (4, 10),
                 drop_probs: Sequence[float] = (0.2, 0.15),
                 temperature: float = 0.07,
                 learnable_temperature: bool = True,
                 mode: str = 'latent',
                 use_norm: bool = True):
        super().__init__()
        if len(attr_lengths) != len(drop_probs):
            raise ValueError(f'LatentExpressionInitializer: attr_lengths {tuple(attr_lengths)} and '
                             f'drop_probs {tuple(drop_probs)} must have the same length')
        if mode not in ('latent', 'naive'):
            raise ValueError(f"LatentExpressionInitializer: mode must be 'latent' or 'naive', "
                             f'got {mode!r}')
        if text_len < 2:
            raise ValueError(f'LatentExpressionInitializer: text_len must be >= 2, got {text_len}')
        if temperature <= 0:
            raise ValueError(f'LatentExpressionInitializer: temperature must be > 0, '
                             f'got {temperature}')
        self.embed_dims = embed_dims
        self.text_len = text_len
        self.attr_lengths = tuple(int(k) for k in attr_lengths)
        self.drop_probs = tuple(float(p) for p in drop_probs)
        self.mode = mode
        self.num_expressions = len(self.attr_lengths)
        self.subject_selector = nn.Linear(embed_dims, 1) if mode == 'latent' else None
        log_tau = torch.tensor(math.log(temperature))
        if learnable_temperature and mode == 'latent':
            self.log_temperature = nn.Parameter(log_tau)
        else:
            self.register_buffer('log_temperature', log_tau)
        self.length_transforms = nn.ModuleList(
            nn.Linear(text_len - 1, k) for k in self.attr_lengths)
        self.norms = nn.ModuleList(
            nn.LayerNorm(embed_dims) if use_norm else nn.Identity() for _ in self.attr_lengths)

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    @fp32_island
    def select_subject(self, sem: torch.Tensor, sem_pad: torch.Tensor,
                       noise: Optional[torch.Tensor] = None):
        """Return ``(s [B,1,C], weights [B,m], index [B])``.

        ``noise`` (Gumbel samples ``[B, m]``) may be given for testing; drawn when None.
        """
        logits = self.subject_selector(sem).squeeze(-1).float()  # [B, m]
        # a sentence with no token after <s> (should not happen) selects slot 0; tensor ops
        # only (a boolean-mask assignment would read the mask back to the host)
        first = sem_pad[:, :1] & ~sem_pad.all(dim=1, keepdim=True)
        sem_pad = torch.cat([first, sem_pad[:, 1:]], dim=1)
        if self.training:
            if noise is None:
                u = torch.rand_like(logits).clamp_(1e-10, 1.0 - 1e-10)
                noise = -torch.log(-torch.log(u))
            # mask after scaling: -inf / tau would give NaN gradients to the temperature
            scaled = ((logits + noise) / self.temperature).masked_fill(sem_pad, float('-inf'))
            soft = F.softmax(scaled, dim=-1)
            index = soft.argmax(dim=-1)
            hard = _one_hot(index, soft)
            weights = hard - soft.detach() + soft  # straight-through
        else:
            index = logits.masked_fill(sem_pad, float('-inf')).argmax(dim=-1)
            weights = _one_hot(index, logits)
        subject = torch.einsum('bm,bmc->bc', weights.to(sem.dtype), sem)[:, None]
        return subject, weights, index

    def forward(self, text_embeds: torch.Tensor, padding_mask: Optional[torch.Tensor] = None,
                noise: Optional[torch.Tensor] = None) -> Dict:
        """Args:
            text_embeds: ``[B, L, C]`` text token embeddings, ``<s>`` first.
            padding_mask: ``[B, L]`` bool, True at padding (None: no padding).
            noise: optional Gumbel noise ``[B, L-1]`` (tests).

        Returns:
            dict with ``expressions`` (list of ``[B, k_i+2, C]``), ``subject`` (``[B, 1, C]`` or
            None for ``mode='naive'``), ``subject_weights`` (``[B, L-1]``) and
            ``subject_index`` (``[B]``, position in the text, i.e. ``>= 1``; -1 for naive).
        """
        if text_embeds.dim() != 3 or text_embeds.size(1) != self.text_len:
            raise ValueError(
                f'LatentExpressionInitializer: text_embeds must be [B, text_len={self.text_len}, '
                f'C], got {tuple(text_embeds.shape)}; set the config field text_len to the '
                'tokenizer max_length')
        B, L, _ = text_embeds.shape
        if padding_mask is None:
            padding_mask = text_embeds.new_zeros(B, L, dtype=torch.bool)
        padding_mask = padding_mask.bool()
        t_cls = text_embeds[:, :1]
        sem_pad = padding_mask[:, 1:]
        sem = text_embeds[:, 1:] * (~sem_pad)[..., None].to(text_embeds.dtype)

        if self.mode == 'latent':
            subject, weights, index = self.select_subject(sem, sem_pad, noise)
            index = index + 1
            subject_slot = subject
        else:
            subject, weights = None, sem.new_zeros(B, L - 1)
            index = torch.full((B, ), -1, dtype=torch.long, device=sem.device)
            subject_slot = t_cls

        expressions = []
        for i in range(self.num_expressions):
            p = self.drop_probs[i] if self.mode == 'latent' else 0.0
            dropped = F.dropout(sem, p, training=self.training)  # element-wise, off at test
            attrs = self.length_transforms[i](dropped.transpose(1, 2)).transpose(1, 2)
            z = torch.cat([t_cls, subject_slot, attrs], dim=1)
            expressions.append(self.norms[i](z))
        return dict(expressions=expressions, subject=subject, subject_weights=weights,
                    subject_index=index)
