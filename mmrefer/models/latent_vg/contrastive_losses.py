"""Positive-margin contrastive loss of Latent-VG (ICCV 2025, Sec. 3.3, inferred).

For a batch of ``B`` samples, original-text class tokens ``t_o`` (``[B, C]``) and the class
tokens of ``N`` latent expressions ``z_o`` (``[B, N, C]``)::

    s_i^{b,b'} = cos(t_o^b, z_o^{i,b'})                              (in-batch similarities)
    l_i^b = -log( exp(min(1, gamma + s_i^{b,b}) / tau)
                  / (exp(min(1, gamma + s_i^{b,b}) / tau) + sum_{b' != b} exp(s_i^{b,b'} / tau)) )
    L = mean_{b, i} l_i^b

The margin lifts the positive logit and the cap at 1 stops pulling a latent expression once its
similarity reaches ``1 - gamma``, so latents stay close to, but not identical with, the text.
The negatives are the same expression of the other samples in the batch (``B = 1``: loss 0).

Variants for the contrastive-loss ablation, on the same similarities::

    InfoNCE:  l = -log softmax_{b'}(s_i^{b,b'} / tau)[b]
    Triplet:  l = max(0, margin - s_i^{b,b} + max_{b' != b} s_i^{b,b'})       (hardest negative)
    ArcFace:  l = -log softmax over [cos(theta + m), s_i^{b,b'} (b' != b)] / tau,
              theta = arccos(s_i^{b,b})                          (additive angular margin)
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmrefer.registry import MODELS
from ..mixed_precision import fp32_island


@fp32_island
def pairwise_cosine(text_embeds: torch.Tensor, latent_embeds: torch.Tensor) -> torch.Tensor:
    """``[B, C]``, ``[B, N, C]`` -> ``[N, B, B]`` with ``[i, b, b'] = cos(t^b, z^{i,b'})``."""
    if text_embeds.dim() != 2 or latent_embeds.dim() != 3 or \
            latent_embeds.shape[0] != text_embeds.shape[0] or \
            latent_embeds.shape[-1] != text_embeds.shape[-1]:
        raise ValueError('contrastive loss: expected text_embeds [B, C] and latent_embeds '
                         f'[B, N, C], got {tuple(text_embeds.shape)} and '
                         f'{tuple(latent_embeds.shape)}')
    t = F.normalize(text_embeds.float(), dim=-1)
    z = F.normalize(latent_embeds.float(), dim=-1)
    return torch.einsum('bc,xnc->nbx', t, z)


@fp32_island
def margin_cross_entropy(sim: torch.Tensor, positive: torch.Tensor,
                         temperature: float) -> torch.Tensor:
    """Cross-entropy over in-batch logits ``sim`` (``[N,B,B]``) whose diagonal is replaced by
    ``positive`` (``[N,B]``); returns the mean over ``N`` and ``B``."""
    n, b, _ = sim.shape
    eye = torch.eye(b, dtype=torch.bool, device=sim.device)
    logits = torch.where(eye, torch.diag_embed(positive), sim) / temperature
    target = torch.arange(b, device=sim.device).repeat(n)
    return F.cross_entropy(logits.reshape(n * b, b), target)


@MODELS.register_module()
class PositiveMarginContrastiveLoss(nn.Module):
    """Args:
        gamma (float): positive margin (0.2).
        temperature (float): ``tau`` (0.07).
        loss_weight (float): weight of the loss.
    """

    def __init__(self, gamma: float = 0.2, temperature: float = 0.07, loss_weight: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f'PositiveMarginContrastiveLoss: temperature must be > 0, '
                             f'got {temperature}')
        self.gamma = gamma
        self.temperature = temperature
        self.loss_weight = loss_weight

    def forward(self, text_embeds: torch.Tensor, latent_embeds: torch.Tensor) -> torch.Tensor:
        sim = pairwise_cosine(text_embeds, latent_embeds)
        pos = torch.diagonal(sim, dim1=1, dim2=2)
        pos = torch.clamp(pos + self.gamma, max=1.0)
        return self.loss_weight * margin_cross_entropy(sim, pos, self.temperature)


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
