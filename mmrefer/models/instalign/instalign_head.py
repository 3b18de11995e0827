"""InstAlign head (sections 3.2-3.7) on mmdet's Mask2Former head skeleton.

Shapes (B images, N queries, L tokens, C channels, h x w = 1/4 of the padded batch H x W)::

    pixel decoder:  V_4 [B, C, h, w] mask features, V_1..V_3 (low -> high res) for the POT
    POT block k:    (Q_{k-1}, T_{k-1}, V_{(k-1) mod 3 + 1}) -> (Q_k, T_k)      (k = 1..K)
    _forward_head:  p = sigmoid(Linear(LN(Q_k)))                    [B, N]
                    s = MLP(LN(Q_k)) . V_4                          [B, N, h, w]   (Eq. 4)
                    R, P, L_phrase = phrase_object_alignment(LN(Q_k), T_k)        (Eq. 1-3)
                    M = sigmoid(sum_i p_i PReLU(s_i))               [B, h, w]      (Eq. 8)
    no-target:      p_nt = sigmoid(MLP([sum_i p_i LN(Q_K)^i, mean_l T_K^l]))  [B]  (Eq. 10-12)

Losses (Eq. 7, 9, 13): ``5 (BCE + Dice)(up_{HxW}(M), M_gt) + L_inst`` (instance_supervision.py)
per supervised layer (``loss_*`` last, ``d{i}.loss_*`` layer i) + ``0.1 BCE(p_nt, no_target)``.
The batch padding (none at the configs' square 480 or 128 sizes) counts as background in both, as
in mmdet's Mask2Former; Latent-VG's mask loss instead leaves it out (``LatentVGHead``).
"""
import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.layers import MLP, SinePositionalEncoding
from mmdet.models.utils import multi_apply
from mmengine.config import ConfigDict
from mmengine.model import bias_init_with_prob
from mmengine.structures import InstanceData
from torch import Tensor, nn

from mmrefer.registry import MODELS
from ..base_ref_head import BaseRefHead
from ..utils import batch_shape, resize_bilinear, stack_merged_gt, stack_no_target_gt
from .instance_supervision import PhraseAlignedInstanceSupervision
from .phrase_object_transformer import aligned_words, phrase_object_alignment

_LOSS_NAMES = ('loss_merged_bce', 'loss_merged_dice', 'loss_score', 'loss_mask', 'loss_dice',
               'loss_phrase')
_BCE = dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True)
_DICE = dict(type='mmdet.DiceLoss', use_sigmoid=True, activate=True, naive_dice=True, eps=1.0)


@MODELS.register_module()
class InstAlignHead(BaseRefHead):
    """See the module docstring (the four :class:`BaseRefHead` hooks: ``forward``,
    ``loss_by_feat``, ``predict_maps``, ``fill_predictions``).

    Args:
        in_channels (list[int]): backbone channels per scale (Swin-B: 128, 256, 512, 1024).
        text_channels (int): text encoder width (the detector fills it).
        feat_channels (int), num_queries (int): C (256), N (100).
        num_transformer_feat_level (int): pixel-decoder scales fed to the POT (3).
        pixel_decoder (dict): pixel decoder config (the configs use
            :class:`HostShapeMSDeformAttnPixelDecoder`, mmdet's ``MSDeformAttnPixelDecoder`` with
            the level sizes on the host; mmdet's own class works too).
        decoder (dict): :class:`PhraseObjectTransformer` kwargs (K = ``num_layers``, ...).
        masked_attention (bool): Mask2Former masked cross-attention to the pixels.
        positional_encoding (dict): sine encoding of the pixel keys.
        aggregation (dict), no_target_predictor (dict): :class:`AdaptiveInstanceAggregation`,
            :class:`NoTargetPredictor` (``embed_dims`` filled) configs.
        instance_supervision (bool), phrase_alignment (bool): ``L_inst``, ``L_phrase`` in it.
        deep_supervision (bool): supervise every layer's prediction, not only the last.
        supervise_initial_instances, supervise_intermediate_instances (bool): with deep
            supervision, ``L_inst`` also on layer 0 (its queries have not read the text) / on
            layers 1..K-1; the merged loss is on every supervised layer either way.
        score_prior_prob (float, optional): initial ``p_i`` (bias ``-log((1 - pi) / pi)``);
            default ``1 / num_queries`` (Eq. 8 starts on the scale of one instance logit).
        loss_score, loss_mask, loss_dice, loss_phrase (dict): ``L_inst`` terms (2, 5, 5, 1);
            ``loss_score``'s weight applies to matched queries.
        unmatched_score_weight (float): weight of an unmatched query's ``BCE(p, 0)`` (Eq. 7: 1).
        loss_merged_bce, loss_merged_dice, loss_no_target (dict): weights 5, 5, 0.1.
        train_cfg (dict): ``assigner`` (``HungarianAssigner`` with the Eq. 6 costs).
        test_cfg (dict): ``mask_thr``, ``nt_thr`` (0.5), ``extras_topk`` (10; None = all N
            instances in ``pred_extras``), ``words_topk`` (3 aligned words per instance).
    """
    # state-dict keys of checkpoints saved before the rename: head.no_target.* and the
    # nn.Sequential mask MLP
    OLD_KEYS = (('no_target.', 'no_target_predictor.'), ('mask_embed.0.', 'mask_embed.layers.0.'),
                ('mask_embed.2.', 'mask_embed.layers.1.'),
                ('mask_embed.4.', 'mask_embed.layers.2.'))
    TEST_CFG = dict(mask_thr=0.5, nt_thr=0.5, extras_topk=10, words_topk=3)

    def __init__(self, in_channels: Sequence[int], text_channels: int = 768,
                 feat_channels: int = 256, num_queries: int = 100,
                 num_transformer_feat_level: int = 3, pixel_decoder: Optional[dict] = None,
                 decoder: Optional[dict] = None, masked_attention: bool = True,
                 positional_encoding: dict = dict(num_feats=128, normalize=True),
                 aggregation: dict = dict(type='AdaptiveInstanceAggregation', mode='aia'),
                 no_target_predictor: dict = dict(type='NoTargetPredictor', inputs='qglobal_tsen'),
                 instance_supervision: bool = True, phrase_alignment: bool = True,
                 deep_supervision: bool = True, supervise_initial_instances: bool = True,
                 supervise_intermediate_instances: bool = True,
                 score_prior_prob: Optional[float] = None,
                 loss_score: dict = dict(_BCE, loss_weight=2.0),
                 loss_mask: dict = dict(_BCE, loss_weight=5.0),
                 loss_dice: dict = dict(_DICE, loss_weight=5.0),
                 loss_phrase: dict = dict(type='PhraseAlignmentLoss', loss_weight=1.0),
                 unmatched_score_weight: float = 1.0,
                 loss_merged_bce: dict = dict(_BCE, loss_weight=5.0),
                 loss_merged_dice: dict = dict(_DICE, loss_weight=5.0),
                 loss_no_target: dict = dict(_BCE, loss_weight=0.1),
                 train_cfg: Optional[dict] = None, test_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if pixel_decoder is None:
            raise ValueError('InstAlignHead: pixel_decoder config is required')
        self.num_queries, self.num_levels = num_queries, num_transformer_feat_level
        self.masked_attention, self.deep_supervision = masked_attention, deep_supervision
        self.instance_supervision, self.phrase_alignment = instance_supervision, phrase_alignment
        self.supervise_initial_instances = supervise_initial_instances
        self.supervise_intermediate_instances = supervise_intermediate_instances
        pd = ConfigDict(copy.deepcopy(pixel_decoder))  # mmdet reads it by attribute
        pd.setdefault('num_outs', num_transformer_feat_level)
        pd.update(in_channels=list(in_channels), feat_channels=feat_channels,
                  out_channels=feat_channels)
        if pd['num_outs'] != num_transformer_feat_level:
            raise ValueError(f"InstAlignHead: pixel_decoder.num_outs={pd['num_outs']} must equal "
                             f'num_transformer_feat_level={num_transformer_feat_level}')
        self.pixel_decoder = MODELS.build(pd)
        dec = {**dict(type='PhraseObjectTransformer', num_layers=9, num_heads=8, ffn_dims=2048,
                      text_mode='bidirectional', num_levels=num_transformer_feat_level,
                      embed_dims=feat_channels), **(decoder or {})}
        self.decoder = MODELS.build(dec)
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
        self.mask_embed = MLP(feat_channels, feat_channels, feat_channels, 3)
        self.aggregation = MODELS.build(aggregation)
        self.no_target_predictor = MODELS.build(
            dict(dict(embed_dims=feat_channels), **no_target_predictor))
        self.loss_merged_bce = MODELS.build(loss_merged_bce)
        self.loss_merged_dice = MODELS.build(loss_merged_dice)
        self.loss_no_target = MODELS.build(loss_no_target)
        self.train_cfg = train_cfg or {}
        self.instance_loss = self.assigner = None  # L_inst and its HungarianAssigner
        if instance_supervision:
            if 'assigner' not in self.train_cfg:
                raise KeyError('InstAlignHead: train_cfg.assigner is required when '
                               'instance_supervision=True')
            self.instance_loss = PhraseAlignedInstanceSupervision(
                self.train_cfg['assigner'], loss_score, loss_mask, loss_dice,
                loss_phrase if phrase_alignment else None, unmatched_score_weight)
            self.assigner = self.instance_loss.assigner
        self.init_test_cfg(test_cfg)

    def _forward_head(self, query: Tensor, text: Tensor, text_mask: Tensor, mask_feature: Tensor,
                      attn_mask_target_size: Tuple[int, int]) -> Tuple[Optional[Tensor], ...]:
        """Heads on one layer's queries ``[B, N, C]`` and words ``[B, L, C]``. Returns score
        logits [B, N], mask logits [B, N, h, w], merged logits [B, h, w], phrase costs [B, N],
        relevance R [B, N, L], next block's attention mask [B * heads, N, h'w'] (or None)."""
        q = self.decoder_norm(query)
        score_logits = self.score_embed(q).squeeze(-1)
        mask_logits = torch.einsum('bnc,bchw->bnhw', self.mask_embed(q), mask_feature)
        relevance, _, phrase_cost = phrase_object_alignment(q, text, text_mask)
        merged = self.aggregation(mask_logits, score_logits.sigmoid())
        attn_mask = None
        if self.masked_attention:
            am = resize_bilinear(mask_logits.detach(), attn_mask_target_size
                                 ).flatten(2).sigmoid() < 0.5
            am = am & (am.sum(-1, keepdim=True) != am.shape[-1])  # never block a whole row
            attn_mask = am.repeat_interleave(self.num_heads, dim=0)
        return score_logits, mask_logits, merged, phrase_cost, relevance, attn_mask

    def forward(self, x: Dict, batch_data_samples: Optional[List] = None) -> Tuple:
        """``x``: ``img_feats`` (tuple of [B, C_i, H_i, W_i], high -> low resolution),
        ``word_feats`` [B, L, text_channels], ``word_mask`` [B, L] (1 = token). Returns lists
        (K + 1 layers) of score logits [B, N], mask logits [B, N, h, w], merged logits
        [B, h, w], phrase costs [B, N], relevance [B, N, L], and the no-target logit [B]."""
        feats, word_mask = x['img_feats'], x['word_mask']
        b = feats[0].shape[0]
        mask_feature, memories = self.pixel_decoder(list(feats))  # memories: low -> high res
        memories = memories[:self.num_levels]
        sizes = [m.shape[-2:] for m in memories]
        pixels = [m.flatten(2).transpose(1, 2) + self.level_embed.weight[i][None, None]
                  for i, m in enumerate(memories)]
        pixel_pos = [self.pixel_pos(m.new_zeros((b, ) + m.shape[-2:], dtype=torch.bool))
                     .flatten(2).transpose(1, 2) for m in memories]
        text = self.text_proj(x['word_feats'])
        # repeat, not expand: a view of a parameter made under no_grad still requires grad,
        # which breaks torch's FlopCounterMode module tracking (get_flops.py)
        query = self.query_feat.weight.unsqueeze(0).repeat(b, 1, 1)
        query_pos = self.query_embed.weight.unsqueeze(0).repeat(b, 1, 1)
        outs = [self._forward_head(query, text, word_mask, mask_feature, sizes[0])]
        for k, layer in enumerate(self.decoder.layers):
            lvl = self.decoder.level_of(k)
            query, text = layer(query, query_pos, pixels[lvl], pixel_pos[lvl], text, word_mask,
                                attn_mask=outs[-1][-1])
            outs.append(self._forward_head(query, text, word_mask, mask_feature,
                                           sizes[self.decoder.level_of(k + 1)]))
        scores, masks, merged, phrase, relevance, _ = (list(v) for v in zip(*outs))
        nt_logits = self.no_target_predictor(self.decoder_norm(query), scores[-1].sigmoid(),
                                             text, word_mask)
        return scores, masks, merged, phrase, relevance, nt_logits

    @staticmethod
    def _check_mask_grid(pad_shape: Tuple[int, int], mask_size: Tuple[int, int]) -> None:
        """The mask logits' grid must tile the batch exactly (one stride for both axes): Swin
        pads an input that is not a multiple of 4 (and of 32 at its deepest stage) inside, so
        its 1/4 grid would then cover more than the batch and resizing it onto the batch would
        stretch every mask. Raises a ``ValueError`` naming the shapes and the fix."""
        (H, W), (h, w) = (int(v) for v in pad_shape), (int(v) for v in mask_size)
        if H % h or W % w or H // h != W // w:
            raise ValueError(
                f'InstAlignHead: the batch shape {(H, W)} is not a whole multiple of the mask '
                f'grid {(h, w)} (the backbone padded its input inside), so masks would be '
                'stretched; pad the batch to a multiple of 32 with '
                'model.data_preprocessor.pad_size_divisor=32 (the InstAlign configs do)')

    def get_targets(self, batch_data_samples: List, mask_size: Tuple[int, int],
                    device) -> Tuple[Optional[List[InstanceData]], Tensor, Tensor]:
        """The GT instances at the mask size (``PhraseAlignedInstanceSupervision.gt_instances``;
        None without instance supervision), the merged GT [B, H, W] at the batch shape and the
        no-target GT [B]: all as ``RefDataPreprocessor`` padded and moved them (it also refuses
        a no-target sample with GT instances)."""
        pad_shape = batch_shape(batch_data_samples)
        self._check_mask_grid(pad_shape, mask_size)
        gts = (self.instance_loss.gt_instances(batch_data_samples, pad_shape, mask_size, device)
               if self.instance_loss is not None else None)
        return (gts, stack_merged_gt(batch_data_samples, pad_shape, device),
                stack_no_target_gt(batch_data_samples, device))

    def loss_by_feat(self, all_score_logits: List[Tensor], all_mask_logits: List[Tensor],
                     all_merged: List[Tensor], all_phrase_costs: List[Tensor],
                     all_relevance: List[Tensor], nt_logits: Tensor,
                     batch_data_samples: List) -> Dict[str, Tensor]:
        """Losses of the :meth:`forward` outputs: ``loss_*`` (last layer), ``d{i}.loss_*``
        (layer i, with ``deep_supervision``) and ``loss_no_target``."""
        gts, gt_merged, gt_nt = self.get_targets(batch_data_samples,
                                                 all_mask_logits[-1].shape[-2:], nt_logits.device)
        metas = [ds.metainfo for ds in batch_data_samples]
        n = len(all_score_logits)
        sel = slice(None) if self.deep_supervision else slice(n - 1, None)
        layers = list(range(n))[sel]
        # L_inst on the last layer, on layer 0 / layers 1..K-1 as the switches say
        with_inst = [self.instance_supervision and (i == n - 1 or (
            self.supervise_initial_instances if i == 0 else self.supervise_intermediate_instances))
            for i in layers]
        # Eq. 5 for every supervised layer and image at once (one copy to scipy and back)
        inst = [i for i, w in zip(layers, with_inst) if w]
        matched = iter(self.instance_loss.get_targets_layers(
            [(all_score_logits[i], all_mask_logits[i], all_phrase_costs[i]) for i in inst],
            gts, metas) if inst else [])
        targets = [next(matched) if w else None for w in with_inst]
        per_layer = multi_apply(self._loss_by_feat_single, all_score_logits[sel],
                                all_mask_logits[sel], all_merged[sel], all_phrase_costs[sel],
                                targets, [gt_merged] * len(layers))
        losses = {}
        for j in [len(layers) - 1] + list(range(len(layers) - 1)):  # last layer first
            prefix = '' if layers[j] == n - 1 else f'd{layers[j]}.'
            losses.update({prefix + k: v[j] for k, v in zip(_LOSS_NAMES, per_layer)
                           if v[j] is not None})
        losses['loss_no_target'] = self.loss_no_target(nt_logits.float(), gt_nt)
        return losses

    def _loss_by_feat_single(self, score_logits: Tensor, mask_logits: Tensor, merged: Tensor,
                             phrase_costs: Tensor, targets: Optional[Tuple],
                             gt_merged: Tensor) -> Tuple[Optional[Tensor], ...]:
        """One layer: merged BCE + Dice at the batch shape (``merged`` [B, h, w] upsampled to
        ``gt_merged`` [B, H, W]) and, with its instance ``targets`` (an entry of
        ``PhraseAlignedInstanceSupervision.get_targets_layers``; None: no ``L_inst`` on this
        layer), ``L_inst``; values in the order of ``_LOSS_NAMES`` (None for a term not
        computed)."""
        pred = F.interpolate(merged[:, None].float(), gt_merged.shape[-2:], mode='bilinear',
                             align_corners=False)[:, 0].flatten(1)
        target = gt_merged.flatten(1)
        out = (self.loss_merged_bce(pred, target), self.loss_merged_dice(pred, target))
        if targets is None:
            return out + (None, ) * 4
        return out + self.instance_loss.loss(score_logits, mask_logits, phrase_costs,
                                             targets=targets)

    def predict_inputs(self, x: Dict) -> Dict:
        return dict(words=x.get('words'))

    def predict_maps(self, scores, masks, merged, phrase_costs, relevance, nt_logits, pad_shape):
        """Last layer at ``pad_shape`` (the ONNX outputs): ``prob`` [B, H, W], ``nt_prob`` [B],
        top-k queries' ``inst_masks`` [B, k, H, W], ``inst_scores`` [B, k], ``inst_relevance``."""
        self._check_mask_grid(pad_shape, masks[-1].shape[-2:])
        k = min(self.test_cfg['extras_topk'] or self.num_queries, self.num_queries)
        inst_scores, top = scores[-1].float().sigmoid().topk(k, dim=1)  # [B, k]
        masks, rel = (t.gather(1, top.reshape(top.shape + (1, ) * (t.dim() - 2)).expand(
            -1, -1, *t.shape[2:])) for t in (masks[-1], relevance[-1]))  # the top k queries
        maps = resize_bilinear(torch.cat([merged[-1][:, None], masks], 1).float(),
                               pad_shape).sigmoid()  # per channel
        return dict(prob=maps[:, 0], nt_prob=nt_logits.float().sigmoid(), inst_masks=maps[:, 1:],
                    inst_scores=inst_scores, inst_relevance=rel)

    @staticmethod
    def fill_predictions(post_processor, test_cfg, batch_data_samples, maps, words=None) -> List:
        """:meth:`predict_maps`' tensors -> prediction fields (static: ORTRefPredictor too)."""
        aligned = aligned_words(maps['inst_relevance'], words, test_cfg['words_topk'])
        return post_processor(batch_data_samples, maps['prob'], maps['nt_prob'], extras=[
            dict(inst_scores=s, aligned_words=a) for s, a in zip(maps['inst_scores'], aligned)],
            map_extras=dict(inst_masks=maps['inst_masks']))
