"""InstAlign head (sections 3.2-3.7): pixel decoder, Phrase-Object Transformer, score / mask
heads, Phrase-Aligned Instance Supervision, Adaptive Instance Aggregation, no-target predictor.

Shapes (B batch, N queries, L words, C channels, h x w = 1/4 of the padded input H x W):

    pixel decoder:  V_4 [B, C, h, w] mask features, V_1..V_3 (low -> high res) for the POT
    POT block k:    (Q_{k-1}, T_{k-1}, V_{k % 3}) -> (Q_k, T_k)
    heads:          p = sigmoid(Linear(LN(Q_k)))                      [B, N]
                    s = MLP(LN(Q_k)) . V_4                            [B, N, h, w]   (Eq. 4)
                    R, P, L_phrase = phrase_object_alignment(LN(Q_k), T_k)            (Eq. 1-3)
                    M = sigmoid(sum_i p_i PReLU(s_i))                 [B, h, w]      (Eq. 8)
    no-target:      p_nt = sigmoid(MLP([sum_i p_i Q_K^i, mean_l T_K^l]))  [B]        (Eq. 10-12)

Losses (Eq. 7, 9, 13): ``5 * (BCE + Dice)(M, M_gt)`` + ``1 * L_inst`` + ``0.1 * BCE(p_nt, nt)``
with ``L_inst = 2 * BCE(p, matched) + 5 * (BCE + Dice)(s_matched, s_gt) + 1 * L_phrase(matched)``.
The weights live in the ``loss_*`` configs; the matching is mmdet's ``HungarianAssigner`` with
the costs of ``train_cfg.assigner``. With ``deep_supervision`` the merged and instance losses are
applied to the prediction before the first block and after every block (Mask2Former style).
"""
import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.layers import SinePositionalEncoding
from mmdet.structures.mask import mask2bbox
from mmdet.utils import reduce_mean
from mmengine.config import ConfigDict
from mmengine.model import BaseModule, bias_init_with_prob
from mmengine.structures import InstanceData
from torch import Tensor, nn

from mmrefer.registry import MODELS, TASK_UTILS
from .phrase_object_transformer import PhraseObjectTransformer, phrase_object_alignment


def _mlp(dims: int, out_dims: int, num_layers: int) -> nn.Sequential:
    layers = []
    for _ in range(num_layers - 1):
        layers += [nn.Linear(dims, dims), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.Linear(dims, out_dims))


@MODELS.register_module()
class InstAlignHead(BaseModule):
    """See the module docstring.

    Args:
        in_channels (list[int]): backbone channels per scale (Swin-B: 128, 256, 512, 1024).
        text_channels (int): text encoder width (768 for RoBERTa-base; the detector fills it).
        feat_channels (int): C of the pixel decoder and the POT (256).
        num_queries (int): N (100).
        num_transformer_feat_level (int): pixel-decoder scales fed to the POT (3).
        pixel_decoder (dict): mmdet ``MSDeformAttnPixelDecoder`` config.
        decoder (dict): :class:`PhraseObjectTransformer` kwargs (``num_layers`` K=9,
            ``num_heads``, ``ffn_dims``, ``text_mode``).
        masked_attention (bool): Mask2Former masked cross-attention to pixels.
        aggregation (dict): :class:`AdaptiveInstanceAggregation` config.
        no_target (dict): :class:`NoTargetPredictor` config (``embed_dims`` filled in).
        instance_supervision (bool): use L_inst (False = ablation "no instance supervision").
        phrase_alignment (bool): add L_phrase to L_inst (False = "w/o phrase alignment").
        deep_supervision (bool): supervise every block's prediction.
        supervise_initial_instances (bool): with deep supervision, also apply L_inst to the
            prediction of the learned queries before the first block (which have not read the
            text yet); the merged loss is applied to it either way.
        supervise_intermediate_instances (bool): with deep supervision, apply L_inst to the
            predictions after blocks 1..K-1 (False: not there; the final block always gets
            L_inst, the initial prediction follows ``supervise_initial_instances`` and the
            merged loss is applied to every block either way).
        score_prior_prob (float, optional): initial relevance ``p_i`` of every query: the score
            head's bias starts at ``-log((1 - pi) / pi)`` (the prior initialisation of
            DETR-family class heads). Default ``1 / num_queries``: about one query per target at
            the start, so Eq. 8's sum ``sum_i p_i PReLU(s_i)`` begins on the scale of a single
            instance logit. With a zero bias (``p_i = 0.5``) the merged logits of the N = 100
            paper model start at +-50..140 and its merged BCE at 6-55 per block (x5 weight),
            see docs/instalign.md. ``0.5`` restores the zero bias.
        loss_score, loss_mask, loss_dice, loss_phrase: instance losses (weights 2, 5, 5, 1).
        loss_merged_bce, loss_merged_dice: merged-mask loss (weights 5, 5).
        loss_no_target: no-target BCE (weight 0.1).
        train_cfg (dict): ``assigner`` (HungarianAssigner + costs).
        test_cfg (dict): ``mask_thr`` (0.5), ``nt_thr`` (0.5), ``extras_topk`` (10, instances
            kept in ``pred_extras``), ``words_topk`` (3, aligned words per instance).
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 text_channels: int = 768,
                 feat_channels: int = 256,
                 num_queries: int = 100,
                 num_transformer_feat_level: int = 3,
                 pixel_decoder: Optional[dict] = None,
                 decoder: Optional[dict] = None,
                 masked_attention: bool = True,
                 positional_encoding: dict = dict(num_feats=128, normalize=True),
                 aggregation: dict = dict(type='AdaptiveInstanceAggregation', mode='aia'),
                 no_target: dict = dict(type='NoTargetPredictor', inputs='qglobal_tsen'),
                 instance_supervision: bool = True,
                 phrase_alignment: bool = True,
                 deep_supervision: bool = True,
                 supervise_initial_instances: bool = True,
                 supervise_intermediate_instances: bool = True,
                 score_prior_prob: Optional[float] = None,
                 loss_score: dict = dict(type='CrossEntropyLoss', use_sigmoid=True,
                                         loss_weight=2.0),
                 loss_mask: dict = dict(type='CrossEntropyLoss', use_sigmoid=True,
                                        loss_weight=5.0),
                 loss_dice: dict = dict(type='DiceLoss', use_sigmoid=True, activate=True,
                                        naive_dice=True, eps=1.0, loss_weight=5.0),
                 loss_phrase: dict = dict(type='PhraseAlignmentLoss', loss_weight=1.0),
                 loss_merged_bce: dict = dict(type='CrossEntropyLoss', use_sigmoid=True,
                                              loss_weight=5.0),
                 loss_merged_dice: dict = dict(type='DiceLoss', use_sigmoid=True, activate=True,
                                               naive_dice=True, eps=1.0, loss_weight=5.0),
                 loss_no_target: dict = dict(type='CrossEntropyLoss', use_sigmoid=True,
                                             loss_weight=0.1),
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if pixel_decoder is None:
            raise ValueError('InstAlignHead: pixel_decoder config is required')
        self.num_queries = num_queries
        self.num_levels = num_transformer_feat_level
        self.masked_attention = masked_attention
        self.instance_supervision = instance_supervision
        self.phrase_alignment = phrase_alignment
        self.deep_supervision = deep_supervision
        self.supervise_initial_instances = supervise_initial_instances
        self.supervise_intermediate_instances = supervise_intermediate_instances

        pd = ConfigDict(copy.deepcopy(pixel_decoder))  # mmdet reads it by attribute
        pd.update(in_channels=list(in_channels), feat_channels=feat_channels,
                  out_channels=feat_channels)
        pd.setdefault('num_outs', num_transformer_feat_level)
        if pd['num_outs'] != num_transformer_feat_level:
            raise ValueError(f"InstAlignHead: pixel_decoder.num_outs={pd['num_outs']} must equal "
                             f'num_transformer_feat_level={num_transformer_feat_level}')
        self.pixel_decoder = MODELS.build(pd)
        dec = dict(num_layers=9, num_heads=8, ffn_dims=2048, text_mode='bidirectional')
        dec.update(decoder or {})
        self.decoder = PhraseObjectTransformer(
            num_levels=num_transformer_feat_level, embed_dims=feat_channels, **dec)
        self.num_heads = self.decoder.num_heads

        self.pixel_pos = SinePositionalEncoding(**positional_encoding)
        self.level_embed = nn.Embedding(num_transformer_feat_level, feat_channels)
        self.query_feat = nn.Embedding(num_queries, feat_channels)
        self.query_embed = nn.Embedding(num_queries, feat_channels)
        self.text_proj = nn.Sequential(nn.Linear(text_channels, feat_channels),
                                       nn.LayerNorm(feat_channels))
        self.decoder_norm = nn.LayerNorm(feat_channels)
        self.score_embed = nn.Linear(feat_channels, 1)
        prior = 1.0 / num_queries if score_prior_prob is None else score_prior_prob
        if not 0.0 < prior < 1.0:
            raise ValueError(f'InstAlignHead: score_prior_prob must be in (0, 1), got {prior}')
        nn.init.constant_(self.score_embed.bias, bias_init_with_prob(prior))
        self.mask_embed = _mlp(feat_channels, feat_channels, 3)
        self.aggregation = MODELS.build(aggregation)
        nt = dict(no_target)
        nt.setdefault('embed_dims', feat_channels)
        self.no_target = MODELS.build(nt)

        self.loss_score = MODELS.build(loss_score)
        self.loss_mask = MODELS.build(loss_mask)
        self.loss_dice = MODELS.build(loss_dice)
        self.loss_phrase = MODELS.build(loss_phrase)
        self.loss_merged_bce = MODELS.build(loss_merged_bce)
        self.loss_merged_dice = MODELS.build(loss_merged_dice)
        self.loss_no_target = MODELS.build(loss_no_target)

        self.train_cfg = train_cfg or {}
        self.test_cfg = dict(mask_thr=0.5, nt_thr=0.5, extras_topk=10, words_topk=3)
        self.test_cfg.update(test_cfg or {})
        self.assigner = None
        if instance_supervision:
            if 'assigner' not in self.train_cfg:
                raise KeyError('InstAlignHead: train_cfg.assigner is required when '
                               'instance_supervision=True')
            self.assigner = TASK_UTILS.build(self.train_cfg['assigner'])

    def init_weights(self) -> None:
        super().init_weights()
        for p in self.decoder.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    # ------------------------------------------------------------------ forward
    def _forward_head(self, query: Tensor, text: Tensor, text_mask: Tensor,
                      mask_feature: Tensor, attn_size: Tuple[int, int]) -> Dict[str, Tensor]:
        """Heads after one block. Returns score_logits [B,N], masks [B,N,h,w] (logits),
        merged [B,h,w] (logits), phrase_cost [B,N], relevance R [B,N,L], queries [B,N,C],
        text [B,L,C] and attn_mask [B*heads,N,hw_next] for the next block."""
        q = self.decoder_norm(query)
        score_logits = self.score_embed(q).squeeze(-1)
        masks = torch.einsum('bnc,bchw->bnhw', self.mask_embed(q), mask_feature)
        relevance, _, phrase_cost = phrase_object_alignment(q, text, text_mask)
        merged = self.aggregation(masks, score_logits.sigmoid())
        out = dict(score_logits=score_logits, masks=masks, merged=merged,
                   phrase_cost=phrase_cost, relevance=relevance, queries=q, text=text)
        if self.masked_attention:
            am = F.interpolate(masks.detach(), attn_size, mode='bilinear', align_corners=False)
            am = am.flatten(2).sigmoid() < 0.5  # [B, N, hw], True = blocked
            am = am & (am.sum(-1, keepdim=True) != am.shape[-1])  # never block a whole row
            out['attn_mask'] = am.repeat_interleave(self.num_heads, dim=0)
        return out

    def forward(self, feats: Sequence[Tensor], text_feats: Tensor,
                text_mask: Tensor) -> Tuple[List[Dict[str, Tensor]], Tensor]:
        """Args:
            feats: backbone features, high -> low resolution, [B, C_i, H_i, W_i].
            text_feats: T_0 from the text encoder [B, L, text_channels].
            text_mask: [B, L], nonzero = valid token.
        Returns:
            (per-block outputs: K + 1 dicts of :meth:`_forward_head`, the last one final;
             no-target logit [B]).
        """
        b = feats[0].shape[0]
        mask_feature, memories = self.pixel_decoder(list(feats))  # memories: low -> high res
        pixels, pixel_pos, sizes = [], [], []
        for i in range(self.num_levels):
            m = memories[i]
            sizes.append(m.shape[-2:])
            pixels.append(m.flatten(2).transpose(1, 2) + self.level_embed.weight[i][None, None])
            pos = self.pixel_pos(m.new_zeros((b, ) + m.shape[-2:], dtype=torch.bool))
            pixel_pos.append(pos.flatten(2).transpose(1, 2))
        text = self.text_proj(text_feats)
        # repeat, not expand: a view of a parameter made under no_grad still requires grad,
        # which breaks torch's FlopCounterMode module tracking (get_flops.py)
        query = self.query_feat.weight.unsqueeze(0).repeat(b, 1, 1)
        query_pos = self.query_embed.weight.unsqueeze(0).repeat(b, 1, 1)

        out = self._forward_head(query, text, text_mask, mask_feature, sizes[0])
        outs = [out]
        for k, layer in enumerate(self.decoder.layers):
            lvl = self.decoder.level_of(k)
            query, text = layer(query, query_pos, pixels[lvl], pixel_pos[lvl], text, text_mask,
                                attn_mask=out.get('attn_mask'))
            out = self._forward_head(query, text, text_mask, mask_feature,
                                     sizes[self.decoder.level_of(k + 1)])
            outs.append(out)
        nt_logit = self.no_target(out['queries'], out['score_logits'].sigmoid(), out['text'],
                                  text_mask)
        return outs, nt_logit

    # ------------------------------------------------------------------ targets
    @staticmethod
    def _sample_targets(sample, pad_shape: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        """Per-instance GT masks [n, H, W] and merged GT [H, W] (float), zero-padded from
        ``img_shape`` to the padded batch shape ``pad_shape`` (bottom/right, as the inputs)."""
        if 'gt_instances' not in sample or 'masks' not in sample.gt_instances:
            raise KeyError(f"InstAlignHead: data sample (img_path={sample.get('img_path')}) has "
                           'no gt_instances.masks (BitmapMasks at img_shape)')
        masks = sample.gt_instances.masks
        masks = masks.to_tensor(torch.float32, 'cpu') if hasattr(masks, 'to_tensor') \
            else torch.as_tensor(masks, dtype=torch.float32)
        h, w = masks.shape[-2:]
        if h > pad_shape[0] or w > pad_shape[1]:
            raise ValueError(f'InstAlignHead: GT masks {h}x{w} larger than the batch input '
                             f'{pad_shape} ({sample.get("img_path")})')
        masks = F.pad(masks.reshape(-1, h, w), (0, pad_shape[1] - w, 0, pad_shape[0] - h))
        if 'gt_merged_mask' in sample:
            merged = torch.as_tensor(sample.gt_merged_mask.data).float().cpu()
            merged = merged.reshape(-1, *merged.shape[-2:])[0]
            mh, mw = merged.shape
            merged = F.pad(merged, (0, pad_shape[1] - mw, 0, pad_shape[0] - mh))
        else:
            merged = masks.amax(0) if len(masks) else masks.new_zeros(pad_shape)
        if sample.metainfo.get('no_target', False) and len(masks):
            raise ValueError(f"InstAlignHead: sample {sample.get('img_path')} / "
                             f"{sample.get('text')!r} is no_target but has {len(masks)} instances")
        return masks, merged

    def get_targets(self, batch_data_samples, pad_shape: Tuple[int, int],
                    mask_size: Tuple[int, int], device) -> Tuple[List[InstanceData], Tensor,
                                                                 Tensor]:
        """Returns per-sample ``InstanceData(masks [n, h, w] at the mask-prediction size,
        labels zeros[n])``, merged GT [B, H, W] at the padded input size, no-target [B]."""
        gts, merged, nts = [], [], []
        for s in batch_data_samples:
            masks, m = self._sample_targets(s, pad_shape)
            small = F.interpolate(masks[None], mask_size, mode='bilinear',
                                  align_corners=False)[0] if len(masks) else \
                masks.new_zeros((0, ) + tuple(mask_size))
            gts.append(InstanceData(masks=small.to(device),
                                    labels=torch.zeros(len(small), dtype=torch.long,
                                                       device=device)))
            merged.append(m)
            nts.append(float(bool(s.metainfo.get('no_target', len(masks) == 0))))
        return gts, torch.stack(merged).to(device), torch.tensor(nts, device=device)

    # ------------------------------------------------------------------ losses
    def _merged_loss(self, merged: Tensor, gt_merged: Tensor) -> Dict[str, Tensor]:
        pred = F.interpolate(merged[:, None], gt_merged.shape[-2:], mode='bilinear',
                             align_corners=False)[:, 0]
        pred, tgt = pred.flatten(1), gt_merged.flatten(1)
        return dict(loss_merged_bce=self.loss_merged_bce(pred, tgt),
                    loss_merged_dice=self.loss_merged_dice(pred, tgt))

    def match(self, out: Dict[str, Tensor], gts: List[InstanceData]) -> List[Tuple[Tensor,
                                                                                    Tensor]]:
        """Hungarian matching per sample; returns (query indices, gt indices) pairs."""
        pairs = []
        for b, gt in enumerate(gts):
            pred = InstanceData(score_logits=out['score_logits'][b].detach(),
                                masks=out['masks'][b].detach(),
                                phrase_costs=out['phrase_cost'][b].detach())
            res = self.assigner.assign(pred, gt)
            q_idx = torch.nonzero(res.gt_inds > 0, as_tuple=False).squeeze(1)
            pairs.append((q_idx, res.gt_inds[q_idx] - 1))
        return pairs

    def _instance_loss(self, out: Dict[str, Tensor], gts: List[InstanceData]) -> Dict[str, Tensor]:
        pairs = self.match(out, gts)
        score_logits = out['score_logits']
        score_t = torch.zeros_like(score_logits)
        pm, gm, pc = [], [], []
        for b, (q_idx, g_idx) in enumerate(pairs):
            score_t[b, q_idx] = 1
            pm.append(out['masks'][b, q_idx])
            gm.append(gts[b].masks[g_idx])
            pc.append(out['phrase_cost'][b, q_idx])
        pm, gm, pc = torch.cat(pm), torch.cat(gm), torch.cat(pc)
        num = reduce_mean(score_logits.new_tensor(float(len(pm)))).clamp(min=1).item()
        losses = dict(loss_score=self.loss_score(score_logits.flatten(), score_t.flatten()))
        if len(pm):
            losses['loss_mask'] = self.loss_mask(pm.flatten(1), gm.flatten(1),
                                                 avg_factor=num * pm[0].numel())
            losses['loss_dice'] = self.loss_dice(pm.flatten(1), gm.flatten(1), avg_factor=num)
        else:  # keep the graph connected (all no-target batch)
            losses['loss_mask'] = out['masks'].sum() * 0
            losses['loss_dice'] = out['masks'].sum() * 0
        if self.phrase_alignment:
            losses['loss_phrase'] = self.loss_phrase(pc, avg_factor=num) if len(pc) else \
                out['phrase_cost'].sum() * 0
        return losses

    def loss_by_feat(self, outs: List[Dict[str, Tensor]], nt_logit: Tensor,
                     batch_data_samples) -> Dict[str, Tensor]:
        pad_shape = tuple(batch_data_samples[0].metainfo.get(
            'batch_input_shape', batch_data_samples[0].metainfo['img_shape']))[:2]
        gts, gt_merged, gt_nt = self.get_targets(batch_data_samples, pad_shape,
                                                 outs[-1]['masks'].shape[-2:], nt_logit.device)
        losses = {}
        layers = outs if self.deep_supervision else outs[-1:]
        for i, out in enumerate(layers):
            prefix = '' if i == len(layers) - 1 else f'd{i}.'
            parts = self._merged_loss(out['merged'], gt_merged)
            initial = self.deep_supervision and i == 0
            final = i == len(layers) - 1
            wanted = final or (self.supervise_initial_instances if initial
                               else self.supervise_intermediate_instances)
            if self.instance_supervision and wanted:
                parts.update(self._instance_loss(out, gts))
            losses.update({prefix + k: v for k, v in parts.items()})
        losses['loss_no_target'] = self.loss_no_target(nt_logit, gt_nt)
        return losses

    def loss(self, feats, text: Dict[str, Tensor], batch_data_samples) -> Dict[str, Tensor]:
        outs, nt_logit = self(feats, text['word_feats'], text['attention_mask'])
        return self.loss_by_feat(outs, nt_logit, batch_data_samples)

    # ------------------------------------------------------------------ predict
    def predict(self, feats, text: Dict[str, Tensor], batch_data_samples,
                words: Optional[List[List[str]]] = None,
                word_valid: Optional[Tensor] = None):
        """Fill ``pred_mask``, ``pred_no_target``, ``pred_box``, ``pred_score``, ``pred_extras``
        of every data sample (contract section 3), all at ``img_shape``."""
        outs, nt_logit = self(feats, text['word_feats'], text['attention_mask'])
        out = outs[-1]
        cfg = self.test_cfg
        meta0 = batch_data_samples[0].metainfo
        pad_shape = tuple(meta0.get('batch_input_shape', meta0['img_shape']))[:2]
        merged = F.interpolate(out['merged'][:, None], pad_shape, mode='bilinear',
                               align_corners=False)[:, 0].sigmoid()
        scores = out['score_logits'].sigmoid()
        nt_prob = nt_logit.sigmoid()
        if word_valid is None:
            word_valid = text['attention_mask'].bool()
        for b, sample in enumerate(batch_data_samples):
            h, w = sample.metainfo['img_shape'][:2]
            prob = merged[b, :h, :w]
            is_nt = bool(nt_prob[b] > cfg['nt_thr'])
            mask = prob > cfg['mask_thr']
            if is_nt:
                sample.pred_mask_ungated = mask  # kept for ReLA's cIoU union (GRESMetric)
                mask = torch.zeros_like(mask)
            sample.pred_prob = prob
            sample.pred_mask_thr = float(cfg['mask_thr'])
            sample.pred_mask = mask
            sample.pred_no_target = is_nt
            sample.pred_box = mask2bbox(mask[None])[0]
            sample.pred_score = float(nt_prob[b]) if is_nt else \
                float(prob[mask].mean()) if mask.any() else float(1 - nt_prob[b])
            k = cfg['extras_topk'] or self.num_queries
            top = scores[b].argsort(descending=True)[:k]
            inst = F.interpolate(out['masks'][b, top][None], pad_shape, mode='bilinear',
                                 align_corners=False)[0, :, :h, :w].sigmoid()
            rel = out['relevance'][b, top].masked_fill(~word_valid[b][None], -1)
            aligned = []
            if words is not None:
                n_valid = int(word_valid[b].sum())
                idx = rel.topk(min(cfg['words_topk'], n_valid), dim=-1).indices if n_valid else \
                    rel.new_zeros((len(top), 0), dtype=torch.long)
                aligned = [[words[b][j] for j in row.tolist()] for row in idx]
            sample.pred_extras = dict(inst_masks=inst, inst_scores=scores[b, top],
                                      aligned_words=aligned, no_target_score=float(nt_prob[b]))
        return batch_data_samples
