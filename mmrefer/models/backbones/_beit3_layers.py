"""Building blocks of the BEiT-3 multiway encoder (private to :mod:`.beit3`).

Module and attribute names reproduce torchscale's so that ``state_dict()`` keys equal the official
ones (``self_attn.q_proj.A.weight``, ``ffn.B.fc1.weight``, ...). Token groups: a sequence
``x [B, T, C]`` is made of consecutive groups of sizes ``sizes = [n_vis, n_txt, n_lat1, ...]``;
group 0 runs through the vision expert ``A``, group 1 through the language expert ``B`` and latent
group ``j`` through ``latent[j]`` (own LayerNorms, light FFN) and ``B``'s attention projections.
"""
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..mixed_precision import autocast_input, low_precision_layer_norm


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth: zero the whole residual branch of a sample with probability ``p``
    and rescale the kept ones by ``1 / (1 - p)``."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0], ) + (1, ) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


def route(x: Tensor, sizes: Sequence[int], fns: Sequence[Callable[[Tensor], Tensor]]) -> Tensor:
    """Apply ``fns[g]`` to the tokens of group ``g`` (split along dim 1) and concatenate.

    Empty groups are skipped; a single non-empty group is processed whole, exactly like
    torchscale's ``split_position`` -1 (all vision) and 0 (all text).
    """
    live = [g for g, n in enumerate(sizes) if n > 0]
    if len(live) == 1:
        return fns[live[0]](x)
    chunks = torch.split(x, list(sizes), dim=1)
    return torch.cat([fns[g](chunks[g]) for g in live], dim=1)


def chain(*fns: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``chain(f, g)(t) = g(f(t))``: two per-group steps in one :func:`route`, so the tokens of
    a group go from one to the other without a concatenation and a split in between (each a
    copy of the whole sequence)."""

    def run(t: Tensor) -> Tensor:
        for fn in fns:
            t = fn(t)
        return t

    return run


def cat_live(parts: Sequence[Optional[Tensor]]) -> Optional[Tensor]:
    """Concatenate the non-``None`` parts along dim 1 (``None`` when there are none; a single
    part is returned as it is)."""
    live = [t for t in parts if t is not None]
    if not live:
        return None
    return live[0] if len(live) == 1 else torch.cat(live, dim=1)


class Multiway(nn.Module):
    """Container of a vision expert ``A`` and a language expert ``B`` (built by ``build`` or
    ``build_b``)."""

    def __init__(self, build: Callable[[], nn.Module],
                 build_b: Optional[Callable[[], nn.Module]] = None):
        super().__init__()
        self.A = build()
        self.B = (build_b or build)()


class ExpertFFN(nn.Module):
    """Sub-LN FFN of one expert: ``fc2(LN(gelu(fc1(x))))``, ``fc1: C -> F``, ``fc2: F -> C``."""

    def __init__(self, dims: int, ffn_dims: int, eps: float, act_drop: float = 0.0,
                 drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dims, ffn_dims)
        self.fc2 = nn.Linear(ffn_dims, dims)
        self.ffn_layernorm = nn.LayerNorm(ffn_dims, eps=eps)
        self.act_drop = nn.Dropout(act_drop)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x = self.fc1(x.reshape(-1, shape[-1]))
        # gelu in float32, as torchscale; torch's bf16 gelu computes in float32 and rounds once,
        # the same values (checked bitwise) without two copies of the F-wide activation
        x = F.gelu(x) if x.dtype == torch.bfloat16 else F.gelu(x.float()).type_as(x)
        # under autocast the F-wide activation stays bf16 through the sub-LN into fc2
        x = low_precision_layer_norm(self.ffn_layernorm, self.act_drop(x))
        return self.drop(self.fc2(x).view(shape))


class LightFFN(nn.Module):
    """Latent-expression FFN branch: ``gelu(LN(fc(x)))`` with ``fc: C -> C``."""

    def __init__(self, dims: int, eps: float):
        super().__init__()
        self.fc = nn.Linear(dims, dims)
        self.norm = nn.LayerNorm(dims, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.norm(self.fc(x)))


class LatentBranch(nn.Module):
    """Per-layer parameters owned by one latent-expression group."""

    def __init__(self, dims: int, eps: float):
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(dims, eps=eps)
        self.final_layer_norm = nn.LayerNorm(dims, eps=eps)
        self.ffn = LightFFN(dims, eps)


class MultiwayAttention(nn.Module):
    """Joint multi-head self-attention with per-expert q/k/v/out projections and sub-LN.

    ``o = out_proj(LN_in(softmax(q k^T / sqrt(d) + mask) v))``; the softmax runs over all
    ``T`` tokens, ``key_padding_mask [B, T]`` (True = pad) sets masked logits to ``-inf``.
    """

    def __init__(self, dims: int, num_heads: int, eps: float, attn_drop: float = 0.0):
        super().__init__()
        if dims % num_heads:
            raise ValueError(f'embed_dims={dims} is not divisible by num_heads={num_heads}')
        self.num_heads = num_heads
        self.scaling = (dims // num_heads)**-0.5
        lin = lambda: nn.Linear(dims, dims)  # noqa: E731
        self.k_proj = Multiway(lin)
        self.v_proj = Multiway(lin)
        self.q_proj = Multiway(lin)
        self.out_proj = Multiway(lin)
        self.inner_attn_ln = Multiway(lambda: nn.LayerNorm(dims, eps=eps))
        self.attn_drop = nn.Dropout(attn_drop)

    def _heads(self, t: Tensor) -> Tensor:  # [B, T, H*D] -> [B, H, T, D]
        b, n, c = t.shape
        return t.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    @staticmethod
    def _experts(fns: Sequence[Callable[[Tensor], Tensor]],
                 parts: Sequence[Optional[Tensor]]) -> Tensor:
        """``fns[e]`` on the tokens of expert ``e`` (``None``: it has none), in token order."""
        return cat_live([f(t) if t is not None else None for f, t in zip(fns, parts)])

    def forward(self, parts: Sequence[Optional[Tensor]],
                key_padding_mask: Optional[Tensor] = None) -> Tensor:
        """``parts = (a, b)``: the (normalised) tokens of expert ``A`` ``[B, n_A, C]`` and of
        expert ``B`` ``[B, n_B, C]``, in sequence order, either ``None`` when empty. Returns
        ``[B, n_A + n_B, C]``. Each expert's tokens arrive whole, so each projection takes
        them without a split of the joint sequence."""
        q, k, v = (self._heads(self._experts((m.A, m.B), parts))
                   for m in (self.q_proj, self.k_proj, self.v_proj))
        b, _, n, _ = q.shape
        keep = None
        if key_padding_mask is not None:  # SDPA's boolean mask: True = attend
            keep = ~key_padding_mask[:, None, None, :].to(torch.bool)
        # fused softmax(q k^T * scaling + mask) v: torchscale's bmm / softmax steps up to rounding
        o = F.scaled_dot_product_attention(
            q, k, v, attn_mask=keep, scale=self.scaling,
            dropout_p=self.attn_drop.p if self.training else 0.0)
        o = o.transpose(1, 2).reshape(b, n, -1)
        n_a = 0 if parts[0] is None else parts[0].shape[1]
        ln, out = self.inner_attn_ln, self.out_proj
        return route(o, [n_a, n - n_a], [chain(ln.A, out.A), chain(ln.B, out.B)])


class EncoderLayer(nn.Module):
    """Pre-LN multiway block (alpha = 1)::

        x = x + drop_path(attn(LN_g(x)))      # LN per group g, attention joint over all tokens
        x = x + drop_path(FFN_g(LN'_g(x)))    # FFN per group
    """

    def __init__(self, dims: int, num_heads: int, ffn_dims: int, eps: float, drop_path: float,
                 num_latent_groups: int = 0, drop: float = 0.0, attn_drop: float = 0.0):
        super().__init__()
        self.self_attn = MultiwayAttention(dims, num_heads, eps, attn_drop)
        self.self_attn_layer_norm = Multiway(lambda: nn.LayerNorm(dims, eps=eps))
        self.ffn = Multiway(lambda: ExpertFFN(dims, ffn_dims, eps, drop=drop))
        self.final_layer_norm = Multiway(lambda: nn.LayerNorm(dims, eps=eps))
        self.drop = nn.Dropout(drop)
        self.drop_path = drop_path
        if num_latent_groups:
            self.latent = nn.ModuleList(
                LatentBranch(dims, eps) for _ in range(num_latent_groups))
        else:
            self.latent = None

    def _group_fns(self, which: str, n_groups: int) -> List[Callable[[Tensor], Tensor]]:
        main = getattr(self, which)
        return [main.A, main.B] + [getattr(self.latent[j], which) for j in range(n_groups - 2)]

    def forward(self, x: Tensor, sizes: Sequence[int],
                key_padding_mask: Optional[Tensor] = None) -> Tensor:
        # each group normalised by its own LN; the attention projections take group 0 through
        # expert A and the text and latent groups together through B
        norms = self._group_fns('self_attn_layer_norm', len(sizes))
        chunks = torch.split(x, list(sizes), dim=1)
        normed = [norms[g](c) if sizes[g] else None for g, c in enumerate(chunks)]
        # each expert's tokens cast once for the three projections (autocast casts for each)
        parts = [None if t is None else autocast_input(t)
                 for t in (normed[0], cat_live(normed[1:]))]
        h = self.drop(self.self_attn(parts, key_padding_mask))
        x = x + drop_path(h, self.drop_path, self.training)
        h = route(x, sizes, [chain(ln, ffn) for ln, ffn in zip(
            self._group_fns('final_layer_norm', len(sizes)), self._group_fns('ffn', len(sizes)))])
        return x + drop_path(h, self.drop_path, self.training)


class VisionEmbedding(nn.Module):
    """Patchify: ``Conv2d(k=s=patch)`` -> [B, P, C]; optional mask-token swap; prepend CLS.

    ``mask_token`` (masked image modelling) and ``cls_token`` are only built when asked for
    (``with_mask_token`` / ``with_cls_token``): a parameter that no forward uses would get no
    gradient (and force DDP's unused-parameter search). Without ``cls_token`` the caller passes
    the token for the CLS slot (``cls``, ``[B, 1, C]``).
    """

    def __init__(self, img_size: Sequence[int], patch_size: int, in_channels: int, dims: int,
                 with_cls_token: bool = True, with_mask_token: bool = False):
        super().__init__()
        self.img_size = tuple(img_size)
        self.grid = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.num_patches = self.grid[0] * self.grid[1]
        self.proj = nn.Conv2d(in_channels, dims, kernel_size=patch_size, stride=patch_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dims)) if with_mask_token else None
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dims)) if with_cls_token else None

    def forward(self, img: Tensor, masked_position: Optional[Tensor] = None,
                cls: Optional[Tensor] = None) -> Tensor:
        """``img [B, 3, H, W]`` -> ``[B, 1 + P, C]`` (CLS slot first: ``cls`` if given, else the
        built ``cls_token``)."""
        if img.dim() != 4 or tuple(img.shape[-2:]) != self.img_size:
            raise ValueError(f'BEiT3: visual_tokens must be [B, C, {self.img_size[0]}, '
                             f'{self.img_size[1]}] (the img_size the position table is built '
                             f'for), got {tuple(img.shape)}')
        x = self.proj(img).flatten(2).transpose(1, 2)
        if masked_position is not None:
            if self.mask_token is None:
                raise ValueError('BEiT3: vision_masked_position needs the MIM mask token; build '
                                 'the backbone with with_mask_token=True')
            w = masked_position.unsqueeze(-1).type_as(x)
            x = x * (1 - w) + self.mask_token.expand_as(x) * w
        if cls is None:
            if self.cls_token is None:
                raise ValueError('BEiT3: built without cls_token (with_cls_token=False): pass the '
                                 'token for the CLS slot')
            cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls.to(x.dtype), x], dim=1)
