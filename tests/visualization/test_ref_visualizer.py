"""RefLocalVisualizer: pixels change exactly where masks are, extras panels, PNG and backends."""
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import PixelData

from mmrefer.registry import VISUALIZERS
from mmrefer.structures import prediction_to_original
from mmrefer.visualization import RefLocalVisualizer

H0, W0 = 48, 64


def image():
    rng = np.random.RandomState(0)
    return (rng.rand(H0, W0, 3) * 80 + 40).astype(np.uint8)


def block_mask():
    m = np.zeros((H0, W0), bool)
    m[10:30, 20:50] = True
    return m


@pytest.fixture()
def vis():
    name = f'test_vis_{np.random.randint(1 << 30)}'
    return VISUALIZERS.build(dict(type='RefLocalVisualizer', name=name, min_size=96))


def panel(canvas, layout, name):
    x, y, w, h = layout[name]
    return canvas[y:y + h, x:x + w].astype(int)


def test_pred_mask_changes_pixels_only_where_the_mask_is(vis):
    img, mask = image(), block_mask()
    empty = vis.draw_ref(img, 'the block', pred=dict(mask=np.zeros_like(mask), score=None))
    with_mask = vis.draw_ref(img, 'the block', pred=dict(mask=mask, score=None))
    layout = vis.layout
    assert empty.shape == with_mask.shape
    f = layout['pred'][2] // W0  # integer enlargement (min_size=96 -> 2)
    assert f == 2
    diff = np.abs(panel(with_mask, layout, 'pred') - panel(empty, layout, 'pred')).sum(-1) > 0
    big = np.repeat(np.repeat(mask, f, 0), f, 1)
    # outside the mask nothing changes, except where the label box sits (top-left corner)
    label_h = 30
    outside = diff & ~big
    outside[:label_h] = False
    assert not outside.any()
    inside = diff & big
    assert inside.sum() > 0.95 * big.sum()


def test_gt_next_to_pred_with_title_and_box(vis):
    img, mask = image(), block_mask()
    pred = dict(mask=mask, box=[20, 10, 50, 30], no_target=False, score=0.9)
    gt = dict(mask=mask, box=[20, 10, 50, 30], no_target=False)
    canvas = vis.draw_ref(img, 'the block in the middle', pred=pred, gt=gt)
    lay = vis.layout
    assert set(lay) == {'title', 'gt', 'pred'}
    assert lay['gt'][0] < lay['pred'][0] and lay['gt'][1] == lay['pred'][1]
    title = panel(canvas, lay, 'title')
    assert (title < 128).any() and (title == 255).mean() > 0.5  # black text on white
    g, p = panel(canvas, lay, 'gt'), panel(canvas, lay, 'pred')
    # mask colours: green-dominant in GT, red-dominant in the prediction
    f = lay['gt'][2] // W0
    cy, cx = 20 * f, 35 * f
    assert g[cy, cx, 1] > g[cy, cx, 0] and p[cy, cx, 0] > p[cy, cx, 1]


def test_no_target_is_written(vis):
    img = image()
    plain = vis.draw_ref(img, 'nothing', pred=dict(mask=np.zeros((H0, W0), bool), score=None))
    nt = vis.draw_ref(img, 'nothing', pred=dict(mask=np.zeros((H0, W0), bool), no_target=True,
                                                score=None))
    lay = vis.layout
    x, y, w, h = lay['pred']
    centre = (slice(y + h // 3, y + 2 * h // 3), slice(x + w // 6, x + 5 * w // 6))
    assert (plain[centre] != nt[centre]).any()


def record_labels(vis, monkeypatch):
    labels = []
    original = vis._label

    def spy(text, *args, **kwargs):
        labels.append(text)
        return original(text, *args, **kwargs)

    monkeypatch.setattr(vis, '_label', spy)
    return labels


def test_extras_panels(vis, monkeypatch):
    img = image()
    labels = record_labels(vis, monkeypatch)
    maps = np.stack([np.linspace(0, 1, W0)[None].repeat(H0, 0)] * 3).astype(np.float32)
    vis.draw_ref(img, 's', pred=dict(mask=block_mask(), score=0.5,
                                     extras=dict(expr_maps=maps, subject_index=1)))
    assert [k for k in vis.layout if k.startswith('expr')] == [
        'expr_maps_0', 'expr_maps_1', 'expr_maps_2']
    assert labels[-3:] == ['sentence | subject #1', 'latent 1', 'latent 2']
    inst = np.stack([block_mask(), ~block_mask(), block_mask()]).astype(np.float32)
    canvas = vis.draw_ref(img, 's', pred=dict(
        mask=block_mask(), score=0.5,
        extras=dict(inst_masks=inst, inst_scores=np.array([0.2, 0.9, 0.5]),
                    aligned_words=[['a'], ['b'], ['c']])))
    inst_panels = [k for k in vis.layout if k.startswith('inst_')]
    assert inst_panels == ['inst_masks_1', 'inst_masks_2', 'inst_masks_0']  # by descending score
    assert labels[-3:] == ['q1 0.90 b', 'q2 0.50 c', 'q0 0.20 a']
    # extras are off on request
    vis.draw_ref(img, 's', pred=dict(mask=block_mask(), score=0.5, extras=dict(expr_maps=maps)),
                 show_extras=False)
    assert not any(k.startswith('expr_') for k in vis.layout)
    assert canvas.dtype == np.uint8


def test_extras_panels_are_generic(vis, monkeypatch):
    """Any float/bool [K, H, W] extra at the image size is drawn, labelled key[k]: floats as
    heatmaps, bools as mask overlays (pixels change only inside the mask); other extras are
    not drawn; at most max_extra_panels panels."""
    img = image()
    labels = record_labels(vis, monkeypatch)
    heat = np.stack([np.linspace(0, 1, W0)[None].repeat(H0, 0)] * 2).astype(np.float32)
    canvas = vis.draw_ref(img, 's', pred=dict(mask=None, score=None, extras=dict(
        foo_maps=heat, bar_mask=block_mask(), empty=np.zeros((H0, W0), bool),
        ids=np.arange(H0 * W0).reshape(H0, W0), small=np.zeros((2, 5, 5), np.float32),
        note='x')))
    names = [k for k in vis.layout if k not in ('title', 'pred')]
    assert names == ['foo_maps_0', 'foo_maps_1', 'bar_mask_0', 'empty_0']
    assert labels[-4:] == ['foo_maps[0]', 'foo_maps[1]', 'bar_mask[0]', 'empty[0]']
    bar, empty = panel(canvas, vis.layout, 'bar_mask_0'), panel(canvas, vis.layout, 'empty_0')
    diff = np.abs(bar - empty).sum(-1) > 0
    h, w = diff.shape
    assert (h, w) == (H0, W0)  # half of the x2 enlarged image: the block is where it was
    diff[:20] = False  # the label
    assert diff.any() and not (diff & ~block_mask()).any()
    # the heat panel changes the whole picture, left (blue) to right (red)
    hp = panel(canvas, vis.layout, 'foo_maps_0')
    assert hp[h // 2, 2, 2] > hp[h // 2, 2, 0] and hp[h // 2, w - 3, 0] > hp[h // 2, w - 3, 2]
    vis.max_extra_panels = 3
    vis.draw_ref(img, 's', pred=dict(mask=None, score=None, extras=dict(
        foo_maps=heat, bar_mask=block_mask(), empty=np.zeros((H0, W0), bool))))
    assert [k for k in vis.layout if k not in ('title', 'pred')] == [
        'foo_maps_0', 'foo_maps_1', 'bar_mask_0']


def make_sample(no_target=False, with_prob=False):
    """Prediction and GT at img_shape 32x32 for an original 48x64 image (stretch resize)."""
    ds = DetDataSample(metainfo=dict(
        img_path='x.png', text='the block', sent_id=3, ori_shape=(H0, W0), img_shape=(32, 32),
        scale_factor=(32 / W0, 32 / H0), letterbox=None, no_target=no_target))
    m = torch.zeros(32, 32, dtype=torch.bool)
    m[8:20, 10:25] = True
    ds.pred_mask = m
    if with_prob:  # a soft edge one pixel wide around the mask
        prob = torch.nn.functional.max_pool2d(m[None].float(), 3, 1, 1)[0] * 0.4
        ds.pred_prob, ds.pred_mask_thr = torch.maximum(prob, m.float()), 0.5
    ds.pred_box = torch.tensor([10., 8., 25., 20.])
    ds.pred_no_target = False
    ds.pred_score = 0.7
    ds.pred_extras = dict(expr_maps=torch.rand(2, 32, 32), subject_index=0)
    ds.gt_merged_mask = PixelData(data=m[None].to(torch.uint8))
    ds.gt_ref_bbox = torch.tensor([10., 8., 25., 20.])
    return ds


def test_sample_to_dicts_maps_to_original():
    pred, gt = RefLocalVisualizer.sample_to_dicts(make_sample(), (H0, W0))
    assert pred['mask'].shape == (H0, W0) and gt['mask'].shape == (H0, W0)
    np.testing.assert_allclose(pred['box'], [20., 12., 50., 30.])
    np.testing.assert_allclose(gt['box'], [20., 12., 50., 30.])
    assert pred['extras']['expr_maps'].shape == (2, H0, W0)
    ys, xs = np.nonzero(pred['mask'])
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (20, 50, 12, 30)


def test_sample_to_dicts_is_the_inferencer_postprocessing():
    """The drawn prediction is prediction_to_original's (from pred_prob when present)."""
    sample = make_sample(with_prob=True)
    pred, _ = RefLocalVisualizer.sample_to_dicts(sample, (H0, W0))
    ref = prediction_to_original(sample)
    assert set(pred) == set(ref)
    np.testing.assert_array_equal(pred['mask'], ref['mask'])
    assert pred['box'] == ref['box'] and pred['score'] == ref['score']
    # the soft edge (0.4) widens the mask compared with the bool-only path
    bool_only, _ = RefLocalVisualizer.sample_to_dicts(make_sample(), (H0, W0))
    assert pred['mask'].sum() > bool_only['mask'].sum()
    assert not (bool_only['mask'] & ~pred['mask']).any()
    with pytest.raises(ValueError, match=r'image is \(40, 64\).*ori_shape \(48, 64\)'):
        RefLocalVisualizer.sample_to_dicts(sample, (40, 64))


def test_add_datasample_writes_png_that_differs_where_the_mask_is(vis, tmp_path):
    img = image()
    out = str(tmp_path / 'sub' / 'vis.png')
    drawn = vis.add_datasample('x', img, data_sample=make_sample(), out_file=out,
                               show_extras=False)
    assert osp.isfile(out)
    png = cv2.imread(out)[..., ::-1]
    np.testing.assert_array_equal(png, drawn)
    sample = make_sample()
    sample.pred_mask = torch.zeros(32, 32, dtype=torch.bool)
    sample.pred_box = torch.zeros(4)
    ref = vis.add_datasample('x', img, data_sample=sample, out_file=str(tmp_path / 'e.png'),
                             show_extras=False)
    lay = vis.layout
    f = lay['pred'][2] // W0
    diff = np.abs(panel(png, lay, 'pred') - panel(ref, lay, 'pred')).sum(-1) > 0
    m = np.zeros((H0, W0), bool)
    m[12:30, 20:50] = True
    big = np.repeat(np.repeat(m, f, 0), f, 1)
    assert (diff & big).sum() > 0.9 * big.sum()
    # the GT panel is the same in both
    np.testing.assert_array_equal(panel(png, lay, 'gt'), panel(ref, lay, 'gt'))


def test_add_datasample_goes_to_local_backend(tmp_path):
    vis = RefLocalVisualizer(name='test_vis_backend', vis_backends=[dict(type='LocalVisBackend')],
                             save_dir=str(tmp_path), min_size=64)
    vis.add_datasample('val_ref', image(), data_sample=make_sample(), step=7)
    files = [osp.join(r, f) for r, _, fs in __import__('os').walk(tmp_path) for f in fs]
    assert any(f.endswith('val_ref_7.png') for f in files), files
