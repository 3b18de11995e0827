"""Positive-margin contrastive loss of Latent-VG (ICCV 2025, Sec. 3.4).

For a batch of ``B`` samples, original-text class tokens ``t_o`` (``[B, C]``) and the class
tokens of ``N`` latent expressions ``z_o`` (``[B, N, C]``)::

    s_i^{b,b'} = cos(t_o^b, z_o^{i,b'})                              (in-batch similarities)
    l_i^b = -log( exp(min(1, gamma + s_i^{b,b}) / tau)
                  / (exp(min(1, gamma + s_i^{b,b}) / tau) + sum_{b' != b} exp(s_i^{b,b'} / tau)) )
    L = mean_{b, i} l_i^b

The margin lifts the positive logit and the cap at 1 stops pulling a latent expression once its
similarity reaches ``1 - gamma``, so latents stay close to, but not identical with, the text.
The negatives are the same expression of the other samples in the batch (``B = 1``: loss 0).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmrefer.registry import MODELS


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
