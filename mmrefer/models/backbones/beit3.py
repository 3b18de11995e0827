"""BEiT-3 multiway encoder (torchscale ``BEiT3``), pure torch, generalised to latent groups.

Sequence layout (Latent-VG spec 1.1-1.3)::

    x = [ cls, v_1..v_P | t_1..t_L | latent group 1 | ... | latent group N ]   [B, T, C]
    group_sizes = [1 + P, L, n_1, ..., n_N]

Embedding: ``x_vis = [cls; Conv(img)] + E_A[2 : 2+1+P]``, ``x_txt = W_tok[ids] + E_B[2 : 2+L]``
(fairseq positions start at 2; ``E_A`` has ``P + 1 + 2`` rows, ``E_B`` has ``max_text_len``),
padded text tokens are zeroed. Each of the ``num_layers`` pre-LN blocks (see
``_beit3_layers.EncoderLayer``) runs per-group LayerNorms/FFNs (vision: expert A, text: expert B,
latent j: own LNs + light FFN) around one joint self-attention whose q/k/v/out projections are A
for the vision group and B for every other token. A final per-group LayerNorm closes the encoder.
With ``group_sizes = [1+P, L]`` this is exactly the official ``BEiT3.forward``.
"""
import logging
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.utils.checkpoint as cp
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmrefer.registry import MODELS
from ._beit3_checkpoint import check_shapes, convert_official
from ._beit3_layers import EncoderLayer, Multiway, VisionEmbedding, route

ARCH_SETTINGS = {
    'base': dict(embed_dims=768, num_layers=12, num_heads=12, ffn_ratio=4),
    'large': dict(embed_dims=1024, num_layers=24, num_heads=16, ffn_ratio=4),
}


class _Encoder(nn.Module):
    """Holds ``embed_positions``, ``layers`` and ``layer_norm`` under torchscale's names."""

    def __init__(self, num_vis_pos: int, max_text_len: int, dims: int, eps: float,
                 layers: List[EncoderLayer], num_latent_groups: int):
        super().__init__()
        self.embed_positions = Multiway(lambda: nn.Embedding(num_vis_pos, dims),
                                        lambda: nn.Embedding(max_text_len, dims))
        self.layers = nn.ModuleList(layers)
        self.layer_norm = Multiway(lambda: nn.LayerNorm(dims, eps=eps))
        self.latent_layer_norm = nn.ModuleList(
            nn.LayerNorm(dims, eps=eps) for _ in range(num_latent_groups)) or None


@MODELS.register_module()
class BEiT3(BaseModule):
    """BEiT-3 encoder with official state-dict keys (without the ``beit3.`` prefix).

    Args:
        arch (str | dict): ``'base'``, ``'large'`` or a dict with ``embed_dims``,
            ``num_layers``, ``num_heads``, ``ffn_ratio``.
        img_size (int | tuple): input ``(H, W)``; the vision position table has
            ``(H/p)(W/p) + 3`` rows.
        patch_size (int): patch size ``p``.
        in_channels (int): image channels.
        vocab_size (int): rows of ``text_embed`` (64010 for the official models).
        max_text_len (int): rows of the text position table (1024 official).
        drop_rate (float): dropout on embeddings and residual branches (official 0).
        attn_drop_rate (float): dropout on attention probabilities (official 0).
        drop_path_rate (float): stochastic depth, linear from 0 at layer 0 to this value.
        layer_norm_eps (float): LayerNorm epsilon (1e-5).
        num_latent_groups (int): extra token groups with own LayerNorms and a light FFN branch
            ``gelu(LN(Linear(C, C)))`` (Latent-VG's latent expressions).
        latent_init_from_text (bool): after loading a pretrained checkpoint, copy the language
            expert's LayerNorms into the latent groups' LayerNorms.
        with_cp (bool): gradient checkpointing of each layer in training.
        with_cls_token (bool): build the visual CLS token. Latent-VG puts its subject token in
            that slot (``embed(..., visual_cls=s)``), so it builds the backbone without it.
        with_mask_token (bool): build the masked-image-modelling token (only needed for
            ``forward(vision_masked_position=...)``, i.e. BEiT-3 pre-training).
        pos_init_std (float, optional): std of the random init of both position tables. None
            keeps the official ``N(0, 1)``, which only matters when training from scratch: then
            the positions swamp the patch embeddings (~0.3 in magnitude with torch's default
            Conv2d init) and a small tiny model learns shapes slowly; ViT-style 0.02 helps.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=PATH[, prefix=...])``
            loads an official or converted checkpoint (see :meth:`load_checkpoint`).
    """

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: Union[int, Sequence[int]] = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 vocab_size: int = 64010,
                 max_text_len: int = 1024,
                 drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0,
                 layer_norm_eps: float = 1e-5,
                 num_latent_groups: int = 0,
                 latent_init_from_text: bool = True,
                 with_cp: bool = False,
                 with_cls_token: bool = True,
                 with_mask_token: bool = False,
                 pos_init_std: Optional[float] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if pos_init_std is not None and not pos_init_std > 0:
            raise ValueError(f'BEiT3: pos_init_std must be > 0 or None, got {pos_init_std}')
        self.pos_init_std = pos_init_std
        if isinstance(arch, str):
            if arch not in ARCH_SETTINGS:
                raise KeyError(f'BEiT3: unknown arch {arch!r}, choose from {list(ARCH_SETTINGS)} '
                               'or pass a dict')
            arch = ARCH_SETTINGS[arch]
        missing = {'embed_dims', 'num_layers', 'num_heads', 'ffn_ratio'} - set(arch)
        if missing:
            raise KeyError(f'BEiT3: arch dict lacks {sorted(missing)}')
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if len(img_size) != 2 or img_size[0] % patch_size or img_size[1] % patch_size:
            raise ValueError(f'BEiT3: img_size {img_size} must be (H, W) divisible by '
                             f'patch_size {patch_size}')
        dims, depth = int(arch['embed_dims']), int(arch['num_layers'])
        self.embed_dims, self.num_layers = dims, depth
        self.num_latent_groups = num_latent_groups
        self.latent_init_from_text = latent_init_from_text
        self.with_cp = with_cp

        self.text_embed = nn.Embedding(vocab_size, dims)
        self.vision_embed = VisionEmbedding(img_size, patch_size, in_channels, dims,
                                            with_cls_token, with_mask_token)
        self.patch_grid = self.vision_embed.grid
        dpr = np.linspace(0, drop_path_rate, depth) if depth > 1 else [0.0]
        layers = [
            EncoderLayer(dims, int(arch['num_heads']), int(dims * arch['ffn_ratio']),
                         layer_norm_eps, float(dpr[i]), num_latent_groups,
                         drop_rate, attn_drop_rate) for i in range(depth)
        ]
        self.encoder = _Encoder(self.vision_embed.num_patches + 1 + 2, max_text_len, dims,
                                layer_norm_eps, layers, num_latent_groups)
        self.embed_drop = nn.Dropout(drop_rate)
        self._official_init()

    # ------------------------------------------------------------------ init / loading
    def _official_init(self) -> None:
        """unilm ``BEiT3Wrapper._init_weights``: Linear ~ trunc_normal(0.02, +-0.02), bias 0;
        LayerNorm 1/0; text embedding ~ N(0, C^-1/2); position tables ~ N(0, 1) (or
        ``N(0, pos_init_std)`` truncated at 2 std); CLS and mask tokens 0; patch Conv2d keeps
        torch's default."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=.02, a=-.02, b=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.text_embed.weight, std=self.embed_dims**-0.5)
        for table in (self.encoder.embed_positions.A.weight, self.encoder.embed_positions.B.weight):
            if self.pos_init_std is None:
                nn.init.normal_(table)
            else:
                std = self.pos_init_std
                nn.init.trunc_normal_(table, std=std, a=-2 * std, b=2 * std)

    def init_weights(self) -> None:
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            if self._is_init:
                return
            self.load_checkpoint(cfg['checkpoint'], prefix=cfg.get('prefix'))
            self._is_init = True
        else:
            super().init_weights()

    def load_checkpoint(self, filename: str, prefix: Optional[str] = None,
                        map_location: str = 'cpu') -> Tuple[List[str], List[str]]:
        """Load an official ``beit3_*.pth`` (or a converted file) non-strictly.

        Strips ``prefix`` (auto: ``beit3.``/``backbone.``), resizes the vision position table
        to this model's patch grid, refuses shape mismatches (ValueError naming key and shapes)
        and logs missing/unexpected keys grouped by module. Returns ``(missing, unexpected)``.
        """
        from mmrefer.utils import safe_torch_load
        from mmrefer.utils.checkpoint_report import format_groups, group_keys
        sd, dropped = convert_official(safe_torch_load(filename, map_location=map_location),
                                       self.patch_grid, prefix, filename)
        check_shapes(sd, self.state_dict(), filename)
        skipped = [k for k in self.unbuilt_official_keys if k in sd]
        missing, unexpected = self.load_state_dict(sd, strict=False)
        n_loaded = len(sd) - len(unexpected) - len(skipped)
        if n_loaded <= 0:
            example = f' (e.g. {next(iter(sd))!r})' if sd else ''
            raise ValueError(
                f'BEiT3: no backbone tensor in {filename}: {len(missing)} keys missing, '
                f'{len(sd)} keys the backbone does not have{example}. Is it an official '
                'beit3_*.pth or a tools/model_converters/beit3_to_mmrefer.py output?')
        print_log(f'BEiT3: loaded {n_loaded} tensors from {filename}', logger='current')
        for what, keys, level in (('missing in checkpoint', missing, logging.WARNING),
                                  ('unexpected (ignored)', unexpected, logging.WARNING),
                                  ('skipped: not built in this configuration', skipped,
                                   logging.INFO),
                                  ('outside the backbone prefix (ignored)', dropped, logging.INFO)):
            if keys:
                groups = format_groups(group_keys(keys, others=sd, population=keys))
                print_log(f'BEiT3: {len(keys)} keys {what}: {groups}', logger='current',
                          level=level)
        if self.num_latent_groups and self.latent_init_from_text:
            self.init_latent_from_text()
        return list(missing), list(unexpected)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Official files carry the tokens this configuration does not build (the MIM mask
        # token, the visual CLS whose slot the caller fills): they are skipped, not unexpected,
        # so that ``load_state_dict(official, strict=True)`` works on every configuration.
        for key in self.unbuilt_official_keys:
            state_dict.pop(prefix + key, None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def unbuilt_official_keys(self) -> List[str]:
        """Official encoder keys this configuration does not build (and so skips on loading):
        the MIM ``vision_embed.mask_token`` unless ``with_mask_token``, the visual
        ``vision_embed.cls_token`` when its slot is given by the caller."""
        return [f'vision_embed.{n}' for n in ('mask_token', 'cls_token')
                if getattr(self.vision_embed, n) is None]

    @torch.no_grad()
    def init_latent_from_text(self) -> None:
        """Copy the language expert's (B) LayerNorms into each latent group's LayerNorms."""
        for layer in self.encoder.layers:
            for lat in layer.latent or []:
                lat.self_attn_layer_norm.load_state_dict(layer.self_attn_layer_norm.B.state_dict())
                lat.final_layer_norm.load_state_dict(layer.final_layer_norm.B.state_dict())
        for ln in self.encoder.latent_layer_norm or []:
            ln.load_state_dict(self.encoder.layer_norm.B.state_dict())

    # ------------------------------------------------------------------ layer-wise API
    def embed_text_tokens(self, textual_tokens: Tensor) -> Tensor:
        """Raw word embeddings ``[B, L, C]`` (no positions)."""
        return self.text_embed(textual_tokens)

    def _embed(self, textual_tokens, visual_tokens, vision_masked_position=None,
               visual_cls=None):
        raw, out = [], []
        pos = self.encoder.embed_positions
        if visual_tokens is not None:
            v = self.vision_embed(visual_tokens, vision_masked_position, cls=visual_cls)
            raw.append(v)
            x = v + pos.A.weight[2:2 + v.shape[1]].unsqueeze(0)
            if visual_cls is None:
                out.append(self.embed_drop(x))
            else:  # the caller's token takes the CLS slot as it is (no position, no dropout)
                out.append(torch.cat([v[:, :1], self.embed_drop(x[:, 1:])], dim=1))
        else:
            raw.append(None)
            out.append(None)
        if textual_tokens is not None:
            if textual_tokens.dim() != 2:
                raise ValueError(f'BEiT3: textual_tokens must be [B, L], got '
                                 f'{tuple(textual_tokens.shape)}')
            if textual_tokens.shape[1] + 2 > pos.B.num_embeddings:
                raise ValueError(f'BEiT3: text length {textual_tokens.shape[1]} exceeds the text '
                                 f'position table ({pos.B.num_embeddings} rows, 2 unused)')
            t = self.text_embed(textual_tokens)
            raw.append(t)
            out.append(self.embed_drop(t + pos.B.weight[2:2 + t.shape[1]].unsqueeze(0)))
        else:
            raw.append(None)
            out.append(None)
        return raw, out

    def embed(self, textual_tokens: Optional[Tensor] = None,
              visual_tokens: Optional[Tensor] = None,
              visual_cls: Optional[Tensor] = None
              ) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """``(x_vis [B, 1+P, C] | None, x_txt [B, L, C] | None)``: embeddings + positions
        (+ embedding dropout), what the official encoder feeds its first layer.

        ``visual_cls [B, 1, C]`` (optional) fills the visual CLS slot as it is, without position
        or dropout (Latent-VG's subject token); otherwise the built ``cls_token`` is used."""
        return tuple(self._embed(textual_tokens, visual_tokens, visual_cls=visual_cls)[1])

    def _check_groups(self, x: Tensor, group_sizes: Sequence[int]) -> List[int]:
        sizes = [int(n) for n in group_sizes]
        if len(sizes) == 1:
            sizes.append(0)
        if not 2 <= len(sizes) <= 2 + self.num_latent_groups or min(sizes) < 0:
            raise ValueError(f'BEiT3: group_sizes {list(group_sizes)} must be [n_vis, n_txt, '
                             f'n_1..n_N] with N <= num_latent_groups={self.num_latent_groups}')
        if sum(sizes) != x.shape[1]:
            raise ValueError(f'BEiT3: group_sizes {list(group_sizes)} sum to {sum(sizes)} but '
                             f'x has {x.shape[1]} tokens')
        return sizes

    def forward_layers(self, x: Tensor, group_sizes: Sequence[int],
                       padding_mask: Optional[Tensor] = None,
                       layer_hook: Optional[Callable[[int, Tensor], Optional[Tensor]]] = None
                       ) -> Tensor:
        """Run all layers and the final per-group LayerNorm on ``x [B, T, C]``.

        Args:
            x: concatenated groups (output of :meth:`embed` plus any latent tokens).
            group_sizes: ``[1+P, L, n_1, ..., n_N]``.
            padding_mask: ``[B, T]`` bool, True = pad; padded tokens are zeroed on entry (as the
                official encoder does after embedding) and masked as attention keys.
            layer_hook: ``hook(i, x) -> x | None`` called after layer ``i`` (0-based); a
                returned tensor replaces ``x``.
        """
        sizes = self._check_groups(x, group_sizes)
        if padding_mask is not None:
            if tuple(padding_mask.shape) != tuple(x.shape[:2]):
                raise ValueError(f'BEiT3: padding_mask shape {tuple(padding_mask.shape)} != '
                                 f'[B, T] = {tuple(x.shape[:2])}')
            padding_mask = padding_mask.to(torch.bool)
            x = x * (1 - padding_mask.unsqueeze(-1).type_as(x))
        for i, layer in enumerate(self.encoder.layers):
            if self.with_cp and self.training and x.requires_grad:
                x = cp.checkpoint(layer, x, sizes, padding_mask, use_reentrant=False)
            else:
                x = layer(x, sizes, padding_mask)
            if layer_hook is not None:
                y = layer_hook(i, x)
                x = x if y is None else y
        ln = self.encoder.layer_norm
        return route(x, sizes, [ln.A, ln.B] + list(self.encoder.latent_layer_norm or []))

    # ------------------------------------------------------------------ official forward
    def forward(self, textual_tokens: Optional[Tensor] = None,
                visual_tokens: Optional[Tensor] = None,
                text_padding_position: Optional[Tensor] = None,
                vision_masked_position: Optional[Tensor] = None,
                visual_cls: Optional[Tensor] = None) -> Dict[str, object]:
        """Same inputs/outputs as torchscale ``BEiT3.forward``; ``visual_cls [B, 1, C]`` fills
        the visual CLS slot when the backbone is built without ``cls_token`` (see :meth:`embed`).

        Returns dict: ``encoder_out [B, T, C]`` (vision CLS, patches, then text),
        ``encoder_embedding`` (token embeddings before positions), ``encoder_padding_mask``
        ``[B, T]`` bool, ``multiway_split_position`` (-1 vision only, 0 text only, else 1+P).
        """
        if textual_tokens is None and visual_tokens is None:
            raise ValueError('BEiT3.forward: give textual_tokens and/or visual_tokens')
        raw, (x_vis, x_txt) = self._embed(textual_tokens, visual_tokens, vision_masked_position,
                                          visual_cls)
        raw = [r for r in raw if r is not None]
        n_vis = 0 if x_vis is None else x_vis.shape[1]
        n_txt = 0 if x_txt is None else x_txt.shape[1]
        x = torch.cat([t for t in (x_vis, x_txt) if t is not None], dim=1)
        pad = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        if text_padding_position is not None and x_txt is not None:
            if tuple(text_padding_position.shape) != tuple(textual_tokens.shape):
                raise ValueError(f'BEiT3: text_padding_position shape '
                                 f'{tuple(text_padding_position.shape)} != textual_tokens shape '
                                 f'{tuple(textual_tokens.shape)}')
            pad[:, n_vis:] = text_padding_position.to(torch.bool)
            mask = pad
        else:
            mask = None  # official: an all-False mask, i.e. no masking
        out = self.forward_layers(x, [n_vis, n_txt], padding_mask=mask)
        return dict(
            encoder_out=out,
            encoder_embedding=torch.cat(raw, dim=1),
            encoder_padding_mask=pad,
            multiway_split_position=-1 if x_txt is None else (0 if x_vis is None else n_vis),
        )
