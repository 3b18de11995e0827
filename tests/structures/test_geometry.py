"""mmrefer.structures.geometry: exactness on real-sized polygons, hand-computed cases, errors,
and the one post-processing step ``prediction_to_original``."""
import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
import torch.nn.functional as F
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks

from mmrefer.datasets.transforms import RefResize
from mmrefer.structures import (box_to_original, content_region, maps_to_original,
                                mask_to_original, pred_mask_to_original, prediction_to_original)

PLAIN = dict(ori_shape=(4, 6), img_shape=(8, 12), scale_factor=(2.0, 2.0), letterbox=None)
# 6x4 image letterboxed into 12x12: s = 2, content 12x8 at pad (left=0, top=2)
LETTER = dict(ori_shape=(4, 6), img_shape=(12, 12), scale_factor=(2.0, 2.0),
              letterbox=dict(pad=(0, 2), scale=2.0))
# a 1x2 original stretched to 1x4 (x2 along x): bilinear (align_corners=False) gives
# out[j] = p[0], 0.75 p[0] + 0.25 p[1], 0.25 p[0] + 0.75 p[1], p[1]
ROW = dict(ori_shape=(1, 4), img_shape=(1, 2), scale_factor=(0.5, 1.0), letterbox=None)


# ------------------------------------------------------------------ perfect polygons come back
# (h0, w0) of the original, (W, H) given to RefResize, letterbox
SCALES = [((427, 640), (480, 480), False), ((333, 500), (480, 480), False),
          ((640, 427), (480, 480), False), ((480, 640), (480, 480), True),
          ((500, 375), (384, 512), True), ((375, 500), (384, 512), True)]
SIZES = {'10-40 px': (10, 40), '60-200 px': (60, 200)}


def random_polygon(rng, h0, w0, lo, hi, star):
    """8-30 vertices at sorted random angles, radius 1 (convex) or 0.55-1 (star), scaled so that
    sqrt(area) (the COCO notion of object size) is uniform in [lo, hi] original pixels."""
    n = int(rng.integers(8, 31))
    theta = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = rng.uniform(0.55, 1.0, n) if star else np.ones(n)
    xy = np.stack([r * np.cos(theta), r * np.sin(theta)], 1)
    x, y = xy.T
    area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
    xy *= rng.uniform(lo, hi) / np.sqrt(area)
    ext = np.abs(xy).max() + 1
    centre = [rng.uniform(ext, w0 - ext), rng.uniform(ext, h0 - ext)]
    return (xy + centre).reshape(-1).tolist()


def nearest_to_original(mask, meta):
    """The old path (kept here for comparison): floor-nearest on the binary mask."""
    top, left, h, w = content_region(meta)
    crop = mask[top:top + h, left:left + w].float()
    return F.interpolate(crop[None, None], size=tuple(meta['ori_shape'][:2]),
                         mode='nearest')[0, 0] > 0.5


def iou(a, b):
    return float((a & b).sum() / (a | b).sum())


def test_perfect_polygon_prediction_comes_back_at_the_original_size():
    """The ground truth rasterised at the input size is a perfect prediction; mapped back as a
    0/1 float map (bilinear, > 0.5) it must match the mask pycocotools decodes at the original
    size. The metainfo and the input-size mask come from RefResize itself (ReLA's polygon
    protocol: vertices scaled and shifted by the letterbox pad, rasterised by pycocotools)."""
    rng = np.random.default_rng(0)
    pooled = {name: ([], []) for name in SIZES}
    for (h0, w0), scale, letterbox in SCALES:
        resize = RefResize(scale=scale, letterbox=letterbox, gt_mask_resize='polygon')
        for name, (lo, hi) in SIZES.items():
            new, old = [], []
            for k in range(50):
                poly = random_polygon(rng, h0, w0, lo, hi, star=k % 2 == 0)
                rle = mask_utils.merge(mask_utils.frPyObjects([poly], h0, w0))
                truth = torch.from_numpy(mask_utils.decode(rle)).bool()
                res = resize(dict(img=np.zeros((h0, w0, 3), np.uint8), gt_segms=[[poly]],
                                  gt_masks=BitmapMasks(truth.numpy()[None].astype(np.uint8),
                                                       h0, w0),
                                  gt_merged_mask=truth.numpy().astype(np.uint8)))
                meta = dict(ori_shape=(h0, w0), img_shape=res['img_shape'],
                            scale_factor=res['scale_factor'], letterbox=res['letterbox'])
                pred = torch.from_numpy(res['gt_merged_mask']).float()
                assert pred.shape == (scale[1], scale[0])
                new.append(iou(mask_to_original(pred, meta), truth))
                old.append(iou(nearest_to_original(pred, meta), truth))
            print(f'{h0}x{w0} -> {scale[1]}x{scale[0]} letterbox={letterbox} {name}: mean IoU '
                  f'bilinear {np.mean(new):.4f} (min {np.min(new):.3f}), old nearest '
                  f'{np.mean(old):.4f}')
            pooled[name][0].extend(new), pooled[name][1].extend(old)
            if name == '10-40 px':
                assert np.mean(new) > np.mean(old), (h0, w0, scale)
    for name, (new, old) in pooled.items():
        print(f'all scales {name}: mean IoU bilinear {np.mean(new):.4f}, old nearest '
              f'{np.mean(old):.4f} ({len(new)} polygons)')
    assert np.mean(pooled['10-40 px'][0]) >= 0.955
    assert np.mean(pooled['60-200 px'][0]) >= 0.99
    assert np.mean(pooled['10-40 px'][0]) > np.mean(pooled['10-40 px'][1])


# ------------------------------------------------------------------ hand-computed cases
def test_content_region():
    assert content_region(PLAIN) == (0, 0, 8, 12)
    assert content_region(LETTER) == (2, 0, 8, 12)
    meta = dict(ori_shape=(480, 640), img_shape=(480, 480), scale_factor=(0.75, 0.75),
                letterbox=dict(pad=(0, 60), scale=0.75))
    assert content_region(meta) == (60, 0, 360, 480)
    # mmdet's Resize writes no letterbox key: the stretch case
    assert content_region(dict(img_shape=(8, 12))) == (0, 0, 8, 12)


def test_integer_downscale_is_exact():
    m = torch.zeros(8, 12, dtype=torch.bool)
    m[2:6, 4:10] = True  # rows 1..2, cols 2..4 at the original size
    exp = torch.zeros(4, 6, dtype=torch.bool)
    exp[1:3, 2:5] = True
    assert torch.equal(mask_to_original(m, PLAIN), exp)
    # x3 along x, x2 along y: bilinear samples the centre column of every triple
    meta = dict(ori_shape=(3, 5), img_shape=(6, 15), scale_factor=(3.0, 2.0), letterbox=None)
    m = torch.zeros(6, 15, dtype=torch.bool)
    m[:, 3:6] = True
    out = mask_to_original(m, meta)
    assert out.shape == (3, 5) and out[:, 1].all() and out.sum() == 3


def test_letterbox_padding_is_cropped():
    m = torch.zeros(12, 12, dtype=torch.bool)
    m[0:2] = True  # padding only: must vanish
    m[4:6, 0:4] = True  # rows (4-2)/2 = 1, cols 0..1
    exp = torch.zeros(4, 6, dtype=torch.bool)
    exp[1, 0:2] = True
    assert torch.equal(mask_to_original(m, LETTER), exp)
    # a 1x2 image padded by 2 columns on the left: without the crop the padding would be
    # averaged in (out[0] = mean(1, 1) = 1); with it out = [p2, p3]
    meta = dict(ori_shape=(1, 2), img_shape=(1, 4), scale_factor=(1.0, 1.0),
                letterbox=dict(pad=(2, 0), scale=1.0))
    prob = torch.tensor([[1.0, 1.0, 0.0, 1.0]])
    assert mask_to_original(prob, meta).tolist() == [[False, True]]
    np.testing.assert_allclose(maps_to_original(prob[None], meta).numpy(), [[[0.0, 1.0]]])


def test_bilinear_upsampling_threshold_and_bool_input():
    prob = torch.tensor([[0.45, 0.9]])
    np.testing.assert_allclose(maps_to_original(prob, ROW).numpy(),
                               [[0.45, 0.5625, 0.7875, 0.9]])
    assert mask_to_original(prob, ROW).tolist() == [[False, True, True, True]]
    assert mask_to_original(prob, ROW, thr=0.6).tolist() == [[False, False, True, True]]
    assert mask_to_original(prob, ROW, thr=0.95).tolist() == [[False] * 4]
    # the binarised mask loses the 0.45: [0, 1] -> [0, 0.25, 0.75, 1]
    bool_mask = prob > 0.5
    assert mask_to_original(bool_mask, ROW).tolist() == [[False, False, True, True]]
    assert mask_to_original(bool_mask.numpy(), ROW).tolist() == [[False, False, True, True]]


def test_maps_keep_leading_dims():
    maps = torch.zeros(2, 3, 8, 12)
    maps[1, 2, 2:6, 4:10] = 1.0
    out = maps_to_original(maps, PLAIN)
    assert out.shape == (2, 3, 4, 6) and out.dtype == torch.float32
    assert out[1, 2, 1:3, 2:5].min() == 1.0 and out.sum() == 6
    assert maps_to_original(np.zeros((0, 12, 12), np.float32), LETTER).shape == (0, 4, 6)


def test_boxes():
    b = torch.tensor([2., 4., 10., 8.])
    torch.testing.assert_close(box_to_original(b, PLAIN), torch.tensor([1., 2., 5., 4.]))
    torch.testing.assert_close(box_to_original(b, LETTER), torch.tensor([1., 1., 5., 3.]))
    # clipped to the original image; the empty-mask box (zeros) stays zeros with a letterbox
    torch.testing.assert_close(box_to_original(torch.tensor([-4., 0., 30., 30.]), PLAIN),
                               torch.tensor([0., 0., 6., 4.]))
    torch.testing.assert_close(box_to_original(torch.zeros(4), LETTER), torch.zeros(4))
    many = torch.tensor([[0., 2., 12., 10.], [2., 4., 10., 8.]])
    assert box_to_original(many, LETTER).shape == (2, 4)
    # RefResize's own forward map (non-integer scales, stretched and letterboxed) is undone
    box0 = np.array([[37.5, 12.25, 301.0, 240.5]], np.float32)
    for letterbox in (False, True):
        out = RefResize(scale=(480, 480), letterbox=letterbox)(
            dict(img=np.zeros((333, 500, 3), np.uint8), gt_bboxes=box0.copy()))
        meta = dict(ori_shape=(333, 500), img_shape=out['img_shape'],
                    scale_factor=out['scale_factor'], letterbox=out['letterbox'])
        torch.testing.assert_close(box_to_original(torch.from_numpy(out['gt_bboxes']), meta),
                                   torch.from_numpy(box0), atol=1e-3, rtol=0)


def test_errors_name_the_key_or_the_shapes():
    with pytest.raises(KeyError, match='ori_shape'):
        mask_to_original(torch.zeros(8, 12), dict(img_shape=(8, 12)))
    with pytest.raises(KeyError, match='img_shape'):
        mask_to_original(torch.zeros(8, 12), dict(ori_shape=(4, 6)))
    with pytest.raises(KeyError, match='scale_factor'):
        content_region({k: v for k, v in LETTER.items() if k != 'scale_factor'})
    with pytest.raises(KeyError, match='scale_factor'):
        box_to_original(torch.zeros(4), dict(ori_shape=(4, 6), img_shape=(8, 12)))
    with pytest.raises(ValueError, match=r'\(5, 5\) does not match img_shape \(8, 12\)'):
        mask_to_original(torch.zeros(5, 5, dtype=torch.bool), PLAIN)
    with pytest.raises(ValueError, match=r'\(2, 8, 12\) does not match img_shape \(8, 12\)'):
        mask_to_original(torch.zeros(2, 8, 12), PLAIN)
    with pytest.raises(ValueError, match=r'\(2, 3, 5\) does not match img_shape \(8, 12\)'):
        maps_to_original(torch.zeros(2, 3, 5), PLAIN)
    with pytest.raises(ValueError, match='do not fit in img_shape'):
        content_region(dict(LETTER, letterbox=dict(pad=(0, 6), scale=2.0)))
    with pytest.raises(ValueError, match='thr'):
        mask_to_original(torch.zeros(8, 12), PLAIN, thr='0.5')
    with pytest.raises(ValueError, match=r'\[4\] or \[n, 4\]'):
        box_to_original(torch.zeros(3), PLAIN)


# ------------------------------------------------------------------ prediction_to_original
def predicted_sample(with_prob=True, no_target=False, letterbox=False):
    """1x2 input -> 1x4 original (ROW), or the same content letterboxed into a 3x2 input."""
    meta = dict(ROW, text='the thing', img_path='x.jpg')
    prob = torch.tensor([[0.45, 0.9]])
    if letterbox:
        meta.update(img_shape=(3, 2), letterbox=dict(pad=(0, 1), scale=None))
        prob = torch.cat([torch.ones(1, 2), prob, torch.ones(1, 2)])
    ds = DetDataSample(metainfo=meta)
    ungated = prob > 0.5
    if with_prob:
        ds.pred_prob = prob
        ds.pred_mask_thr = 0.5
    ds.pred_mask = torch.zeros_like(ungated) if no_target else ungated
    if no_target:
        ds.pred_mask_ungated = ungated
    ds.pred_no_target = no_target
    box = torch.tensor([1.0, 0.0, 2.0, 1.0]) + letterbox * torch.tensor([0., 1., 0., 1.])
    ds.pred_box = torch.zeros(4) if no_target else box
    ds.pred_score = torch.tensor(0.8)
    h, w = meta['img_shape']
    ds.pred_extras = dict(foo_maps=torch.stack([prob, 1 - prob]), bar_mask=prob > 0.5,
                          inst_scores=torch.tensor([0.3, 0.7]), subject_index=torch.tensor(1),
                          aligned_words=[['a'], []], other=torch.zeros(5, h + 1, w))
    return ds


@pytest.mark.parametrize('letterbox', [False, True])
def test_prediction_to_original_from_the_probability(letterbox):
    ds = predicted_sample(letterbox=letterbox)
    out = prediction_to_original(ds)
    assert set(out) == {'text', 'mask', 'box', 'no_target', 'score', 'extras'}
    assert out['text'] == 'the thing' and out['no_target'] is False
    assert out['score'] == pytest.approx(0.8)
    assert out['mask'].dtype == bool and out['mask'].tolist() == [[False, True, True, True]]
    assert out['box'] == [2.0, 0.0, 4.0, 1.0]
    ex = out['extras']
    # generic: any extra whose last two dims are img_shape is mapped, whatever its name
    np.testing.assert_allclose(ex['foo_maps'][:, 0], [[0.45, 0.5625, 0.7875, 0.9],
                                                      [0.55, 0.4375, 0.2125, 0.1]], atol=1e-6)
    assert ex['bar_mask'].dtype == bool and ex['bar_mask'].tolist() == [[False, False, True,
                                                                         True]]
    assert isinstance(ex['inst_scores'], np.ndarray) and ex['subject_index'] == 1
    assert isinstance(ex['subject_index'], int) and ex['aligned_words'] == [['a'], []]
    assert ex['other'].shape == (5, ds.img_shape[0] + 1, 2)  # not a map at img_shape: untouched
    # a higher threshold from the head is used
    ds.pred_mask_thr = 0.6
    assert prediction_to_original(ds)['mask'].tolist() == [[False, False, True, True]]
    # the metric's view (to_dict) gives the same answer
    d = prediction_to_original(ds.to_dict())
    assert d['mask'].tolist() == [[False, False, True, True]] and d['box'] == out['box']


def test_prediction_to_original_without_pred_prob():
    out = prediction_to_original(predicted_sample(with_prob=False))
    assert out['mask'].tolist() == [[False, False, True, True]]  # the bool mask at 0.5
    assert out['box'] == [2.0, 0.0, 4.0, 1.0]


@pytest.mark.parametrize('with_prob', [True, False])
def test_no_target_gating(with_prob):
    ds = predicted_sample(with_prob=with_prob, no_target=True)
    out = prediction_to_original(ds)
    assert out['no_target'] is True and out['mask'].shape == (1, 4) and not out['mask'].any()
    assert out['box'] == [0.0, 0.0, 0.0, 0.0]
    assert out['extras']['foo_maps'].shape == (2, 1, 4)
    assert not pred_mask_to_original(ds).any()
    # the ungated mask (GRES's FP union): from pred_prob, or pred_mask_ungated without it
    exp = [[False, True, True, True]] if with_prob else [[False, False, True, True]]
    assert pred_mask_to_original(ds, ungated=True).tolist() == exp
    # a model that flags but does not clear (and has no pred_prob): its mask is used as given
    if not with_prob:
        ds.pred_mask = ds.pred_mask_ungated
        del ds.pred_mask_ungated
        assert pred_mask_to_original(ds).tolist() == exp
        assert not prediction_to_original(ds)['mask'].any()  # the answer is still "nothing"


def test_prediction_to_original_errors():
    ds = predicted_sample(with_prob=False)
    del ds.pred_mask
    with pytest.raises(KeyError, match="'pred_prob' nor 'pred_mask'"):
        pred_mask_to_original(ds)
    assert prediction_to_original(ds)['mask'] is None  # box-only models still map their box
    with pytest.raises(TypeError, match='DetDataSample or a dict'):
        prediction_to_original([1, 2])
    bad = predicted_sample()
    bad.pred_box = torch.zeros(2, 4)
    with pytest.raises(ValueError, match=r'pred_box must be one xyxy box \[4\], got shape \(2, 4'):
        prediction_to_original(bad)
    bad = predicted_sample()
    bad.pred_extras = [1]
    with pytest.raises(TypeError, match='pred_extras'):
        prediction_to_original(bad)


# ----------------------------------------------- other resizes, letterbox bands (geometry audit)
@pytest.mark.parametrize('ori,side', [((333, 500), 250), ((5, 960), 480), ((425, 640), 320),
                                      ((640, 425), 320), ((427, 640), 480), ((481, 479), 97)])
def test_letterbox_size_rounds_half_up_like_mmcv(ori, side):
    """RefResize(letterbox=True) gives the content mmdet's Resize(keep_ratio=True) gives: the
    new size rounded half up (mmcv.rescale_size), e.g. 333 rows x 0.5 -> 167, not 166."""
    import mmcv
    h0, w0 = ori
    res = RefResize(scale=(side, side), letterbox=True)(
        dict(img=np.zeros((h0, w0, 3), np.uint8), ori_shape=ori))
    nw, nh = mmcv.rescale_size((w0, h0), (side, side))
    assert content_region(res) == ((side - nh) // 2, (side - nw) // 2, nh, nw)
    assert res['img'].shape[:2] == (side, side)


def test_mmdet_keep_ratio_resize_then_pad():
    """mmdet's Pad sets img_shape to the padded shape: the content is the top-left
    round(h0 * h_scale) x round(w0 * w_scale), and only it is mapped back."""
    from mmdet.datasets.transforms import Pad, Resize
    res = Resize(scale=(480, 480), keep_ratio=True)(
        dict(img=np.zeros((427, 640, 3), np.uint8), img_shape=(427, 640), ori_shape=(427, 640)))
    res = Pad(size=(480, 480))(res)
    meta = dict(img_shape=res['img_shape'], ori_shape=res['ori_shape'],
                scale_factor=res['scale_factor'])
    assert meta['img_shape'] == (480, 480)
    assert content_region(meta) == (0, 0, 320, 480)
    prob = torch.rand(480, 480, generator=torch.Generator().manual_seed(0))
    # independent: OpenCV's bilinear (half-pixel centres) of the content in float64; pixels
    # within 1e-5 of the threshold, where float32 rounding may decide, are left out
    up = cv2.resize(prob[:320, :480].double().numpy(), (640, 427), interpolation=cv2.INTER_LINEAR)
    sure = np.abs(up - 0.5) > 1e-5
    assert sure.mean() > 0.999
    ours = mask_to_original(prob, meta).numpy()
    assert ours.shape == (427, 640)
    np.testing.assert_array_equal(ours[sure], up[sure] > 0.5)
    # mmdet's Resize alone (no Pad) and RefResize's stretch: the whole input
    assert content_region(dict(meta, img_shape=(320, 480))) == (0, 0, 320, 480)
    assert content_region(PLAIN) == (0, 0, 8, 12)


def test_post_processor_reads_only_the_letterbox_content():
    """Foreground in a letterbox band is no image pixel: pred_mask, pred_box and pred_score
    ignore it, so the box is the box of the mask that comes back at the original size."""
    from mmrefer.models.post_processing import RefPostProcessor
    res = RefResize(scale=(480, 480), letterbox=True)(
        dict(img=np.zeros((427, 640, 3), np.uint8), ori_shape=(427, 640)))
    meta = {k: res[k] for k in ('img_shape', 'ori_shape', 'scale_factor', 'letterbox')}
    top, left, h, w = content_region(meta)
    assert (top, left, h, w) == (80, 0, 320, 480)
    prob = torch.zeros(480, 480)
    prob[150:250, 100:200] = 0.9  # the object
    prob[:40] = 0.7  # the top band
    prob[440:] = 0.7  # the bottom band
    ds = DetDataSample(metainfo=meta)
    RefPostProcessor()([ds], prob[None])
    assert not ds.pred_mask[:top].any() and not ds.pred_mask[top + h:].any()
    assert ds.pred_box.tolist() == [100, 150, 200, 250]
    assert ds.pred_score == pytest.approx(0.9)
    out = prediction_to_original(ds)
    ys, xs = np.nonzero(np.asarray(out['mask']))
    np.testing.assert_allclose(np.asarray(out['box']),
                               [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=1)
