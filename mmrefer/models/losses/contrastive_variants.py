"""Contrastive variants for the Latent-VG loss ablation (InfoNCE, triplet, ArcFace).

All take the original-text class tokens ``t_o [B, C]`` and latent class tokens ``z_o [B, N, C]``
and use ``s_i^{b,b'} = cos(t_o^b, z_o^{i,b'})`` (see ``positive_margin_contrastive.py``)::

    InfoNCE:  l = -log softmax_{b'}(s_i^{b,b'} / tau)[b]
    Triplet:  l = max(0, margin - s_i^{b,b} + max_{b' != b} s_i^{b,b'})       (hardest negative)
    ArcFace:  l = -log softmax over [cos(theta + m), s_i^{b,b'} (b' != b)] / tau,
              theta = arccos(s_i^{b,b})                          (additive angular margin)
"""
import torch
import torch.nn as nn

from mmrefer.registry import MODELS
from .positive_margin_contrastive import margin_cross_entropy, pairwise_cosine


@MODELS.register_module()
class InfoNCELoss(nn.Module):
    """Plain in-batch InfoNCE between text and latent class tokens."""

    def __init__(self, temperature: float = 0.07, loss_weight: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f'InfoNCELoss: temperature must be > 0, got {temperature}')
        self.temperature = temperature
        self.loss_weight = loss_weight

    def forward(self, text_embeds: torch.Tensor, latent_embeds: torch.Tensor) -> torch.Tensor:
        sim = pairwise_cosine(text_embeds, latent_embeds)
        pos = torch.diagonal(sim, dim1=1, dim2=2)
        return self.loss_weight * margin_cross_entropy(sim, pos, self.temperature)


@MODELS.register_module()
class TripletContrastiveLoss(nn.Module):
    """Hinge on the hardest in-batch negative (``B = 1``: only ``max(0, margin - s + ...)`` over
    no negatives, i.e. 0)."""

    def __init__(self, margin: float = 0.2, loss_weight: float = 1.0):
        super().__init__()
        self.margin = margin
        self.loss_weight = loss_weight

    def forward(self, text_embeds: torch.Tensor, latent_embeds: torch.Tensor) -> torch.Tensor:
        sim = pairwise_cosine(text_embeds, latent_embeds)
        b = sim.shape[-1]
        if b < 2:
            return sim.sum() * 0.0
        pos = torch.diagonal(sim, dim1=1, dim2=2)
        eye = torch.eye(b, dtype=torch.bool, device=sim.device)
        hardest = sim.masked_fill(eye, float('-inf')).amax(dim=-1)
        return self.loss_weight * (self.margin - pos + hardest).clamp_min(0).mean()


@MODELS.register_module()
class ArcFaceContrastiveLoss(nn.Module):
    """In-batch softmax with an additive angular margin ``m`` on the positive."""

    def __init__(self, margin: float = 0.2, temperature: float = 0.07, loss_weight: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f'ArcFaceContrastiveLoss: temperature must be > 0, got {temperature}')
        self.margin = margin
        self.temperature = temperature
        self.loss_weight = loss_weight

    def forward(self, text_embeds: torch.Tensor, latent_embeds: torch.Tensor) -> torch.Tensor:
        sim = pairwise_cosine(text_embeds, latent_embeds)
        pos = torch.diagonal(sim, dim1=1, dim2=2).clamp(-1 + 1e-6, 1 - 1e-6)
        pos = torch.cos(torch.acos(pos) + self.margin)
        return self.loss_weight * margin_cross_entropy(sim, pos, self.temperature)
