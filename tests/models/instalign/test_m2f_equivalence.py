"""InstAlignHead with ``decoder.text_mode='none'`` is mmdet's Mask2FormerHead in its mask path.

The tiny quick-start head (4 input scales 32..256 channels, C=64, 8 queries, 4 heads, FFN 128,
MSDeformAttn pixel decoder) with 3 or 4 decoder blocks is built as the detector builds it
(``text_channels``, ``train_cfg``, ``test_cfg`` filled) and given random weights, LayerNorm
and GroupNorm affines included. An mmdet ``Mask2FormerHead`` of the same sizes (mmdet's own
``MSDeformAttnPixelDecoder``) gets those weights through :func:`to_m2f`; every Mask2Former key
is filled except ``cls_embed`` (InstAlign has a score head instead, by design). Both run in
eval mode on the same random 1/4..1/32 pyramid of a 2 x 128 x 96 batch with masked attention.

Compared: the pixel decoder's mask feature and memories (to fp32 rounding: the host-shape
subclass keeps mmdet's arithmetic, and its deformable sampling adds the same products level by
level, where mmcv's PyTorch path sums one stack) and the mask logits of the K + 1 predictions (before the first
block and after each). The only differences are float rounding from the attention kernel
(mmcv's wrapper calls ``nn.MultiheadAttention`` with ``need_weights=True``, the POT with
``False``): ``ATOL`` on logits of magnitude ~10. With the text attention's output projection
zeroed, the 'bidirectional' and 'query_only' decoders reduce to the same computation up to one
extra LayerNorm of a LayerNormed vector (``ATOL_TEXT``). A guard asserts that the random
weights give fully blocked attention-mask rows, and the mutations (rows not unblocked, scale
order reversed, per-head mask rows misordered) must move the logits far beyond the tolerance.
"""
import copy
import os.path as osp
import re

import pytest
import torch
import torch.nn.functional as F
from mmdet.structures import DetDataSample
from mmengine.config import Config, ConfigDict

from mmrefer.models.instalign.instalign_head import InstAlignHead
from mmrefer.registry import MODELS
from mmrefer.utils import register_all_modules

CONFIG = osp.join(osp.dirname(__file__), '..', '..', '..', 'configs', 'quickstart',
                  'instalign_tiny_synthref.py')
B, H, W, L = 2, 128, 96, 6
ATOL, ATOL_TEXT = 1e-4, 2e-4

# InstAlign key -> Mask2FormerHead key (mask path); anything else must be outside the mask path
_LAYER, _M2F = r'^decoder\.layers\.(\d+)\.', r'transformer_decoder.layers.\1.'
RULES = [(_LAYER + r'pixel_attn\.', _M2F + 'cross_attn.attn.'),
         (_LAYER + r'self_attn\.', _M2F + 'self_attn.attn.'),
         (_LAYER + r'pixel_norm\.', _M2F + 'norms.0.'),
         (_LAYER + r'self_norm\.', _M2F + 'norms.1.'),
         (_LAYER + r'ffn_norm\.', _M2F + 'norms.2.'),
         (_LAYER + r'ffn\.0\.', _M2F + 'ffn.layers.0.0.'),
         (_LAYER + r'ffn\.3\.', _M2F + 'ffn.layers.1.'),
         (r'^decoder_norm\.', 'transformer_decoder.post_norm.'),
         (r'^mask_embed\.layers\.(\d)\.', lambda m: f'mask_embed.{2 * int(m.group(1))}.'),
         (r'^(pixel_decoder|level_embed|query_feat|query_embed)\.', r'\1.')]
NOT_MASK_PATH = (r'^(text_proj|score_embed|aggregation|no_target_predictor'
                 r'|decoder\.layers\.\d+\.(q2t|t2q)_)')


def to_m2f(state_dict):
    """(Mask2FormerHead state dict, InstAlign keys with no counterpart)."""
    out, unused = {}, []
    for key, value in state_dict.items():
        for pat, rep in RULES:
            if re.match(pat, key):
                out[re.sub(pat, rep, key)] = value
                break
        else:
            unused.append(key)
    return out, unused


def randomize(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() > 1:
                std = 1.0 if name.split('.')[0] in ('query_feat', 'query_embed', 'level_embed') \
                    else p[0].numel() ** -0.5
                p.copy_(torch.randn(p.shape, generator=g) * std)
            elif name.endswith('weight') and ('norm' in name or '.gn.' in name):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


def build_pair(num_layers, text_mode='none'):
    register_all_modules()
    cfg = Config.fromfile(CONFIG)
    hc = copy.deepcopy(cfg.model.head)
    hc.decoder.update(text_mode=text_mode, num_layers=num_layers)
    hc.update(text_channels=cfg.model.text_encoder.arch.hidden_size,
              train_cfg=cfg.model.train_cfg, test_cfg=cfg.model.test_cfg)  # as InstAlign does
    c, heads, ffn = hc.feat_channels, hc.decoder.num_heads, hc.decoder.ffn_dims
    pd = copy.deepcopy(hc.pixel_decoder)
    pd.type = 'mmdet.MSDeformAttnPixelDecoder'
    attn = dict(embed_dims=c, num_heads=heads, dropout=0.0, batch_first=True)
    m2f = MODELS.build(ConfigDict(
        type='mmdet.Mask2FormerHead', in_channels=hc.in_channels, feat_channels=c,
        out_channels=c, num_things_classes=1, num_stuff_classes=0, num_queries=hc.num_queries,
        num_transformer_feat_level=hc.num_transformer_feat_level, pixel_decoder=pd,
        positional_encoding=hc.positional_encoding,
        transformer_decoder=dict(return_intermediate=True, num_layers=num_layers, layer_cfg=dict(
            self_attn_cfg=attn, cross_attn_cfg=attn,
            ffn_cfg=dict(embed_dims=c, feedforward_channels=ffn, num_fcs=2, ffn_drop=0.0,
                         act_cfg=dict(type='ReLU', inplace=True))), init_cfg=None),
        loss_cls=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=False, class_weight=[1., .1])))
    head = MODELS.build(hc)
    randomize(head, seed=1)
    return head.eval(), m2f.eval(), hc


def load_into(m2f, state_dict):
    sd, unused = to_m2f(state_dict)
    assert [k for k in unused if not re.match(NOT_MASK_PATH, k)] == []
    res = m2f.load_state_dict(sd, strict=False)
    assert res.unexpected_keys == [] and sorted(res.missing_keys) == ['cls_embed.bias',
                                                                      'cls_embed.weight']


def inputs(in_channels, text_channels):
    g = torch.Generator().manual_seed(2)
    feats = tuple(torch.randn(B, ch, H // s, W // s, generator=g)
                  for ch, s in zip(in_channels, (4, 8, 16, 32)))
    x = dict(img_feats=feats, word_feats=torch.randn(B, L, text_channels, generator=g),
             word_mask=torch.tensor([[1] * L, [1] * (L - 2) + [0] * 2]))
    samples = [DetDataSample(metainfo=dict(img_shape=(H, W), pad_shape=(H, W),
                                           batch_input_shape=(H, W))) for _ in range(B)]
    return x, samples


def max_diffs(a, b):
    return [(u - v).abs().max().item() for u, v in zip(a, b)]


@pytest.fixture(scope='module', params=[3, 4], ids=['K3', 'K4'])
def pair(request):
    head, m2f, hc = build_pair(request.param)
    load_into(m2f, head.state_dict())
    x, samples = inputs(hc.in_channels, hc.text_channels)
    with torch.no_grad():
        ref = m2f(list(x['img_feats']), samples)[1]
    return head, m2f, x, samples, ref


def test_pixel_decoder_equals_mmdet(pair):
    head, m2f, x, _, _ = pair
    with torch.no_grad():
        (fa, ma), (fb, mb) = (m.pixel_decoder(list(x['img_feats'])) for m in (head, m2f))
    assert [t.shape[-2:] for t in mb] == [(4, 3), (8, 6), (16, 12)] and fb.shape[-2:] == (32, 24)
    for a, b in zip([fa, *ma], [fb, *mb]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_mask_logits_per_layer(pair):
    head, _, x, samples, ref = pair
    # guard: the masks block most keys and some rows entirely (the unblocking is exercised)
    sizes = [(4, 3), (8, 6), (16, 12)]
    blocked = [F.interpolate(m, sizes[i % 3], mode='bilinear').flatten(2).sigmoid() < 0.5
               for i, m in enumerate(ref[:-1])]
    assert any(b.all(-1).any() for b in blocked) and all(not b.all() for b in blocked)
    with torch.no_grad():
        out = head(x, samples)[1]
    assert len(out) == len(ref) == len(head.decoder.layers) + 1
    assert max(max_diffs(out, ref)) <= ATOL


def _no_unblock(orig):
    def fwd(self, query, text, text_mask, mask_feature, size):
        res = orig(self, query, text, text_mask, mask_feature, size)
        am = F.interpolate(res[1], size, mode='bilinear').flatten(2).sigmoid() < 0.5
        return res[:-1] + (am.repeat_interleave(self.num_heads, 0), )
    return fwd


def _heads_misordered(orig):
    def fwd(self, query, text, text_mask, mask_feature, size):
        res = orig(self, query, text, text_mask, mask_feature, size)
        return res[:-1] + (res[-1][::self.num_heads].repeat(self.num_heads, 1, 1), )
    return fwd


@pytest.mark.parametrize('mutation', ['no_unblock', 'levels_reversed', 'heads_misordered'])
def test_mutations_are_caught(pair, mutation, monkeypatch):
    head, _, x, samples, ref = pair
    if mutation == 'levels_reversed':
        pd_fwd = head.pixel_decoder.forward
        monkeypatch.setattr(head.pixel_decoder, 'forward',
                            lambda feats: (lambda r: (r[0], r[1][::-1]))(pd_fwd(feats)))
    else:
        wrap = _no_unblock if mutation == 'no_unblock' else _heads_misordered
        monkeypatch.setattr(InstAlignHead, '_forward_head', wrap(InstAlignHead._forward_head))
    with torch.no_grad():
        out = head(x, samples)[1]
    assert max(max_diffs(out, ref)) > 1000 * ATOL


@pytest.mark.parametrize('text_mode', ['bidirectional', 'query_only'])
def test_text_decoder_with_zeroed_text_attention(text_mode):
    """q2t output projection zeroed: Q <- q2t_norm(pixel_norm(.)); with pixel_norm's affine
    the identity, q2t_norm takes Mask2Former's norms[0] role (t2q never reaches Q)."""
    head, m2f, hc = build_pair(4, text_mode)
    with torch.no_grad():
        for layer in head.decoder.layers:
            for p in layer.q2t_attn.out_proj.parameters():
                p.zero_()
            layer.pixel_norm.weight.fill_(1)
            layer.pixel_norm.bias.zero_()
    sd = {k.replace('.q2t_norm.', '.pixel_norm.'): v for k, v in head.state_dict().items()
          if '.pixel_norm.' not in k}
    load_into(m2f, sd)
    x, samples = inputs(hc.in_channels, hc.text_channels)
    with torch.no_grad():
        out, ref = head(x, samples)[1], m2f(list(x['img_feats']), samples)[1]
    assert max(max_diffs(out, ref)) <= ATOL_TEXT
