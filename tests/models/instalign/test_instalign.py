"""InstAlign head + detector on a tiny model: targets, matching, losses, predictions."""
import copy

import pytest
import torch
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmengine.structures import InstanceData, PixelData

from mmrefer.utils.setup_env import register_all_modules

register_all_modules()

from mmrefer.models import RefDataPreprocessor  # noqa: E402
from mmrefer.registry import MODELS  # noqa: E402


def tiny_model_cfg(tokenizer_dir=None, vocab_size=300, **head_overrides):
    c = 16
    head = dict(
        type='InstAlignHead', in_channels=[16, 32, 64, 128], feat_channels=c, num_queries=5,
        num_transformer_feat_level=3,
        pixel_decoder=dict(
            type='MSDeformAttnPixelDecoder', num_outs=3, norm_cfg=dict(type='GN', num_groups=4),
            act_cfg=dict(type='ReLU'),
            encoder=dict(num_layers=1, layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=c, num_heads=2, num_levels=3, num_points=2,
                                   batch_first=True),
                ffn_cfg=dict(embed_dims=c, feedforward_channels=32, num_fcs=2,
                             act_cfg=dict(type='ReLU', inplace=True)))),
            positional_encoding=dict(num_feats=c // 2, normalize=True)),
        decoder=dict(num_layers=3, num_heads=2, ffn_dims=32),
        positional_encoding=dict(num_feats=c // 2, normalize=True))
    head.update(head_overrides)
    return dict(
        type='InstAlign',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
        backbone=dict(type='SwinTransformer', embed_dims=16, depths=[1, 1, 1, 1],
                      num_heads=[1, 2, 4, 8], window_size=4, out_indices=(0, 1, 2, 3)),
        text_encoder=dict(type='HFTextEncoder', tokenizer_dir=tokenizer_dir, max_length=8,
                          arch=dict(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=32,
                                    max_position_embeddings=16)),
        head=head,
        train_cfg=dict(assigner=dict(type='HungarianAssigner', match_costs=[
            dict(type='ScoreBCECost', weight=2.0),
            dict(type='CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
            dict(type='DiceCost', weight=5.0, pred_act=True, eps=1.0),
            dict(type='PhraseAlignmentCost', weight=1.0)])),
        test_cfg=dict(extras_topk=3, words_topk=2))


def make_sample(text, rects, img_shape=(32, 32), pad_shape=(32, 32), no_target=None):
    """DetDataSample with one BitmapMask per rect (y0, y1, x0, x1) at img_shape."""
    h, w = img_shape
    masks = torch.zeros(len(rects), h, w, dtype=torch.uint8)
    for k, (y0, y1, x0, x1) in enumerate(rects):
        masks[k, y0:y1, x0:x1] = 1
    boxes = torch.tensor([[x0, y0, x1, y1] for y0, y1, x0, x1 in rects],
                         dtype=torch.float32).reshape(-1, 4)
    s = DetDataSample(metainfo=dict(text=text, no_target=not rects if no_target is None
                                    else no_target, img_shape=img_shape,
                                    ori_shape=img_shape, batch_input_shape=pad_shape,
                                    pad_shape=pad_shape, img_path=f'{text}.jpg'))
    s.gt_instances = InstanceData(bboxes=boxes, masks=BitmapMasks(masks.numpy(), h, w),
                                  labels=torch.zeros(len(rects), dtype=torch.long))
    s.gt_merged_mask = PixelData(data=masks.amax(0, keepdim=True) if len(rects)
                                 else torch.zeros(1, h, w, dtype=torch.uint8))
    return s


def batch(samples, pad_shape=(32, 32)):
    """Images and copies of the samples as ``RefDataPreprocessor`` hands them to the model in
    training (GT padded to the batch shape)."""
    torch.manual_seed(0)
    samples = RefDataPreprocessor.pad_ref_gt([copy.deepcopy(s) for s in samples], pad_shape)
    return torch.randn(len(samples), 3, *pad_shape), samples



@pytest.fixture(scope='module')
def tok_dir(tmp_path_factory):
    from model_helpers import make_bpe_dir
    return make_bpe_dir(tmp_path_factory.mktemp('tok'),
                        ['the red circle', 'all green squares', 'blue thing left'])


def _model(tok_dir, **kw):
    torch.manual_seed(0)
    m = MODELS.build(tiny_model_cfg(tok_dir, **kw))
    m.init_weights()
    return m


def test_gt_masks_reach_matcher_padded_not_zeroed(tok_dir):
    model = _model(tok_dir)
    seen = []
    orig = model.head.instance_loss.batch_cost

    def spy(pred, gt):
        seen.append(gt.masks.clone())
        return orig(pred, gt)

    model.head.instance_loss.batch_cost = spy
    # image 20x24 padded to 32x32; rects on the 4-px grid so the 1/4 target is exact
    s1 = make_sample('the red circle', [(4, 12, 8, 20), (12, 20, 0, 4)], img_shape=(20, 24))
    s2 = make_sample('blue thing left', [], img_shape=(20, 24))
    inputs, samples = batch([s1, s2])
    losses = model.loss(inputs, samples)
    assert all(torch.isfinite(v) for v in losses.values())
    k = model.head.decoder.num_layers + 1  # deep supervision: every block + the initial query
    # one cost matrix per layer, the batch's GT against all queries: s1's two masks (the
    # no-target s2 adds none)
    assert len(seen) == k
    m = seen[-1]
    assert m.shape == (2, 8, 8)
    expected = torch.zeros(2, 8, 8)
    expected[0, 1:3, 2:5] = 1
    expected[1, 3:5, 0:1] = 1
    assert torch.equal(m, expected)


def test_no_target_samples_match_nothing(tok_dir):
    model = _model(tok_dir)
    results = []
    orig = model.head.instance_loss.get_targets_layers

    def spy(*args):
        r = orig(*args)
        results.append(r)  # per layer: (score targets [B, N], matched queries, GT masks, P)
        return r

    model.head.instance_loss.get_targets_layers = spy
    s1 = make_sample('the red circle', [(0, 8, 0, 8)])
    s2 = make_sample('all green squares', [])
    inputs, samples = batch([s1, s2])
    model.loss(inputs, samples)
    assert len(results) == 1  # every layer matched in one call
    n = model.head.num_queries
    assert len(results[0]) == model.head.decoder.num_layers + 1
    for score_t, pos, mask_t, num_pos in results[0]:
        assert num_pos == 1 and len(pos) == 1 and 0 <= int(pos[0]) < n  # a query of image 0
        assert score_t[0].sum() == 1 and score_t[0, pos[0]] == 1 and score_t[1].sum() == 0
        assert mask_t.shape[0] == 1 and mask_t.sum() > 0


def test_losses_finite_all_no_target_and_backward(tok_dir):
    model = _model(tok_dir)
    inputs, samples = batch([make_sample('all green squares', []),
                             make_sample('blue thing left', [])])
    losses = model.loss(inputs, samples)
    for name in ('loss_merged_bce', 'loss_merged_dice', 'loss_score', 'loss_mask', 'loss_dice',
                 'loss_phrase', 'loss_no_target', 'd0.loss_score'):
        assert name in losses and torch.isfinite(losses[name]), name
    assert losses['loss_mask'] == 0 and losses['loss_phrase'] == 0
    sum(losses.values()).backward()
    assert model.head.no_target_predictor.mlp[0].weight.grad is not None


def test_loss_values_follow_the_formulas(tok_dir):
    """Final-block losses recomputed by hand from the head's raw outputs."""
    import torch.nn.functional as F
    model = _model(tok_dir).eval()
    s = make_sample('the red circle', [(4, 12, 8, 20)])
    x, samples = batch([s])
    outs = model.head(model.extract_feat(x, samples), samples)
    losses = model.head.loss_by_feat(*outs, samples)
    out = dict(zip(('score_logits', 'masks', 'merged', 'phrase_cost', 'relevance'),
                   (o[-1] for o in outs[:5])))
    nt = outs[-1]
    gt_small = torch.zeros(1, 8, 8)
    gt_small[0, 1:3, 2:5] = 1
    _, q, _, _ = model.head.instance_loss.get_targets(
        out['score_logits'], out['masks'], out['phrase_cost'],
        [InstanceData(masks=gt_small, labels=torch.zeros(1, dtype=torch.long))], [{}])
    t = torch.zeros(1, 5)
    t[0, q] = 1
    # Eq. 7: lambda_score = 2 on the matched query (inside L_match), 1 on the unmatched ones;
    # the mean over the B x N queries
    score = F.binary_cross_entropy_with_logits(out['score_logits'], t, reduction='none')
    expected = torch.where(t > 0, 2 * score, score).mean()
    assert losses['loss_score'].item() == pytest.approx(expected.item(), rel=1e-5)
    pm = out['masks'][0, q].flatten(1)
    bce = F.binary_cross_entropy_with_logits(pm, gt_small.flatten(1))
    assert losses['loss_mask'].item() == pytest.approx(5 * bce.item(), rel=1e-5)
    p = pm.sigmoid()
    dice = 1 - (2 * (p * gt_small.flatten(1)).sum() + 1) / (p.sum() + gt_small.sum() + 1)
    assert losses['loss_dice'].item() == pytest.approx(5 * dice.item(), rel=1e-5)
    assert losses['loss_phrase'].item() == pytest.approx(out['phrase_cost'][0, q].item(),
                                                          rel=1e-5)
    merged = F.interpolate(out['merged'][:, None], (32, 32), mode='bilinear',
                           align_corners=False)[:, 0]
    gt_m = s.gt_merged_mask.data.float()
    mb = F.binary_cross_entropy_with_logits(merged.flatten(), gt_m.flatten())
    assert losses['loss_merged_bce'].item() == pytest.approx(5 * mb.item(), rel=1e-5)
    ntl = F.binary_cross_entropy_with_logits(nt, torch.zeros(1))
    assert losses['loss_no_target'].item() == pytest.approx(0.1 * ntl.item(), rel=1e-5)
    # AIA on the head's raw outputs
    prelu = model.head.aggregation.prelu
    exp = torch.einsum('bn,bnhw->bhw', out['score_logits'].sigmoid(), prelu(out['masks']))
    assert torch.allclose(out['merged'], exp, atol=1e-5)


@pytest.mark.parametrize('overrides', [
    dict(instance_supervision=False),
    dict(phrase_alignment=False),
    dict(aggregation=dict(type='AdaptiveInstanceAggregation', mode='threshold')),
    dict(decoder=dict(num_layers=2, num_heads=2, ffn_dims=32, text_mode='none')),
    dict(decoder=dict(num_layers=2, num_heads=2, ffn_dims=32, text_mode='query_only')),
    dict(no_target_predictor=dict(type='NoTargetPredictor', inputs='qmean')),
    dict(deep_supervision=False, masked_attention=False),
])
def test_ablation_switches_train(tok_dir, overrides):
    model = _model(tok_dir, **overrides)
    inputs, samples = batch([make_sample('the red circle', [(0, 8, 0, 8), (16, 24, 16, 24)]),
                             make_sample('all green squares', [])])
    losses = model.loss(inputs, samples)
    assert all(torch.isfinite(v) for v in losses.values())
    has_inst = 'loss_score' in losses
    assert has_inst == overrides.get('instance_supervision', True)
    assert ('loss_phrase' in losses) == (has_inst and overrides.get('phrase_alignment', True))
    assert any(k.startswith('d0.') for k in losses) == overrides.get('deep_supervision', True)
    sum(losses.values()).backward()


def test_predict_contract(tok_dir):
    model = _model(tok_dir).eval()
    s1 = make_sample('the red circle', [(4, 12, 8, 20)], img_shape=(20, 24))
    s2 = make_sample('all green squares', [], img_shape=(20, 24))
    inputs, samples = batch([s1, s2])
    with torch.no_grad():
        out = model.predict(inputs, samples)
    for s in out:
        assert s.pred_mask.dtype == torch.bool and s.pred_mask.shape == (20, 24)
        assert isinstance(s.pred_no_target, bool)
        assert s.pred_box.shape == (4, )
        assert isinstance(s.pred_score, float)
        ex = s.pred_extras
        assert ex['inst_masks'].shape == (3, 20, 24) and ex['inst_scores'].shape == (3, )
        assert ex['inst_masks'].dtype == torch.float32  # probabilities, mapped back bilinearly
        assert s.pred_prob.shape == (20, 24) and s.pred_prob.dtype == torch.float32
        assert torch.equal(s.pred_mask, (s.pred_prob > s.pred_mask_thr) & ~s.pred_no_target)
        assert (ex['inst_scores'][:-1] >= ex['inst_scores'][1:]).all()
        assert len(ex['aligned_words']) == 3
        assert all(w not in ('<s>', '</s>', '<pad>') for ws in ex['aligned_words'] for w in ws)
        if s.pred_no_target:
            assert not s.pred_mask.any()
    # forcing the no-target decision empties the mask and keeps the segmentation aside
    model.head.post_processor.mask_thr = -1.0  # every pixel above threshold
    model.head.post_processor.nt_thr = -1.0
    with torch.no_grad():
        out = model.predict(*batch([s1]))
    assert out[0].pred_no_target and not out[0].pred_mask.any()
    assert out[0].pred_box.tolist() == [0, 0, 0, 0]
    assert out[0].pred_mask_ungated.shape == (20, 24) and out[0].pred_mask_ungated.all()
    model.head.post_processor.nt_thr = 2.0  # never fires: no ungated copy
    with torch.no_grad():
        out = model.predict(*batch([s1]))
    assert not out[0].pred_no_target and out[0].pred_mask.all()
    assert 'pred_mask_ungated' not in out[0]
    # a targeted answer with an empty mask: the shared box rule (mmdet mask2bbox) gives zeros,
    # as for Latent-VG (test_latentvg_head.test_empty_mask_box_is_all_zeros)
    model.head.post_processor.mask_thr = 2.0
    with torch.no_grad():
        out = model.predict(*batch([s1]))
    assert not out[0].pred_no_target and not out[0].pred_mask.any()
    assert out[0].pred_box.tolist() == [0, 0, 0, 0]


def test_forward_tensor_mode_without_tokenizer():
    from mmdet.structures import DetDataSample
    model = _model('/nonexistent')
    with pytest.warns(UserWarning, match='dummy'):
        merged, nt = model._forward(torch.randn(1, 3, 32, 32),
                                    [DetDataSample(metainfo=dict(text='a'))])
    assert merged[-1].shape == (1, 8, 8) and nt.shape == (1, )
    with pytest.raises(FileNotFoundError):
        model.loss(*batch([make_sample('the red circle', [(0, 8, 0, 8)])]))


def test_missing_text_is_a_clear_error(tok_dir):
    from mmdet.structures import DetDataSample
    model = _model(tok_dir)
    with pytest.raises(KeyError, match='text'):
        model.extract_feat(torch.zeros(1, 3, 32, 32),
                           [DetDataSample(metainfo=dict(img_path='x.jpg'))])


def test_initial_prediction_instance_supervision_switch(tok_dir):
    model = _model(tok_dir, supervise_initial_instances=False)
    inputs, samples = batch([make_sample('the red circle', [(0, 8, 0, 8)])])
    losses = model.loss(inputs, samples)
    assert 'd0.loss_merged_bce' in losses and 'd0.loss_score' not in losses
    assert 'd1.loss_score' in losses and 'loss_score' in losses


def test_intermediate_instance_supervision_switch(tok_dir):
    model = _model(tok_dir, supervise_intermediate_instances=False)
    inputs, samples = batch([make_sample('the red circle', [(0, 8, 0, 8)])])
    losses = model.loss(inputs, samples)
    # merged loss on every block, L_inst on the initial and the final prediction only
    n_blocks = len(model.head.decoder.layers)
    for k in range(1, n_blocks):
        assert f'd{k}.loss_merged_bce' in losses and f'd{k}.loss_score' not in losses
    assert 'd0.loss_score' in losses and 'loss_score' in losses and 'loss_mask' in losses
