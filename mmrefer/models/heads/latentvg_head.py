"""Latent-VG prediction head (ICCV 2025, Sec. 3.4; GRES variant: supplementary B).

Inputs from the BEiT-3 encoder: patch features ``F`` (``[B, C, h, w]``, 1/16), the output class
tokens ``q = [t_o, z_o^1 .. z_o^N]`` (``[B, Q, C]``, ``Q = N + 1``) and the whole output sequence
``X`` (``[B, T, C]``) with its padding mask.

* pixel decoder (``LatentVGPixelDecoder``): 1/16 -> 1/8 -> 1/4 upsampler with a lateral branch,
  giving the per-pixel embedding ``F^V`` (``[B, E, 4h, 4w]``);
* token decoder: ``num_decoder_layers`` pre-norm transformer decoder layers, the ``Q`` class
  tokens attending to each other and cross-attending to ``X`` (a shared decoder, so latent
  expressions add no decoder parameters);
* one MLP per class token ``g_j`` (``C -> E``) and the averaged map::

      m_j = F^V . g_j(q_j)                          ([B, Q, 4h, 4w] logits)
      p   = (1/Q) sum_j sigmoid(m_j)                (the final mask probability)

* losses on ``p`` upsampled to the input size: ``2 * BCE + 0.5 * Dice`` (mmdet
  ``CrossEntropyLoss(use_sigmoid)`` on ``logit(p)`` and ``DiceLoss(activate=False)``), the
  contrastive loss between ``t_o`` and ``z_o^i`` (when ``Q > 1``) and, for GRES, ``0.5 * BCE`` of
  the empty-token no-target logit;
* prediction: ``mask = p > mask_threshold`` (all False if the no-target probability is above
  ``no_target_threshold``), ``box`` = tight box of the mask.
"""
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from mmrefer.registry import MODELS


def mask_to_box(mask: torch.Tensor, prob: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Tight xyxy box (pixel edges, i.e. ``x2 = last column + 1``) of a bool ``[H, W]`` mask.

    An empty mask falls back to the pixels with ``prob >= max(prob) / 2`` when ``prob`` is given,
    otherwise to an all-zero box.
    """
    if not mask.any():
        if prob is None or prob.numel() == 0:
            return mask.new_zeros(4, dtype=torch.float32)
        mask = prob >= prob.max() * 0.5
    ys = torch.nonzero(mask.any(dim=1)).flatten()
    xs = torch.nonzero(mask.any(dim=0)).flatten()
    return torch.stack([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1]).float()


class LatentVGPixelDecoder(nn.Module):
    """1/16 patch features -> per-pixel embedding at 1/4.

    ``x16 = GN(Conv1x1(F))``; ``x8 = Conv3x3(GELU(GN(ConvT(x16) + ConvT_lat(F))))``;
    ``x4 = Conv1x1(GELU(GN(ConvT(x8))))`` -> ``E`` channels; ``extra_upsamples`` further
    ``GELU(GN(ConvT))`` x2 stages on ``E`` channels (output at ``1/(4 * 2^extra)`` of the patch
    grid's stride, e.g. for small inputs with coarse patch grids).
    """

    def __init__(self, in_channels: int = 768, feat_channels: int = 256, out_channels: int = 256,
                 num_groups: int = 32, extra_upsamples: int = 0):
        super().__init__()
        g = min(num_groups, feat_channels)
        if feat_channels % g:
            raise ValueError(f'LatentVGPixelDecoder: feat_channels {feat_channels} not divisible '
                             f'by num_groups {g}')
        self.lateral16 = nn.Sequential(nn.Conv2d(in_channels, feat_channels, 1),
                                       nn.GroupNorm(g, feat_channels))
        self.up8 = nn.ConvTranspose2d(feat_channels, feat_channels, 2, 2)
        self.lateral8 = nn.ConvTranspose2d(in_channels, feat_channels, 2, 2)
        self.fuse8 = nn.Sequential(nn.GroupNorm(g, feat_channels), nn.GELU(),
                                   nn.Conv2d(feat_channels, feat_channels, 3, padding=1))
        self.up4 = nn.Sequential(nn.ConvTranspose2d(feat_channels, feat_channels, 2, 2),
                                 nn.GroupNorm(g, feat_channels), nn.GELU(),
                                 nn.Conv2d(feat_channels, out_channels, 1))
        go = min(num_groups, out_channels)
        if out_channels % go:
            raise ValueError(f'LatentVGPixelDecoder: out_channels {out_channels} not divisible '
                             f'by num_groups {go}')
        self.extra = nn.Sequential(*[
            nn.Sequential(nn.GroupNorm(go, out_channels), nn.GELU(),
                          nn.ConvTranspose2d(out_channels, out_channels, 2, 2))
            for _ in range(extra_upsamples)])

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x16 = self.lateral16(feats)
        x8 = self.fuse8(self.up8(x16) + self.lateral8(feats))
        return self.extra(self.up4(x8))


@MODELS.register_module()
class LatentVGHead(BaseModule):
    """Mask head of Latent-VG with one MLP per class token.

    Args:
        in_channels (int): encoder width ``C``.
        num_class_tokens (int): ``Q = N + 1`` (1 for the no-latent baseline).
        feat_channels (int): pixel-decoder width.
        embed_dims (int): per-pixel embedding width ``E``.
        extra_upsamples (int): extra x2 stages of the pixel decoder (0: output at 1/4 of the
            patch stride).
        num_decoder_layers (int): token-decoder layers (0 disables it).
        decoder_heads (int), decoder_ffn_dims (int), decoder_dropout (float): token decoder.
        mlp_hidden_dims (int): hidden width of every per-token MLP (``C -> hidden -> E``).
        empty_token (dict, optional): ``EmptyTokenPredictor`` config (GRES variant).
        loss_mask, loss_dice (dict): mmdet loss configs applied to the averaged map.
        loss_contrastive (dict, optional): text-vs-latent loss (``PositiveMarginContrastiveLoss``
            or a variant); ignored when ``Q == 1``.
        loss_no_target (dict): no-target BCE (used with ``empty_token``).
        mask_threshold (float), no_target_threshold (float): test thresholds.
        return_expr_maps (bool): put the per-expression sigmoid maps in ``pred_extras``.
    """

    def __init__(self,
                 in_channels: int = 768,
                 num_class_tokens: int = 3,
                 feat_channels: int = 256,
                 embed_dims: int = 256,
                 extra_upsamples: int = 0,
                 num_decoder_layers: int = 3,
                 decoder_heads: int = 8,
                 decoder_ffn_dims: int = 2048,
                 decoder_dropout: float = 0.0,
                 mlp_hidden_dims: int = 768,
                 empty_token: Optional[dict] = None,
                 loss_mask: dict = dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True,
                                        loss_weight=2.0),
                 loss_dice: dict = dict(type='mmdet.DiceLoss', use_sigmoid=False, activate=False,
                                        loss_weight=0.5),
                 loss_contrastive: Optional[dict] = dict(type='PositiveMarginContrastiveLoss',
                                                         gamma=0.2, temperature=0.07,
                                                         loss_weight=1.0),
                 loss_no_target: dict = dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True,
                                             loss_weight=0.5),
                 mask_threshold: float = 0.5,
                 no_target_threshold: float = 0.5,
                 return_expr_maps: bool = True,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if num_class_tokens < 1:
            raise ValueError(f'LatentVGHead: num_class_tokens must be >= 1, got {num_class_tokens}')
        self.num_class_tokens = num_class_tokens
        self.pixel_decoder = LatentVGPixelDecoder(in_channels, feat_channels, embed_dims,
                                                  extra_upsamples=extra_upsamples)
        if num_decoder_layers > 0:
            layer = nn.TransformerDecoderLayer(in_channels, decoder_heads, decoder_ffn_dims,
                                               decoder_dropout, activation='gelu',
                                               batch_first=True, norm_first=True)
            self.token_decoder = nn.TransformerDecoder(layer, num_decoder_layers,
                                                       norm=nn.LayerNorm(in_channels))
        else:
            self.token_decoder = None
        self.token_mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(in_channels, mlp_hidden_dims), nn.GELU(),
                          nn.Linear(mlp_hidden_dims, embed_dims))
            for _ in range(num_class_tokens))
        self.empty_token = MODELS.build(empty_token) if empty_token is not None else None
        self.loss_mask = MODELS.build(loss_mask)
        self.loss_dice = MODELS.build(loss_dice)
        self.loss_contrastive = (MODELS.build(loss_contrastive)
                                 if loss_contrastive is not None and num_class_tokens > 1 else None)
        self.loss_no_target = MODELS.build(loss_no_target) if empty_token is not None else None
        self.mask_threshold = mask_threshold
        self.no_target_threshold = no_target_threshold
        self.return_expr_maps = return_expr_maps

    # ------------------------------------------------------------------ forward
    def forward(self, patch_feats: torch.Tensor, class_tokens: torch.Tensor,
                memory: torch.Tensor, memory_mask: Optional[torch.Tensor] = None) -> Dict:
        """Args:
            patch_feats: ``[B, C, h, w]`` encoder patch features.
            class_tokens: ``[B, Q, C]`` original-text CLS then each latent CLS.
            memory: ``[B, T, C]`` encoder output; ``memory_mask`` ``[B, T]`` True = pad.

        Returns:
            dict(mask_logits ``[B, Q, 4h, 4w]``, class_embeds ``[B, Q, C]``,
            no_target_logits ``[B]`` or None).
        """
        if class_tokens.size(1) != self.num_class_tokens:
            raise ValueError(f'LatentVGHead: got {class_tokens.size(1)} class tokens, configured '
                             f'num_class_tokens={self.num_class_tokens} (= number of latent '
                             'expressions + 1)')
        pix = self.pixel_decoder(patch_feats)
        q = class_tokens
        if self.token_decoder is not None:
            q = self.token_decoder(q, memory, memory_key_padding_mask=memory_mask)
        kernels = torch.stack([mlp(q[:, j]) for j, mlp in enumerate(self.token_mlps)], dim=1)
        mask_logits = torch.einsum('bqe,behw->bqhw', kernels, pix)
        nt = self.empty_token(memory, memory_mask) if self.empty_token is not None else None
        return dict(mask_logits=mask_logits, class_embeds=q, no_target_logits=nt)

    @staticmethod
    def mean_prob(mask_logits: torch.Tensor, size=None) -> torch.Tensor:
        """``p = mean_j sigmoid(m_j)``, optionally bilinearly resized to ``size`` -> ``[B,H,W]``."""
        prob = mask_logits.float().sigmoid().mean(dim=1)
        if size is not None and tuple(prob.shape[-2:]) != tuple(size):
            prob = F.interpolate(prob[:, None], size=size, mode='bilinear',
                                 align_corners=False)[:, 0]
        return prob

    # ------------------------------------------------------------------ loss
    def loss(self, outs: Dict, batch_data_samples: List) -> Dict[str, torch.Tensor]:
        gts = []
        for i, ds in enumerate(batch_data_samples):
            if 'gt_merged_mask' not in ds:
                raise KeyError(f'LatentVGHead.loss: data sample {i} has no gt_merged_mask '
                               '(see docs/contracts.md; PackRefInputs must produce it)')
            gts.append(ds.gt_merged_mask.data.reshape(ds.gt_merged_mask.data.shape[-2:]))
        h = max(g.shape[0] for g in gts)
        w = max(g.shape[1] for g in gts)
        gt = outs['mask_logits'].new_zeros(len(gts), h, w)
        for i, g in enumerate(gts):
            gt[i, :g.shape[0], :g.shape[1]] = g.to(gt)
        prob = self.mean_prob(outs['mask_logits'], (h, w))
        p = prob.clamp(1e-6, 1 - 1e-6).flatten(1)
        target = (gt > 0).float().flatten(1)
        losses = dict(loss_mask=self.loss_mask(torch.log(p) - torch.log1p(-p), target),
                      loss_dice=self.loss_dice(p, target))
        if self.loss_contrastive is not None:
            q = outs['class_embeds']
            losses['loss_contrast'] = self.loss_contrastive(q[:, 0], q[:, 1:])
        if self.loss_no_target is not None:
            nt_gt = torch.tensor([float(bool(ds.metainfo.get('no_target', False)))
                                  for ds in batch_data_samples], device=p.device)
            losses['loss_no_target'] = self.loss_no_target(
                outs['no_target_logits'][:, None].float(), nt_gt[:, None])
        return losses

    # ------------------------------------------------------------------ predict
    @torch.no_grad()
    def predict(self, outs: Dict, batch_data_samples: List,
                subject_index: Optional[torch.Tensor] = None) -> List:
        logits = outs['mask_logits']
        pad_shape = batch_data_samples[0].metainfo.get('batch_input_shape')
        if pad_shape is None:
            raise KeyError('LatentVGHead.predict: data samples lack batch_input_shape '
                           '(set by the data preprocessor)')
        maps = F.interpolate(logits.float(), size=pad_shape, mode='bilinear',
                             align_corners=False).sigmoid()
        prob = maps.mean(dim=1)
        nt_prob = (outs['no_target_logits'].float().sigmoid()
                   if outs.get('no_target_logits') is not None else None)
        for i, ds in enumerate(batch_data_samples):
            h, w = ds.metainfo.get('img_shape', pad_shape)[:2]
            p = prob[i, :h, :w]
            mask = p > self.mask_threshold
            no_target = bool(nt_prob is not None and nt_prob[i] > self.no_target_threshold)
            if no_target:
                ds.pred_mask_ungated = mask  # kept for ReLA's cIoU union (GRESMetric)
                mask = torch.zeros_like(mask)
                score = float(nt_prob[i])
            else:
                score = float(p[mask].mean()) if mask.any() else float(p.max())
                if nt_prob is not None:
                    score *= float(1 - nt_prob[i])
            ds.pred_mask = mask
            ds.pred_no_target = no_target
            ds.pred_box = mask_to_box(mask, None if no_target else p)
            ds.pred_score = score
            extras = dict(subject_index=int(subject_index[i]) if subject_index is not None
                          else -1)
            if self.return_expr_maps:
                extras['expr_maps'] = maps[i, :, :h, :w].cpu()
            ds.pred_extras = extras
        return batch_data_samples
