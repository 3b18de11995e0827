"""Visual concept injector of Latent-VG (ICCV 2025, Sec. 3.2).

Runs after every encoder layer on the joint sequence
``X = [v_0, v_1..v_P | t_cls, t_1..t_m | Z^1 | ... | Z^N]``, ``Z^i = [z_cls^i ; s^i ; A^i]``.
With ``V = [v_1..v_P]`` (``[B, P, C]``), the concept bank ``K`` (``[Nc, C]``, orthogonal init,
shared across layers) and all attribute tokens ``A = [A^1; ..; A^N]`` (``[B, K_a, C]``,
``K_a = sum_i k_i``)::

    r_p   = cos(v_p, t_cls);   target patches  M_p = [r_p >= mean_p r_p]
    W     = softmax_p( cos(K, V) / tau_c  masked to M )            [B, Nc, P]
    C^V   = W V                                                     [B, Nc, C]
    S     = softmax over the attribute axis of cos(A, C^V) / tau_a  [B, K_a, Nc]
            (column normalisation: every concept is shared out among *all* attribute slots)
    A~    = S C^V   (ours, not in the paper's equation: rows renormalised to a weighted mean
                     when ``row_normalize``, as Slot Attention does; docs/latentvg.md)
    A    <- A~      (``residual=True``: A <- A + A~)

Computed in fp32 (normalisation eps 1e-6). CLS and subject slots are left unchanged. With
autograd off (inference) the new attributes are written into ``x`` itself, as in the subject
distributor: no copy of the whole sequence per layer. The
positions of ``V``, ``t_cls`` and every ``A^i`` come from the :class:`~.token_layout.TokenLayout`.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmrefer.registry import MODELS
from ..mixed_precision import fp32_island
from .token_layout import as_layout


@MODELS.register_module()
class VisualConceptInjector(nn.Module):
    """Inject target-related visual concepts into the latent attribute tokens.

    Args:
        embed_dims (int): token width ``C``.
        num_concepts (int): concept tokens ``Nc`` (100).
        concept_temperature (float): ``tau_c`` of the patch softmax (1.0: plain cosine).
        assign_temperature (float): ``tau_a`` of the attribute-axis softmax (1.0).
        row_normalize (bool): divide each attribute's assignment by its row sum (slot-attention
            weighted mean) so ``A~`` stays on the scale of ``C^V``.
        residual (bool): add ``A~`` to the attributes instead of replacing them.
        num_banks (int): concept banks. 1 (default): one bank ``[Nc, C]`` shared by every
            layer, as the LEAD port says the released code does (DESIGN.md section 5).
            ``L`` (the encoder depth): one bank ``[L, Nc, C]`` per layer, which is what the
            supplementary's "+1M parameters" for the injector (C.3) fits: 12 x 100 x 768 =
            0.92M, against 0.08M for the shared bank.
    """

    def __init__(self,
                 embed_dims: int = 768,
                 num_concepts: int = 100,
                 concept_temperature: float = 1.0,
                 assign_temperature: float = 1.0,
                 row_normalize: bool = True,
                 residual: bool = False,
                 num_banks: int = 1):
        super().__init__()
        if num_concepts < 1:
            raise ValueError(f'VisualConceptInjector: num_concepts must be >= 1, got {num_concepts}')
        if num_banks < 1:
            raise ValueError(f'VisualConceptInjector: num_banks must be >= 1, got {num_banks}')
        self.num_banks = num_banks
        self.embed_dims = embed_dims
        self.num_concepts = num_concepts
        self.concept_temperature = concept_temperature
        self.assign_temperature = assign_temperature
        self.row_normalize = row_normalize
        self.residual = residual
        shape = (num_concepts, embed_dims) if num_banks == 1 else (num_banks, num_concepts,
                                                                     embed_dims)
        self.concepts = nn.Parameter(torch.empty(shape))
        self.reset_parameters()

    def reset_parameters(self):
        # orthonormal rows when Nc <= C (orthonormal columns otherwise), bank by bank
        for bank in self.concepts.data.reshape(-1, self.num_concepts, self.embed_dims):
            nn.init.orthogonal_(bank)

    def bank(self, layer: int = 0) -> torch.Tensor:
        """The concept tokens ``[Nc, C]`` used after encoder layer ``layer``."""
        if self.num_banks == 1:
            return self.concepts
        if not 0 <= layer < self.num_banks:
            raise IndexError(f'VisualConceptInjector: layer {layer} has no concept bank '
                             f'(num_banks={self.num_banks}: set it to the encoder depth)')
        return self.concepts[layer]

    @fp32_island
    def inject(self, vis: torch.Tensor, t_cls: torch.Tensor, attrs: torch.Tensor,
               layer: int = 0) -> torch.Tensor:
        """``vis [B,P,C]``, ``t_cls [B,C]``, ``attrs [B,Ka,C]`` -> new attributes ``[B,Ka,C]``
        (with the concept bank of ``layer``)."""
        dtype = attrs.dtype
        vis, t_cls, attrs = vis.float(), t_cls.float(), attrs.float()
        vis_n = F.normalize(vis, dim=-1, eps=1e-6)
        rel = torch.einsum('bpc,bc->bp', vis_n, F.normalize(t_cls, dim=-1, eps=1e-6))
        target = rel >= rel.mean(dim=1, keepdim=True)  # at least the max patch is kept
        concepts = F.normalize(self.bank(layer).float(), dim=-1, eps=1e-6)
        logits = torch.einsum('kc,bpc->bkp', concepts, vis_n) / self.concept_temperature
        logits = logits.masked_fill(~target[:, None], float('-inf'))
        w = logits.softmax(dim=-1)
        concept_vis = torch.einsum('bkp,bpc->bkc', w, vis)  # C^V
        sim = torch.einsum('bac,bkc->bak', F.normalize(attrs, dim=-1, eps=1e-6),
                           F.normalize(concept_vis, dim=-1, eps=1e-6))
        assign = (sim / self.assign_temperature).softmax(dim=1)  # over the attribute axis
        if self.row_normalize:
            assign = assign / assign.sum(dim=-1, keepdim=True).clamp_min(1e-6)
        new = torch.einsum('bak,bkc->bac', assign, concept_vis)
        if self.residual:
            new = attrs + new
        return new.to(dtype)

    def forward(self, x: torch.Tensor, layout, layer: int = 0) -> torch.Tensor:
        """``x [B, T, C]`` joint sequence, ``layout`` its :class:`TokenLayout` (or group
        sizes), ``layer`` the encoder layer just run (picks the bank when ``num_banks > 1``);
        returns the same shape with the attribute tokens replaced."""
        layout = as_layout(layout, x, 'VisualConceptInjector')
        if not layout.num_latents:
            return x
        # slices, not an index tensor: fewer kernels, and the same values and gradients
        spans = [layout.attrs(i) for i in range(layout.num_latents)]
        new = self.inject(x[:, layout.patches], x[:, layout.text_cls],
                          torch.cat([x[:, s] for s in spans], dim=1), layer)
        out = x.clone() if torch.is_grad_enabled() else x  # new holds what it read of x
        start = 0
        for s in spans:
            out[:, s] = new[:, start:start + s.stop - s.start]
            start += s.stop - s.start
        return out
