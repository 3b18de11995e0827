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

* one geometry for loss and prediction: the logits are resized (bilinear) to the padded batch
  shape ``[H, W]`` before the sigmoid and the mean, and each sample is read in its own
  ``img_shape`` region ``[:h, :w]`` (the rest is the data preprocessor's padding)::

      p = (1/Q) sum_j sigmoid(up_{H x W}(m_j))     ([B, H, W])

* losses on ``p`` against the GT at the input size, over each sample's ``img_shape`` region only:
  ``2 * BCE + 0.5 * Dice`` (mmdet ``CrossEntropyLoss(use_sigmoid)`` on ``logit(p)`` with the
  region as element weight, ``DiceLoss(activate=False)`` on the region), the contrastive loss
  between ``t_o`` and ``z_o^i`` (when ``Q > 1``) and, for GRES, ``0.5 * BCE`` of the empty-token
  no-target logit;
* prediction (at ``img_shape``): ``pred_prob = p``, ``pred_mask = p > mask_threshold`` (all False
  if the no-target probability is above ``no_target_threshold``), ``pred_box`` = mmdet
  ``mask2bbox`` of the mask (all zeros for an empty mask).
"""
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.structures.mask import mask2bbox
from mmengine.model import BaseModule

from mmrefer.registry import MODELS


def batch_shape(batch_data_samples: List) -> tuple:
    """``(H, W)`` of the padded batch the logits were computed on: ``batch_input_shape``
    (set by the data preprocessor), else the largest ``img_shape``."""
    meta = batch_data_samples[0].metainfo
    if meta.get('batch_input_shape') is not None:
        return tuple(meta['batch_input_shape'][:2])
    shapes = [ds.metainfo.get('img_shape') for ds in batch_data_samples]
    if any(s is None for s in shapes):
        raise KeyError('data samples lack batch_input_shape and img_shape (set by the data '
                       'preprocessor and RefResize)')
    return max(s[0] for s in shapes), max(s[1] for s in shapes)


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
    def maps_at(mask_logits: torch.Tensor, size) -> torch.Tensor:
        """``sigmoid(up_size(m_j))``: per-token probability maps ``[B, Q, H, W]`` at ``size``
        (bilinear on the logits, in fp32); their mean over ``Q`` is the final map ``p``."""
        logits = mask_logits.float()
        if tuple(logits.shape[-2:]) != tuple(size):
            logits = F.interpolate(logits, size=tuple(size), mode='bilinear', align_corners=False)
        return logits.sigmoid()

    # ------------------------------------------------------------------ loss
    def loss(self, outs: Dict, batch_data_samples: List) -> Dict[str, torch.Tensor]:
        pad_shape = batch_shape(batch_data_samples)
        B = len(batch_data_samples)
        gt = outs['mask_logits'].new_zeros((B, ) + pad_shape, dtype=torch.float32)
        region = torch.zeros_like(gt)
        for i, ds in enumerate(batch_data_samples):
            if 'gt_merged_mask' not in ds:
                raise KeyError(f'LatentVGHead.loss: data sample {i} has no gt_merged_mask '
                               '(see docs/contracts.md; PackRefInputs must produce it)')
            g = ds.gt_merged_mask.data
            g = g.reshape(g.shape[-2:])
            h, w = ds.metainfo.get('img_shape', g.shape)[:2]
            if tuple(g.shape) != (h, w) or h > pad_shape[0] or w > pad_shape[1]:
                raise ValueError(f'LatentVGHead.loss: data sample {i} '
                                 f'({ds.metainfo.get("img_path")}): gt_merged_mask '
                                 f'{tuple(g.shape)} must have the img_shape {(h, w)} inside '
                                 f'the batch shape {pad_shape}')
            gt[i, :h, :w] = g.to(gt)
            region[i, :h, :w] = 1
        prob = self.maps_at(outs['mask_logits'], pad_shape).mean(dim=1)
        p = prob.clamp(1e-6, 1 - 1e-6).flatten(1)
        target, region = (gt > 0).float().flatten(1), region.flatten(1)
        losses = dict(
            loss_mask=self.loss_mask(torch.log(p) - torch.log1p(-p), target, weight=region,
                                     avg_factor=region.sum()),
            loss_dice=self.loss_dice(p * region, target * region))
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
        pad_shape = batch_shape(batch_data_samples)
        maps = self.maps_at(outs['mask_logits'], pad_shape)
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
            ds.pred_prob = p
            ds.pred_mask_thr = float(self.mask_threshold)
            ds.pred_mask = mask
            ds.pred_no_target = no_target
            ds.pred_box = mask2bbox(mask[None])[0]
            ds.pred_score = score
            extras = dict(subject_index=int(subject_index[i]) if subject_index is not None
                          else -1)
            if self.return_expr_maps:
                extras['expr_maps'] = maps[i, :, :h, :w]
            ds.pred_extras = extras
        return batch_data_samples
