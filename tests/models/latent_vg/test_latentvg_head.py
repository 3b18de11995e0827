"""LatentVGHead: averaged map, 2*BCE + 0.5*Dice, contrastive and no-target losses, predictions."""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmdet.structures import DetDataSample
from mmengine.structures import PixelData

from mmrefer.models import RefDataPreprocessor
from mmrefer.models.latent_vg.latentvg_head import LatentVGHead
from mmrefer.utils import register_all_modules
from test_contrastive_losses import _loop_loss

register_all_modules()


def _padded(samples):
    """Copies of the samples as ``RefDataPreprocessor`` hands them to the loss: the GT padded
    to the batch shape (``batch_input_shape``)."""
    samples = copy.deepcopy(samples)
    return RefDataPreprocessor.pad_ref_gt(samples, samples[0].metainfo['batch_input_shape'])


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


def _inputs(B=2, Q=3):
    torch.manual_seed(1)
    return dict(patch_feats=torch.randn(B, 16, 2, 2), class_tokens=torch.randn(B, 3, 16)[:, :Q],
                memory=torch.randn(B, 7, 16), memory_mask=torch.zeros(B, 7, dtype=torch.bool))


def test_forward_shapes():
    head = _head()
    mask_logits, class_embeds, nt = head(_inputs())
    assert mask_logits.shape == (2, 3, 8, 8)  # 1/16 -> 1/4
    assert class_embeds.shape == (2, 3, 16) and nt is None
    with pytest.raises(ValueError, match='num_class_tokens'):
        head(_inputs(Q=2))


def test_losses_match_hand_computation():
    head = _head(no_target_predictor=dict(type='EmptyTokenPredictor', embed_dims=16,
                                          num_heads=2))
    mask_logits, q, nt_logits = head(_inputs())
    samples = _samples()
    losses = head.loss_by_feat(mask_logits, q, nt_logits, _padded(samples))
    # the logits are resized to the batch shape first, then sigmoid, then the mean (= predict)
    p = F.interpolate(mask_logits, size=(16, 16), mode='bilinear',
                      align_corners=False).sigmoid().mean(1).flatten(1)
    g = torch.stack([ds.gt_merged_mask.data[0] for ds in samples]).float().flatten(1)
    bce = F.binary_cross_entropy(p, g)
    torch.testing.assert_close(losses['loss_mask'], 2.0 * bce, rtol=1e-4, atol=1e-5)
    eps = 1e-3  # the paper's plain Dice (mmdet DiceLoss, naive_dice=True)
    dice = 1 - (2 * (p * g).sum(1) + eps) / (p.sum(1) + g.sum(1) + eps)
    torch.testing.assert_close(losses['loss_dice'], 0.5 * dice.mean(), rtol=1e-4, atol=1e-5)
    # the paper's loss (gamma 0.2, tau 0.07, weight 1) between t_o = q[:, 0] and the z_o^i,
    # written out as a loop (tests/models/latent_vg/test_contrastive_losses.py)
    ref = _loop_loss(q[:, 0].detach(), q[:, 1:].detach(), lambda s: min(1.0, 0.2 + s), 0.07)
    assert float(losses['loss_contrastive']) == pytest.approx(ref, rel=1e-5)
    nt = F.binary_cross_entropy_with_logits(nt_logits, torch.tensor([0., 1.]))
    torch.testing.assert_close(losses['loss_no_target'], 0.5 * nt)
    sum(losses.values()).backward()
    assert head.no_target_predictor.empty_token.grad is not None


def test_single_token_head_has_no_contrastive_loss():
    head = _head(num_class_tokens=1)
    assert set(head.loss(_inputs(Q=1), _padded(_samples()))) == {'loss_mask', 'loss_dice'}


def test_predict_mask_box_and_no_target():
    head = _head(no_target_predictor=dict(type='EmptyTokenPredictor', embed_dims=16,
                                          num_heads=2))
    logits = torch.full((2, 3, 4, 4), -8.0)
    logits[:, :, 1:3, 0:2] = 8.0      # all three maps agree on a block
    logits[:, 0, 3, 3] = 8.0          # one map alone: mean sigmoid ~ 1/3 < 0.5
    samples = _samples(size=16, no_target=(False, False))
    for ds in samples:
        ds.set_metainfo(dict(img_shape=(12, 16)))
    head.predict_by_feat(logits, None, torch.tensor([-5.0, 5.0]), samples,
                         subject_index=torch.tensor([2, 4]))
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
    torch.testing.assert_close(a.pred_prob, up.mean(1)[0, :12])
    torch.testing.assert_close(a.pred_extras['expr_maps'], up[0, :, :12])
    assert a.pred_extras['subject_index'] == 2
    # the empty token fires: all-zero mask; the segmentation is kept for ReLA's cIoU union
    assert b.pred_no_target is True and not b.pred_mask.any()
    assert torch.equal(b.pred_mask_ungated, expected) and 'pred_mask_ungated' not in a
    assert b.pred_score == pytest.approx(torch.sigmoid(torch.tensor(5.0)).item())


def _mixed_batch(pad=16):
    """A landscape (10 x 16) and a portrait (16 x 10) sample in one padded 16 x 16 batch, as the
    data preprocessor pads them (bottom / right)."""
    samples = []
    for (h, w) in ((10, 16), (16, 10)):
        gt = torch.zeros(1, h, w, dtype=torch.uint8)
        gt[0, h // 4:h // 2 + 2, w // 4:w // 2 + 2] = 1
        ds = DetDataSample(metainfo=dict(img_shape=(h, w), batch_input_shape=(pad, pad),
                                         no_target=False))
        ds.gt_merged_mask = PixelData(data=gt)
        samples.append(ds)
    return samples


def test_loss_reads_each_sample_in_its_img_shape_region():
    """Loss geometry = predict geometry: logits at the batch shape, each sample cropped to its
    img_shape; whatever the model predicts on the padding does not change the loss, and the
    loss equals BCE / Dice computed on the crops."""
    head = _head(num_class_tokens=1)
    samples = _mixed_batch()
    torch.manual_seed(3)
    logits = torch.randn(2, 1, 16, 16)
    loss = head.loss_by_feat(logits, None, None, _padded(samples))
    crops_p, crops_g = [], []
    for i, ds in enumerate(samples):
        h, w = ds.metainfo['img_shape']
        crops_p.append(logits[i, 0, :h, :w].sigmoid().flatten())
        crops_g.append(ds.gt_merged_mask.data[0].float().flatten())
    bce = F.binary_cross_entropy(torch.cat(crops_p), torch.cat(crops_g))
    torch.testing.assert_close(loss['loss_mask'], 2.0 * bce, rtol=1e-4, atol=1e-5)
    eps = 1e-3
    dice = torch.stack([1 - (2 * (p * g).sum() + eps) / (p.sum() + g.sum() + eps)
                        for p, g in zip(crops_p, crops_g)])
    torch.testing.assert_close(loss['loss_dice'], 0.5 * dice.mean(), rtol=1e-4, atol=1e-5)
    garbage = logits.clone()
    garbage[0, :, 10:] = 50.0   # below the landscape image
    garbage[1, :, :, 10:] = 50.0  # right of the portrait image
    other = head.loss_by_feat(garbage, None, None, _padded(samples))
    for k in loss:
        torch.testing.assert_close(other[k], loss[k])


def test_letterboxed_landscape_and_portrait_batch_trains_on_the_right_pixels():
    """A tiny Latent-VG fits a batch of a landscape and a portrait image padded to one shape:
    its predictions, read back in each image's own region, match that image's ground truth."""
    from mmrefer.models.latent_vg.latent_vg import LatentVG
    torch.manual_seed(0)
    dims = 32
    model = LatentVG(
        backbone=dict(type='BEiT3', arch=dict(embed_dims=dims, num_layers=2, num_heads=2,
                                              ffn_ratio=2), img_size=32, patch_size=8,
                      vocab_size=16, max_text_len=16, num_latent_groups=0, pos_init_std=0.02),
        head=dict(type='LatentVGHead', in_channels=dims, num_class_tokens=1, feat_channels=16,
                  embed_dims=16, extra_upsamples=1, num_decoder_layers=0, mlp_hidden_dims=dims,
                  loss_contrastive=None),
        tokenizer=dict(type='BEiT3Tokenizer', spm_path=None, max_length=6),
        data_preprocessor=dict(type='RefDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3,
                               pad_size_divisor=32))
    imgs, samples = [], []
    for k, (h, w) in enumerate(((20, 32), (32, 20))):  # landscape, portrait
        img = torch.full((3, h, w), 40, dtype=torch.uint8)
        gt = torch.zeros(1, h, w, dtype=torch.uint8)
        y0, x0 = (4, 18) if k == 0 else (18, 4)  # a square far from the padding's side
        img[:, y0:y0 + 8, x0:x0 + 8] = 220
        gt[0, y0:y0 + 8, x0:x0 + 8] = 1
        ds = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), no_target=False,
                                         input_ids=torch.tensor([0, 5, 7, 2, 1, 1])))
        ds.gt_merged_mask = PixelData(data=gt)
        imgs.append(img)
        samples.append(ds)
    gts = [ds.gt_merged_mask.data[0].bool() for ds in samples]  # before the batch padding
    data = model.data_preprocessor(dict(inputs=imgs, data_samples=samples), training=True)
    assert data['inputs'].shape[-2:] == (32, 32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(80):
        loss = sum(model.loss(data['inputs'], data['data_samples']).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model.predict(data['inputs'], data['data_samples'])
    for ds, gt in zip(out, gts):
        assert ds.pred_mask.shape == gt.shape
        iou = (ds.pred_mask & gt).sum() / (ds.pred_mask | gt).sum().clamp(min=1)
        assert iou > 0.8, (ds.metainfo['img_shape'], float(iou))


def test_empty_mask_box_is_all_zeros():
    """The box rule shared with InstAlign (mmdet's mask2bbox): an empty mask has the all-zero
    box (no fallback to weaker pixels), so RECMetric scores both models alike."""
    head = _head(num_class_tokens=1)
    samples = _samples(n=1, no_target=(False, ))
    head.predict_by_feat(torch.full((1, 1, 16, 16), -9.0), None, None, samples)
    assert not samples[0].pred_mask.any() and samples[0].pred_no_target is False
    assert samples[0].pred_box.tolist() == [0.0, 0.0, 0.0, 0.0]
    assert samples[0].pred_prob.max() < 0.5 and samples[0].pred_mask_thr == 0.5


def test_extra_upsamples_doubles_resolution():
    head = _head(extra_upsamples=1)
    assert head(_inputs())[0].shape == (2, 3, 16, 16)


def test_expression_loss_weight_supervises_every_map():
    """expression_loss_weight w: w * mean_j (2 BCE + 0.5 Dice) of each sigmoid(m_j) over the
    sample regions, besides the averaged map's losses (which stay as they were)."""
    samples = _mixed_batch()
    torch.manual_seed(3)
    logits = torch.randn(2, 3, 16, 16)
    base = _head(loss_contrastive=None).loss_by_feat(logits, None, None, _padded(samples))
    head = _head(loss_contrastive=None, expression_loss_weight=0.5)
    losses = head.loss_by_feat(logits, None, None, _padded(samples))
    for k in base:
        torch.testing.assert_close(losses[k], base[k])
    eps = 1e-3
    bce, dice = [], []
    for j in range(3):
        pj, gj = [], []
        for i, ds in enumerate(samples):
            h, w = ds.metainfo['img_shape']
            pj.append(logits[i, j, :h, :w].sigmoid().flatten())
            gj.append(ds.gt_merged_mask.data[0].float().flatten())
        bce.append(F.binary_cross_entropy(torch.cat(pj), torch.cat(gj)))
        dice.append(torch.stack([1 - (2 * (p * g).sum() + eps) / (p.sum() + g.sum() + eps)
                                 for p, g in zip(pj, gj)]).mean())
    torch.testing.assert_close(losses['loss_mask_expr'], 0.5 * 2.0 * torch.stack(bce).mean(),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(losses['loss_dice_expr'], 0.5 * 0.5 * torch.stack(dice).mean(),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match='expression_loss_weight must be >= 0'):
        _head(expression_loss_weight=-1)
