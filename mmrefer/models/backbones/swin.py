"""Swin Transformer (InstAlign's visual encoder): mmdet's ``SwinTransformer`` with its window
attention run by ``torch.nn.functional.scaled_dot_product_attention``.

Window attention of Swin (Liu et al., 2021, Eq. 4), per window of ``N = M^2`` tokens and head::

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d) + B + S) V

``B`` ``[h, N, N]`` is the relative position bias gathered from the ``(2M - 1)^2 x h`` table,
``S`` ``[nW, N, N]`` the region mask of the shifted windows (0 or -100; none in unshifted
blocks). mmdet writes the ``[B nW, h, N, N]`` logits out, adds ``B`` and ``S``, applies the
softmax and multiplies by ``V``. Under CUDA autocast the logits leave the matmul in bf16, the
bias add promotes them to fp32 (the table is an fp32 parameter), the softmax runs in fp32 and
the probabilities go back to bf16 for the product with ``V``: the largest tensor of the block
written four to five times. ``scaled_dot_product_attention`` takes ``B + S`` as its additive
mask and its fused kernels keep logits and probabilities on chip, with fp32 accumulation.

The modules, parameters and state-dict keys are mmdet's (its converted checkpoints load as they
are); the output equals mmdet's to float rounding, the bias entering the kernel in the dtype of
``Q`` (bf16 under autocast; the logits it is added to were bf16 already in mmdet's path). For
fp32 on the CPU, where the explicit path measured faster, mmdet's forward runs unchanged
(:func:`fused_attention_pays`), so CPU fp32 results and ONNX exports are mmdet's bitwise.

Shapes: windows ``x`` ``[B nW, N, C]``; unshifted: ``q, k, v`` ``[B nW, h, N, d]`` with the
mask ``B`` as ``[1, h, N, N]``; shifted: the windows folded into the heads, ``q, k, v``
``[B, nW h, N, d]`` with ``B + S`` as ``[1, nW h, N, N]``, so the mask broadcasts over the
images and is never copied per image; returns ``[B nW, N, C]``.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from mmdet.models.backbones import SwinTransformer
from mmdet.models.backbones.swin import WindowMSA
from torch import Tensor

from mmrefer.registry import MODELS

__all__ = ['SDPASwinTransformer', 'SDPAWindowMSA', 'fused_attention_pays']


def fused_attention_pays(x: Tensor) -> bool:
    """Whether :class:`SDPAWindowMSA` takes the fused path for ``x``: on every accelerator and
    under CPU autocast, not for fp32 on the CPU. There mmdet's explicit path measured faster on
    Swin-B at 480 x 480, batch 2 (forward 3.13 s against 3.29 s, forward and backward 9.5 s
    against 10.8 s), while under bf16 autocast the fused one was (forward 19.3 s against
    29.9 s; docs/benchmarks.md)."""
    return x.device.type != 'cpu' or torch.is_autocast_enabled('cpu')


class SDPAWindowMSA(WindowMSA):
    """mmdet's ``WindowMSA`` (same arguments and weights) computed by
    ``scaled_dot_product_attention`` (see the module docstring).

    ``fused``: ``None`` (default) takes the fused path where :func:`fused_attention_pays`,
    mmdet's own forward elsewhere (bitwise mmdet's); ``True`` / ``False`` force either.
    """

    def __init__(self, *args, fused: Optional[bool] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fused = fused

    @classmethod
    def like(cls, other: WindowMSA, fused: Optional[bool] = None) -> 'SDPAWindowMSA':
        """An ``SDPAWindowMSA`` with ``other``'s settings and weights."""
        with torch.random.fork_rng(devices=[]):  # the model's init stream stays mmdet's
            new = cls(embed_dims=other.embed_dims, num_heads=other.num_heads,
                      window_size=other.window_size, qkv_bias=other.qkv.bias is not None,
                      qk_scale=other.scale, attn_drop_rate=other.attn_drop.p,
                      proj_drop_rate=other.proj_drop.p, init_cfg=other.init_cfg, fused=fused)
        new.load_state_dict(other.state_dict())
        new.train(other.training)
        return new.to(other.qkv.weight.device)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """x ``[B nW, N, C]``; mask ``[nW, N, N]`` (shifted windows) or None."""
        if not (fused_attention_pays(x) if self.fused is None else self.fused):
            return super().forward(x, mask)
        windows, N, C = x.shape
        h = self.num_heads
        d = C // h
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(N, N, h).permute(2, 0, 1).contiguous()  # [h, N, N]
        qkv = self.qkv(x)
        if mask is None:
            q, k, v = qkv.view(windows, N, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
            attn_mask = bias.unsqueeze(0)
        else:
            nW = mask.shape[0]
            q, k, v = (qkv.view(windows // nW, nW, N, 3, h, d).permute(3, 0, 1, 4, 2, 5)
                       .reshape(3, windows // nW, nW * h, N, d).unbind(0))
            attn_mask = (bias.unsqueeze(0) + mask.unsqueeze(1)).view(1, nW * h, N, N)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask.to(q.dtype),
            dropout_p=self.attn_drop.p if self.training else 0.0, scale=self.scale)
        out = out.reshape(windows, h, N, d).transpose(1, 2).reshape(windows, N, C)
        return self.proj_drop(self.proj(out))


@MODELS.register_module()
class SDPASwinTransformer(SwinTransformer):
    """mmdet's ``SwinTransformer`` (same arguments, weights and keys) whose blocks' window
    attention is :class:`SDPAWindowMSA`.

    Args:
        fused_attention (bool, optional): ``None`` (default): the fused path on accelerators
            and under CPU autocast, mmdet's explicit one for fp32 on the CPU
            (:func:`fused_attention_pays`); ``True`` / ``False``: always / never fused.
        *args, **kwargs: mmdet's ``SwinTransformer`` arguments.
    """

    def __init__(self, *args, fused_attention: Optional[bool] = None, **kwargs):
        super().__init__(*args, **kwargs)
        for stage in self.stages:
            for block in stage.blocks:
                block.attn.w_msa = SDPAWindowMSA.like(block.attn.w_msa, fused=fused_attention)
