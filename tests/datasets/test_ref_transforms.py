"""Pipeline: dataset -> LoadRefImageFromFile -> LoadRefAnnotations -> RefResize ->
(TokenizeText) -> PackRefInputs, checked against independently computed values."""
import cv2
import mmcv
import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmengine.dataset import Compose
from mmengine.structures import PixelData
from PIL import Image
import pycocotools.mask as mask_utils
from pycocotools.coco import COCO

from mmrefer.datasets import GRefCOCODataset, RefCOCODataset
from mmrefer.datasets.transforms import (LoadRefAnnotations, LoadRefImageFromFile,
                                         PackRefInputs, RefResize, TokenizeText)
from mmrefer.structures import box_to_original, mask_to_original
from mmrefer.utils import register_all_modules

register_all_modules()


def _pipeline(scale, letterbox=False, keep_ori_gt=True):
    return [dict(type='LoadRefImageFromFile'), dict(type='LoadRefAnnotations'),
            dict(type='RefResize', scale=scale, letterbox=letterbox),
            dict(type='PackRefInputs', keep_ori_gt=keep_ori_gt)]


def _grefs(root, pipeline):
    return GRefCOCODataset(data_root=str(root), ann_file='instances.json', split='val',
                           data_prefix=dict(img_path='images/'), pipeline=pipeline)


def _by_sent(ds):
    return {ds.get_data_info(i)['sent_id']: ds[i] for i in range(len(ds))}


def test_pack_fields_and_shapes(mini_root):
    ds = _grefs(mini_root, _pipeline((32, 24)))
    out = _by_sent(ds)
    multi = out[0]
    inputs, ds0 = multi['inputs'], multi['data_samples']
    assert isinstance(ds0, DetDataSample)
    assert inputs.dtype == torch.uint8 and inputs.shape == (3, 24, 32)
    gi = ds0.gt_instances
    assert isinstance(gi.masks, BitmapMasks) and gi.masks.masks.shape == (2, 24, 32)
    assert gi.bboxes.shape == (2, 4) and gi.bboxes.dtype == torch.float32
    assert gi.labels.tolist() == [0, 0]
    assert isinstance(ds0.gt_merged_mask, PixelData)
    assert ds0.gt_merged_mask.data.shape == (1, 24, 32)
    assert ds0.gt_merged_mask.data.dtype == torch.uint8
    # boxes scaled by (32/50, 24/40): ann 1 [5,5,20,20], ann 2 [30,25,45,35]
    sx, sy = 32 / 50, 24 / 40
    torch.testing.assert_close(gi.bboxes, torch.tensor(
        [[5 * sx, 5 * sy, 20 * sx, 20 * sy], [30 * sx, 25 * sy, 45 * sx, 35 * sy]]))
    torch.testing.assert_close(ds0.gt_ref_bbox, torch.tensor([5 * sx, 5 * sy, 45 * sx, 35 * sy]))
    meta = ds0.metainfo
    assert meta['text'] == 'The two boxes' and meta['no_target'] is False
    assert (meta['img_id'], meta['ref_id'], meta['sent_id']) == (11, 10, 0)
    assert meta['source'] == 'grefcoco' and meta['letterbox'] is None
    assert tuple(meta['ori_shape']) == (40, 50) and tuple(meta['img_shape']) == (24, 32)
    np.testing.assert_allclose(meta['scale_factor'], (sx, sy))
    assert meta['img_path'].endswith('a.png')
    # masks intact after resize: merged == nearest-resized union of the pycocotools masks
    coco = COCO(str(mini_root / 'instances.json'))
    union = coco.annToMask(coco.anns[1]) | coco.annToMask(coco.anns[2])
    np.testing.assert_array_equal(ds0.ori_gt_merged_mask.data[0].numpy(), union)
    # LAVT/DMMI: PIL nearest on the decoded mask (pixel-centre sampling)
    exp = np.array(Image.fromarray(union).resize((32, 24), Image.NEAREST))
    np.testing.assert_array_equal(ds0.gt_merged_mask.data[0].numpy(), exp)
    np.testing.assert_array_equal(gi.masks.masks.any(0), exp.astype(bool))
    torch.testing.assert_close(ds0.ori_gt_ref_bbox, torch.tensor([5., 5., 45., 35.]))
    # no-target sample
    nt = out[1]['data_samples']
    assert nt.metainfo['no_target'] is True
    assert len(nt.gt_instances) == 0 and nt.gt_instances.masks.masks.shape == (0, 24, 32)
    assert nt.gt_instances.bboxes.shape == (0, 4)
    assert nt.gt_merged_mask.data.sum() == 0 and nt.gt_ref_bbox.tolist() == [0, 0, 0, 0]


def _scaled_ann_mask(coco, ann_id, fx, fy, ox, oy, h, w):
    """pycocotools' annToMask of a polygon annotation whose vertices are scaled/shifted (what
    detectron2's ResizeTransform + polygons_to_bitmask do in ReLA)."""
    ann = dict(coco.anns[ann_id])
    ann['segmentation'] = [[v * fx + ox if k % 2 == 0 else v * fy + oy for k, v in enumerate(p)]
                           for p in ann['segmentation']]
    img = dict(coco.imgs[ann['image_id']], height=h, width=w)
    coco2 = COCO()
    coco2.dataset = dict(images=[img], annotations=[ann], categories=coco.dataset['categories'])
    coco2.createIndex()
    return coco2.annToMask(ann)


@pytest.mark.parametrize('letterbox,scale', [(False, (32, 24)), (False, (123, 77)),
                                             (True, (100, 100))])
def test_gt_mask_resize_polygon_rasterises_scaled_polygons(mini_root, letterbox, scale):
    """ReLA protocol: polygons scaled then rasterised at the input size; RLE masks resized with
    PIL-style nearest."""
    pipe = _pipeline(scale, letterbox=letterbox)
    pipe[2]['gt_mask_resize'] = 'polygon'
    out = _by_sent(_grefs(mini_root, pipe))[0]['data_samples']
    W, H = scale
    coco = COCO(str(mini_root / 'instances.json'))
    if letterbox:
        s = min(W / 50, H / 40)
        nw, nh = int(round(50 * s)), int(round(40 * s))
        ox, oy = (W - nw) // 2, (H - nh) // 2
    else:
        nw, nh, ox, oy = W, H, 0, 0
    poly = _scaled_ann_mask(coco, 1, nw / 50, nh / 40, ox, oy, H, W)  # ann 1: polygon
    rle = np.zeros((H, W), np.uint8)  # ann 2: compressed RLE -> nearest
    rle[oy:oy + nh, ox:ox + nw] = np.array(
        Image.fromarray(coco.annToMask(coco.anns[2])).resize((nw, nh), Image.NEAREST))
    masks = out.gt_instances.masks.masks
    np.testing.assert_array_equal(masks[0], poly)
    np.testing.assert_array_equal(masks[1], rle)
    np.testing.assert_array_equal(out.gt_merged_mask.data[0].numpy(), poly | rle)
    assert poly.sum() > 0


def test_polygon_and_nearest_protocols_differ_on_slanted_edges():
    """The two GT protocols are not interchangeable: a triangle rasterised at 31x23 after
    scaling differs on its slanted edges from the 50x40 mask resized by nearest."""
    from mmrefer.datasets.transforms.resize import rasterize_polygons, resize_mask_nearest
    tri = [[4.0, 35.0, 45.0, 33.0, 20.0, 3.0]]
    full = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(tri, 40, 50)))
    near = resize_mask_nearest(full, (31, 23))
    poly = rasterize_polygons(tri, (31 / 50, 23 / 40), (0, 0), (31, 23))
    np.testing.assert_array_equal(near, np.array(Image.fromarray(full).resize((31, 23),
                                                                              Image.NEAREST)))
    assert poly.shape == near.shape == (23, 31)
    assert 0 < (poly != near).sum() < 0.2 * poly.sum()


def test_gt_mask_resize_polygon_needs_raw_segms():
    masks = BitmapMasks(np.ones((1, 8, 8), np.uint8), 8, 8)
    res = dict(img=np.zeros((8, 8, 3), np.uint8), gt_masks=masks,
               gt_merged_mask=np.ones((8, 8), np.uint8), img_path='x.jpg')
    with pytest.raises(KeyError, match='gt_segms.*x.jpg|x.jpg.*gt_segms'):
        RefResize(scale=(4, 4), gt_mask_resize='polygon')(res)
    with pytest.raises(ValueError, match='gt_mask_resize'):
        RefResize(gt_mask_resize='bilinear')


def test_pack_without_ori_gt(mini_root):
    out = _grefs(mini_root, _pipeline((32, 24), keep_ori_gt=False))[0]['data_samples']
    assert 'ori_gt_merged_mask' not in out and 'ori_gt_ref_bbox' not in out


@pytest.mark.parametrize('letterbox,scale', [(False, (100, 80)), (True, (100, 100)),
                                             (True, (120, 64))])
def test_resize_rescale_round_trip(mini_root, letterbox, scale):
    """An integer up-scaling by 2 (50x40 -> 100x80 content) must invert exactly."""
    ds = _grefs(mini_root, _pipeline(scale, letterbox=letterbox))
    s = _by_sent(ds)[0]['data_samples']
    meta = s.metainfo
    if letterbox:
        s_exp = min(scale[0] / 50, scale[1] / 40)
        nw, nh = round(50 * s_exp), round(40 * s_exp)
        assert meta['letterbox'] == dict(pad=((scale[0] - nw) // 2, (scale[1] - nh) // 2),
                                         scale=s_exp)
        left, top = meta['letterbox']['pad']
        # padding holds no mask and zero image
        m = s.gt_merged_mask.data[0]
        assert m[:top].sum() == 0 and m[:, :left].sum() == 0
        assert (s.gt_merged_mask.data[0, top:top + nh, left:left + nw].sum() ==
                m.sum())
    back = mask_to_original(s.gt_merged_mask.data[0].bool(), meta)
    ori = s.ori_gt_merged_mask.data[0].bool()
    assert back.shape == ori.shape
    if meta['scale_factor'] == (2.0, 2.0):
        assert torch.equal(back, ori)
    else:  # non-integer scale: nearest resampling both ways, near-identical
        inter, union = (back & ori).sum(), (back | ori).sum()
        assert inter / union > 0.85
    torch.testing.assert_close(box_to_original(s.gt_ref_bbox, meta), s.ori_gt_ref_bbox)
    for b in s.gt_instances.bboxes:  # instance boxes inside the image content
        assert 0 <= b[0] <= b[2] <= scale[0] and 0 <= b[1] <= b[3] <= scale[1]


@pytest.mark.parametrize('letterbox', [False, True])
def test_boxes_past_the_image_edge_are_clipped_to_the_image_content(letterbox):
    """COCO has annotation boxes reaching past the image (x + w > width): mapped to the input,
    they end at the content's edge, never in the letterbox padding (mmdet clips to the
    resized image too). 640 x 427 -> 480: content 480 x 320 (scale 0.75), rows 80:400."""
    img = np.zeros((427, 640, 3), np.uint8)
    box = np.array([600.0, -3.0, 640.6, 427.4], np.float32)  # 0.6 px past the right edge
    out = RefResize(scale=(480, 480), letterbox=letterbox)(
        dict(img=img, gt_bboxes=box[None], gt_ref_bbox=box.copy()))
    if letterbox:
        nh = int(427 * 0.75 + 0.5)  # 320
        top = (480 - nh) // 2
        exp = [600 * 0.75, top, 480, top + nh]
    else:
        exp = [600 * 0.75, 0, 480, 480]
    np.testing.assert_allclose(out['gt_bboxes'][0], exp, rtol=0, atol=1e-4)
    np.testing.assert_allclose(out['gt_ref_bbox'], exp, rtol=0, atol=1e-4)


def test_letterbox_image_content(mini_root):
    ds = _grefs(mini_root, _pipeline((100, 100), letterbox=True))
    inputs = _by_sent(ds)[0]['inputs']
    img = cv2.imread(str(mini_root / 'images' / 'a.png'))
    exp = mmcv.imresize(img, (100, 80))
    np.testing.assert_array_equal(inputs[:, 10:90].permute(1, 2, 0).numpy(), exp)
    assert inputs[:, :10].sum() == 0 and inputs[:, 90:].sum() == 0


def test_grayscale_and_rgba_load_as_bgr(tmp_path):
    gray = np.arange(20 * 30, dtype=np.uint8).reshape(20, 30)
    cv2.imwrite(str(tmp_path / 'g.png'), gray)
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    cv2.imwrite(str(tmp_path / 'c.png'), rgba)
    load = LoadRefImageFromFile()
    g = load(dict(img_path=str(tmp_path / 'g.png')))['img']
    assert g.shape == (20, 30, 3)
    np.testing.assert_array_equal(g[..., 0], gray)
    np.testing.assert_array_equal(g[..., 2], gray)
    c = load(dict(img_path=str(tmp_path / 'c.png')))['img']
    assert c.shape == (20, 30, 3) and c[0, 0].tolist() == [200, 0, 0]


def test_missing_and_corrupt_images_name_path_and_sample(tmp_path):
    load = LoadRefImageFromFile()
    with pytest.raises(FileNotFoundError, match=r'nope\.jpg.*img_id=5, ref_id=7'):
        load(dict(img_path=str(tmp_path / 'nope.jpg'), img_id=5, ref_id=7, sent_id=1))
    (tmp_path / 'bad.jpg').write_bytes(b'\xff\xd8 not really a jpeg')
    with pytest.raises(ValueError, match=r'bad\.jpg.*img_id=6, ref_id=8'):
        load(dict(img_path=str(tmp_path / 'bad.jpg'), img_id=6, ref_id=8))


def test_image_size_mismatch_with_instances_json(mini_root):
    cv2.imwrite(str(mini_root / 'images' / 'a.png'), np.zeros((10, 10, 3), np.uint8))
    ds = _grefs(mini_root, _pipeline((32, 24)))
    with pytest.raises(ValueError, match=r'a\.png.*10x10 but instances.json says 40x50'):
        ds[0]


def test_zero_area_mask_survives(mini_root):
    # a 1-pixel-wide instance vanishes when shrunk 8x; the sample must still pack
    res = dict(img=np.zeros((40, 50, 3), np.uint8), ori_shape=(40, 50), height=40, width=50,
               instances=[dict(mask=[[10, 10, 10.5, 10, 10.5, 30, 10, 30]],
                               bbox=[10, 10, 10.5, 30])], ref_bbox=[10, 10, 10.5, 30])
    res = LoadRefAnnotations()(res)
    res = RefResize(scale=(6, 5))(res)
    out = PackRefInputs()(res)['data_samples']
    assert out.gt_instances.masks.masks.shape == (1, 5, 6)
    assert out.gt_merged_mask.data.shape == (1, 5, 6)
    # the box scales by (6/50, 5/40) although the mask is (nearly) gone; the merged mask is
    # the instance mask, at most the 1 pixel whose centre the sliver covers
    np.testing.assert_allclose(out.gt_instances.bboxes.numpy()[0],
                               [10 * 6 / 50, 10 * 5 / 40, 10.5 * 6 / 50, 30 * 5 / 40], rtol=1e-6)
    assert int(out.gt_merged_mask.data.sum()) <= 1
    assert np.array_equal(out.gt_merged_mask.data[0].numpy().astype(bool),
                          out.gt_instances.masks.masks[0].astype(bool))


def test_tokenize_beit3_spm(synthref_beit3_spm):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=synthref_beit3_spm)
    tok = TokenizeText(tokenizer=synthref_beit3_spm, max_length=20)
    text = 'the red circle on the left'
    out = tok(dict(text=text))
    pieces = [p + 1 for p in sp.encode(text)]
    n = len(pieces) + 2
    assert out['input_ids'].tolist() == [0] + pieces + [2] + [1] * (20 - n)
    assert out['attention_mask'].tolist() == [1] * n + [0] * (20 - n)
    short = TokenizeText(tokenizer=dict(type='BEiT3Tokenizer', spm_path=synthref_beit3_spm),
                         max_length=4)
    r = short(dict(text=text))
    assert r['input_ids'].tolist() == [0, pieces[0], pieces[1], 2]
    short(dict(text=text))
    assert short.num_truncated == 2


def test_tokenize_lower_case(synthref_beit3_spm):
    # lower_case lives in the tokenizer's config, as in the model config
    lower = TokenizeText(tokenizer=dict(type='BEiT3Tokenizer', spm_path=synthref_beit3_spm,
                                        lower_case=True), max_length=12)
    cased = TokenizeText(tokenizer=synthref_beit3_spm, max_length=12)
    ref = cased(dict(text='the red circle'))['input_ids'].tolist()
    assert lower(dict(text='The Red circle'))['input_ids'].tolist() == ref
    assert cased(dict(text='The Red circle'))['input_ids'].tolist() != ref


def test_tokenize_roberta_dir(synthref_roberta_dir):
    from transformers import AutoTokenizer
    ref = AutoTokenizer.from_pretrained(synthref_roberta_dir, local_files_only=True)
    tok = TokenizeText(tokenizer=synthref_roberta_dir, max_length=12)
    out = tok(dict(text='the blue square'))
    ids = ref('the blue square')['input_ids']
    assert ids[0] == 0 and ids[-1] == 2
    assert out['input_ids'].tolist() == ids + [ref.pad_token_id] * (12 - len(ids))
    assert tok.num_truncated == 0


def test_tokenize_bad_path(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothing.spm'):
        TokenizeText(tokenizer=str(tmp_path / 'nothing.spm'))(dict(text='a'))


def test_tokens_travel_in_metainfo(mini_root, synthref_beit3_spm):
    pipeline = _pipeline((32, 24))
    pipeline.insert(3, dict(type='TokenizeText', tokenizer=synthref_beit3_spm, max_length=8))
    ds = _grefs(mini_root, pipeline)
    s = ds[0]['data_samples']
    assert s.input_ids.dtype == torch.int64 and s.input_ids.shape == (8, )
    # the ids of the transform on the same sentence, carried unchanged to the model's metainfo
    alone = TokenizeText(tokenizer=synthref_beit3_spm, max_length=8)(dict(text=s.text))
    assert s.input_ids.tolist() == list(alone['input_ids'])
    assert s.attention_mask.tolist() == list(alone['attention_mask'])


def test_refcoco_end_to_end_on_synthref(synthref_root):
    ds = RefCOCODataset(data_root=str(synthref_root), ann_file='refcoco/instances.json',
                        split_file='refcoco/refs(unc).p', split='val',
                        data_prefix=dict(img_path='images/train2014/'),
                        pipeline=_pipeline((64, 64)))
    pipe = Compose([dict(type='LoadRefImageFromFile'), dict(type='LoadRefAnnotations')])
    for i in range(0, len(ds), 7):
        out = ds[i]['data_samples']
        raw = pipe(ds.get_data_info(i))
        assert len(out.gt_instances) == 1
        assert out.gt_merged_mask.data.sum() > 0
        np.testing.assert_array_equal(out.ori_gt_merged_mask.data[0].numpy(),
                                      raw['gt_merged_mask'])
        assert tuple(out.metainfo['ori_shape']) == raw['img'].shape[:2]
