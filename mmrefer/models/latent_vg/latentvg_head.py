"""Latent-VG prediction head (ICCV 2025, Sec. 3.3, inferred; GRES variant: supplementary B).

Inputs from the BEiT-3 encoder: patch features ``F`` (``[B, C, h, w]``, 1/16), the output class
tokens ``q = [t_o, z_o^1 .. z_o^N]`` (``[B, Q, C]``, ``Q = N + 1``) and the whole output sequence
``X`` (``[B, T, C]``) with its padding mask.

* pixel decoder (``LatentVGPixelDecoder``): 1/16 -> 1/8 -> 1/4 upsampler with a lateral branch,
  giving the per-pixel embedding ``F^V`` (``[B, E, 4h, 4w]``);
* token decoder (ours: the sources do not describe the decoder, DESIGN.md section 5):
  ``num_decoder_layers`` pre-norm transformer decoder layers, the ``Q`` class tokens attending
  to each other and cross-attending to ``X`` (a shared decoder, so latent expressions add no
  decoder parameters);
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
  ``loss_contrastive`` between ``t_o`` and ``z_o^i`` (when ``Q > 1``) and, for GRES, ``0.5 * BCE``
  of the empty-token no-target logit;
* prediction: :class:`~mmrefer.models.post_processing.RefPostProcessor` (shared with InstAlign)
  turns ``p`` and the no-target probability into ``pred_prob``, ``pred_mask`` (``p >
  test_cfg.mask_thr``, cleared when the no-target probability is above ``test_cfg.nt_thr``),
  ``pred_box`` (all zeros for an empty mask), ``pred_score``; ``pred_extras`` holds the
  per-expression maps ``expr_maps [Q, h, w]`` and the ``subject_index``.
"""
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmrefer.registry import MODELS
from ..base_ref_head import BaseRefHead
from ..mixed_precision import fp32_island
from ..post_processing import RefPostProcessor
from ..utils import (batch_shape, img_regions, img_shapes, stack_merged_gt,
                     stack_no_target_gt)


class LatentVGPixelDecoder(nn.Module):
    """1/16 patch features -> per-pixel embedding at 1/4.

    ``x16 = GN(Conv1x1(F))``; ``x8 = Conv3x3(GELU(GN(ConvT(x16) + ConvT_lat(F))))``;
    ``x4 = Conv1x1(GELU(GN(ConvT(x8))))`` -> ``E`` channels; ``extra_upsamples`` further
    ``ConvT(GELU(GN(x)))`` x2 stages on ``E`` channels (output at ``1/(4 * 2^extra)`` of the patch
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
class LatentVGHead(BaseRefHead):
    """Mask head of Latent-VG with one MLP per class token (the four :class:`BaseRefHead`
    hooks: ``forward``, ``loss_by_feat``, ``predict_maps``, ``fill_predictions``).

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
        no_target_predictor (dict, optional): ``EmptyTokenPredictor`` config (GRES variant).
        loss_mask, loss_dice (dict): mmdet loss configs applied to the averaged map.
        loss_contrastive (dict, optional): text-vs-latent loss (``PositiveMarginContrastiveLoss``
            or a variant); ignored when ``Q == 1``.
        loss_no_target (dict): no-target BCE (used with ``no_target_predictor``).
        expression_loss_weight (float): 0 (default): the mask losses supervise the averaged map
            only (the paper notes: "on the averaged map"). ``w > 0`` adds the same losses on
            every expression's own map, weighted ``w`` and averaged over the ``Q`` maps: the
            supplementary's "all expressions are optimized by the identical loss function"
            read literally (D.4; ``latentvg_ablation_full_expr-loss.py``).
        test_cfg (dict): ``mask_thr`` (0.5), ``nt_thr`` (0.5), ``return_expr_maps`` (True: the
            per-expression maps go to ``pred_extras``).
    """
    # checkpoints written before the no-target modules got one name
    OLD_KEYS = (('empty_token.', 'no_target_predictor.'), )
    TEST_CFG = dict(mask_thr=0.5, nt_thr=0.5, return_expr_maps=True)

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
                 no_target_predictor: Optional[dict] = None,
                 loss_mask: dict = dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True,
                                        loss_weight=2.0),
                 loss_dice: dict = dict(type='mmdet.DiceLoss', use_sigmoid=False, activate=False,
                                        naive_dice=True, loss_weight=0.5),
                 loss_contrastive: Optional[dict] = dict(type='PositiveMarginContrastiveLoss',
                                                         gamma=0.2, temperature=0.07,
                                                         loss_weight=1.0),
                 loss_no_target: dict = dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True,
                                             loss_weight=0.5),
                 expression_loss_weight: float = 0.0,
                 test_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if num_class_tokens < 1:
            raise ValueError(f'LatentVGHead: num_class_tokens must be >= 1, got {num_class_tokens}')
        if not expression_loss_weight >= 0:
            raise ValueError('LatentVGHead: expression_loss_weight must be >= 0, got '
                             f'{expression_loss_weight}')
        self.expression_loss_weight = float(expression_loss_weight)
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
        self.no_target_predictor = (MODELS.build(no_target_predictor)
                                    if no_target_predictor is not None else None)
        self.loss_mask = MODELS.build(loss_mask)
        self.loss_dice = MODELS.build(loss_dice)
        self.loss_contrastive = (MODELS.build(loss_contrastive)
                                 if loss_contrastive is not None and num_class_tokens > 1 else None)
        self.loss_no_target = (MODELS.build(loss_no_target)
                               if no_target_predictor is not None else None)
        self.init_test_cfg(test_cfg)

    # ------------------------------------------------------------------ forward
    def forward(self, x: Dict[str, Tensor], batch_data_samples: Optional[List] = None
                ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """Args:
            x: the detector's features: ``patch_feats [B, C, h, w]``, ``class_tokens [B, Q, C]``
                (original-text CLS then each latent CLS), ``memory [B, T, C]`` (the encoder
                output) and ``memory_mask [B, T]`` (True = pad).
            batch_data_samples: not read (the hooks' common signature).

        Returns:
            tuple: ``mask_logits [B, Q, 4h, 4w]``, ``class_embeds [B, Q, C]`` and the no-target
            logits ``[B]`` (None without ``no_target_predictor``).
        """
        class_tokens, memory = x['class_tokens'], x['memory']
        memory_mask = x.get('memory_mask')
        if class_tokens.size(1) != self.num_class_tokens:
            raise ValueError(f'LatentVGHead: got {class_tokens.size(1)} class tokens, configured '
                             f'num_class_tokens={self.num_class_tokens} (= number of latent '
                             'expressions + 1)')
        pix = self.pixel_decoder(x['patch_feats'])
        q = class_tokens
        if self.token_decoder is not None:
            q = self.token_decoder(q, memory, memory_key_padding_mask=memory_mask)
        kernels = torch.stack([mlp(q[:, j]) for j, mlp in enumerate(self.token_mlps)], dim=1)
        mask_logits = torch.einsum('bqe,behw->bqhw', kernels, pix)
        nt = (self.no_target_predictor(memory, memory_mask)
              if self.no_target_predictor is not None else None)
        return mask_logits, q, nt

    @staticmethod
    @fp32_island
    def maps_at(mask_logits: Tensor, size) -> Tensor:
        """``sigmoid(up_size(m_j))``: per-token probability maps ``[B, Q, H, W]`` at ``size``
        (bilinear on the logits, in fp32); their mean over ``Q`` is the final map ``p``."""
        logits = mask_logits.float()
        if tuple(logits.shape[-2:]) != tuple(size):
            logits = F.interpolate(logits, size=tuple(size), mode='bilinear', align_corners=False)
        return logits.sigmoid()

    # ------------------------------------------------------------------ loss
    def loss_by_feat(self, mask_logits: Tensor, class_embeds: Tensor,
                     no_target_logits: Optional[Tensor],
                     batch_data_samples: List) -> Dict[str, Tensor]:
        pad_shape = batch_shape(batch_data_samples)
        region = img_regions(img_shapes(batch_data_samples, pad_shape), pad_shape,
                             mask_logits.device).flatten(1).float()
        target = (stack_merged_gt(batch_data_samples, pad_shape, mask_logits.device) > 0)
        target = target.flatten(1).float() * region
        losses = self._mask_losses(mask_logits, target, region, pad_shape)
        if self.loss_contrastive is not None:
            losses['loss_contrastive'] = self.loss_contrastive(class_embeds[:, 0],
                                                               class_embeds[:, 1:])
        if self.loss_no_target is not None:
            nt_gt = stack_no_target_gt(batch_data_samples, mask_logits.device)
            losses['loss_no_target'] = self.loss_no_target(no_target_logits[:, None].float(),
                                                           nt_gt[:, None])
        return losses

    @fp32_island
    def _mask_losses(self, mask_logits: Tensor, target: Tensor, region: Tensor,
                     pad_shape) -> Dict[str, Tensor]:
        """``2 * BCE + 0.5 * Dice`` of ``p`` (in fp32) over each sample's region; with
        ``expression_loss_weight`` w > 0 also ``w * mean_j (2 * BCE + 0.5 * Dice)`` of every
        map ``sigmoid(m_j)`` (``loss_mask_expr``, ``loss_dice_expr``)."""
        maps = self.maps_at(mask_logits, pad_shape)                    # [B, Q, H, W]
        p = maps.mean(dim=1).flatten(1).clamp(1e-6, 1 - 1e-6)
        losses = dict(
            loss_mask=self.loss_mask(torch.log(p) - torch.log1p(-p), target, weight=region,
                                     avg_factor=region.sum()),
            loss_dice=self.loss_dice(p * region, target))
        if self.expression_loss_weight > 0:
            B, Q = maps.shape[:2]
            m = maps.flatten(2).clamp(1e-6, 1 - 1e-6).transpose(0, 1).reshape(Q * B, -1)
            t, r = target.repeat(Q, 1), region.repeat(Q, 1)       # expression-major, as m
            w = self.expression_loss_weight
            losses['loss_mask_expr'] = w * self.loss_mask(
                torch.log(m) - torch.log1p(-m), t, weight=r, avg_factor=r.sum())
            losses['loss_dice_expr'] = w * self.loss_dice(m * r, t)
        return losses

    # ------------------------------------------------------------------ predict
    def predict_inputs(self, x: Dict[str, Tensor]) -> Dict:
        return dict(subject_index=x.get('subject_index'))

    def predict_maps(self, mask_logits: Tensor, class_embeds: Tensor,
                     no_target_logits: Optional[Tensor], pad_shape: Tuple[int, int],
                     subject_index: Optional[Tensor] = None) -> Dict[str, Optional[Tensor]]:
        """The tensors the post-processor reads (also the outputs of the ONNX graph,
        ``mmrefer.models.deployment``): ``prob [B, H, W]`` (mean of the maps at ``pad_shape``),
        ``nt_prob [B]`` (None without ``no_target_predictor``), ``expr_maps [B, Q, H, W]`` and
        ``subject_index [B]`` (-1 without subject selection)."""
        maps = self.maps_at(mask_logits, pad_shape)
        if subject_index is None:
            subject_index = torch.full((maps.shape[0], ), -1, dtype=torch.long)
        nt_prob = no_target_logits.float().sigmoid() if no_target_logits is not None else None
        return dict(prob=maps.mean(dim=1), nt_prob=nt_prob, expr_maps=maps,
                    subject_index=subject_index)

    @staticmethod
    def fill_predictions(post_processor: RefPostProcessor, test_cfg: dict,
                         batch_data_samples: List, maps: Dict[str, Optional[Tensor]],
                         words=None) -> List:
        """:meth:`predict_maps`' tensors -> the samples' prediction fields (``post_processor``
        with the ``expr_maps`` / ``subject_index`` extras). Static: the onnxruntime predictor
        calls it on the graph's outputs with the exported ``test_cfg``."""
        return post_processor(
            batch_data_samples, maps['prob'], maps.get('nt_prob'),
            map_extras=(dict(expr_maps=maps['expr_maps'])
                        if test_cfg.get('return_expr_maps', True) else None),
            extras=[dict(subject_index=i) for i in maps['subject_index']])
