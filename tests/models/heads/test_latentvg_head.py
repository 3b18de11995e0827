"""LatentVGHead: averaged map, 2*BCE + 0.5*Dice, contrastive and no-target losses, predictions."""
import pytest
import torch
import torch.nn.functional as F
from mmdet.structures import DetDataSample
from mmengine.structures import PixelData

from mmrefer.models.heads.latentvg_head import LatentVGHead, mask_to_box
from mmrefer.models.losses.positive_margin_contrastive import PositiveMarginContrastiveLoss
from mmrefer.utils import register_all_modules

register_all_modules()


def _head(**kw):
    torch.manual_seed(0)
    cfg = dict(in_channels=16, num_class_tokens=3, feat_channels=8, embed_dims=8,
               num_decoder_layers=1, decoder_heads=2, decoder_ffn_dims=32, mlp_hidden_dims=16)
    cfg.update(kw)
    return LatentVGHead(**cfg)


def _samples(n=2, size=16, no_target=(False, True)):
    out = []
    for i in range(n):
        gt = torch.zeros(1, size, size, dtype=torch.uint8)
        if not no_target[i]:
            gt[0, 2:9, 3:12] = 1
        ds = DetDataSample(metainfo=dict(img_shape=(size, size), batch_input_shape=(size, size),
                                         no_target=no_target[i]))
        ds.gt_merged_mask = PixelData(data=gt)
        out.append(ds)
    return out


def _inputs(B=2):
    torch.manual_seed(1)
    return (torch.randn(B, 16, 2, 2), torch.randn(B, 3, 16), torch.randn(B, 7, 16),
            torch.zeros(B, 7, dtype=torch.bool))


def test_forward_shapes_and_mean_prob():
    head = _head()
    outs = head(*_inputs())
    assert outs['mask_logits'].shape == (2, 3, 8, 8)  # 1/16 -> 1/4
    assert outs['class_embeds'].shape == (2, 3, 16) and outs['no_target_logits'] is None
    prob = head.mean_prob(outs['mask_logits'])
    torch.testing.assert_close(prob, outs['mask_logits'].sigmoid().mean(1))
    with pytest.raises(ValueError, match='num_class_tokens'):
        head(torch.randn(2, 16, 2, 2), torch.randn(2, 2, 16), torch.randn(2, 7, 16))


def test_losses_match_hand_computation():
    head = _head(empty_token=dict(type='EmptyTokenPredictor', embed_dims=16, num_heads=2))
    outs = head(*_inputs())
    samples = _samples()
    losses = head.loss(outs, samples)
    p = F.interpolate(outs['mask_logits'].sigmoid().mean(1, keepdim=True), size=(16, 16),
                      mode='bilinear', align_corners=False)[:, 0].flatten(1)
    g = torch.stack([ds.gt_merged_mask.data[0] for ds in samples]).float().flatten(1)
    bce = F.binary_cross_entropy(p, g)
    torch.testing.assert_close(losses['loss_mask'], 2.0 * bce, rtol=1e-4, atol=1e-5)
    eps = 1e-3  # mmdet DiceLoss (naive_dice=False)
    dice = 1 - 2 * (p * g).sum(1) / ((p * p).sum(1) + eps + (g * g).sum(1) + eps)
    torch.testing.assert_close(losses['loss_dice'], 0.5 * dice.mean(), rtol=1e-4, atol=1e-5)
    q = outs['class_embeds']
    torch.testing.assert_close(losses['loss_contrast'],
                               PositiveMarginContrastiveLoss()(q[:, 0], q[:, 1:]))
    nt = F.binary_cross_entropy_with_logits(outs['no_target_logits'], torch.tensor([0., 1.]))
    torch.testing.assert_close(losses['loss_no_target'], 0.5 * nt)
    sum(losses.values()).backward()
    assert head.empty_token.empty_token.grad is not None


def test_single_token_head_has_no_contrastive_loss():
    head = _head(num_class_tokens=1)
    inputs = _inputs()
    outs = head(inputs[0], inputs[1][:, :1], inputs[2], inputs[3])
    assert set(head.loss(outs, _samples())) == {'loss_mask', 'loss_dice'}


def test_predict_mask_box_and_no_target():
    head = _head(empty_token=dict(type='EmptyTokenPredictor', embed_dims=16, num_heads=2))
    logits = torch.full((2, 3, 4, 4), -8.0)
    logits[:, :, 1:3, 0:2] = 8.0      # all three maps agree on a block
    logits[:, 0, 3, 3] = 8.0          # one map alone: mean sigmoid ~ 1/3 < 0.5
    outs = dict(mask_logits=logits, class_embeds=None,
                no_target_logits=torch.tensor([-5.0, 5.0]))
    samples = _samples(size=16, no_target=(False, False))
    for ds in samples:
        ds.set_metainfo(dict(img_shape=(12, 16)))
    head.predict(outs, samples, subject_index=torch.tensor([2, 4]))
    up = F.interpolate(logits, size=(16, 16), mode='bilinear', align_corners=False).sigmoid()
    expected = up.mean(1)[0, :12] > 0.5
    a, b = samples
    assert a.pred_mask.shape == (12, 16) and a.pred_mask.dtype == torch.bool
    assert torch.equal(a.pred_mask, expected)
    ys, xs = torch.nonzero(expected, as_tuple=True)
    assert a.pred_box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1,
                                   ys.max().item() + 1]
    assert a.pred_no_target is False and 0 < a.pred_score <= 1
    assert a.pred_extras['expr_maps'].shape == (3, 12, 16)
    assert a.pred_extras['subject_index'] == 2
    # the empty token fires: all-zero mask; the segmentation is kept for ReLA's cIoU union
    assert b.pred_no_target is True and not b.pred_mask.any()
    assert torch.equal(b.pred_mask_ungated, expected) and 'pred_mask_ungated' not in a
    assert b.pred_score == pytest.approx(torch.sigmoid(torch.tensor(5.0)).item())


def test_mask_to_box():
    m = torch.zeros(6, 8, dtype=torch.bool)
    m[1:4, 2:7] = True
    assert mask_to_box(m).tolist() == [2, 1, 7, 4]
    prob = torch.zeros(6, 8)
    prob[5, 0] = 0.3
    assert mask_to_box(torch.zeros_like(m), prob).tolist() == [0, 5, 1, 6]
    assert mask_to_box(torch.zeros_like(m)).tolist() == [0, 0, 0, 0]


def test_extra_upsamples_doubles_resolution():
    head = _head(extra_upsamples=1)
    assert head(*_inputs())['mask_logits'].shape == (2, 3, 16, 16)
