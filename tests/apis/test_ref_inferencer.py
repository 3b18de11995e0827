"""RefInferencer on a deterministic fake model: sizes, box mapping, batching, inputs, errors."""
import ast
import glob
import os.path as osp
import sys

import cv2
import numpy as np
import pytest
import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _fake_ref_model import FakeRefModel, write_fake_config  # noqa: E402

from mmrefer.apis import RefInferencer, build_inference_pipeline, resolve_config  # noqa: E402

H0, W0 = 48, 64
Y1, Y2, X1, X2 = 9, 27, 16, 40  # the bright block (first channel 255)


def make_image():
    img = np.zeros((H0, W0, 3), np.uint8)
    img[..., 1] = 90
    img[Y1:Y2, X1:X2, 0] = 255
    return img


@pytest.fixture(scope='module')
def cfg_path(tmp_path_factory):
    return write_fake_config(tmp_path_factory.mktemp('fakecfg'))


@pytest.fixture(scope='module')
def inferencer(cfg_path):
    return RefInferencer(cfg_path, weights=None, device='cpu', batch_size=2)


def test_apis_do_not_import_visualization():
    """The geometry lives in mmrefer.structures; mmrefer.apis must not need the drawing code."""
    apis = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'mmrefer',
                    'apis')
    files = sorted(glob.glob(osp.join(apis, '**', '*.py'), recursive=True))
    assert files
    for path in files:
        package = ['mmrefer'] + osp.relpath(osp.dirname(path), osp.dirname(apis)).split(osp.sep)
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):  # resolve '..visualization' etc.
                base = package[:len(package) - node.level + 1] if node.level else []
                full = '.'.join(base + ([node.module] if node.module else []))
                names = [full] + [f'{full}.{a.name}' for a in node.names]
            else:
                continue
            bad = [n for n in names if n == 'mmrefer.visualization' or
                   n.startswith('mmrefer.visualization.')]
            assert not bad, f'{path}:{node.lineno} imports {bad}'


def expected_mask(img, thr=127 / 255):
    """Independent recomputation with OpenCV: nearest resize to 32x32 (the pipeline), the fake
    model's probability (first channel / 255), bilinear back to H0xW0 (``INTER_LINEAR`` uses
    half-pixel centres, as ``align_corners=False``), then ``> thr``."""
    small = cv2.resize(img, (32, 32), interpolation=cv2.INTER_NEAREST)[..., 0] / 255
    up = cv2.resize(small.astype(np.float32), (W0, H0), interpolation=cv2.INTER_LINEAR)
    return up > thr


def test_pipeline_drops_annotation_loading(cfg_path):
    steps = build_inference_pipeline(resolve_config(cfg_path))
    types = [s['type'] for s in steps]
    assert types[0] == 'mmdet.LoadImageFromNDArray'
    assert not any('LoadAnnotations' in t or 'LoadImageFromFile' in t for t in types)
    assert types[-1] == 'mmdet.PackDetInputs'


def test_mask_at_original_size_and_box_mapping(inferencer):
    img = make_image()
    (res, ) = inferencer(img, 'the blue block')
    assert set(res) >= {'mask', 'box', 'no_target', 'score', 'extras', 'text'}
    assert res['mask'].dtype == bool and res['mask'].shape == (H0, W0)
    np.testing.assert_array_equal(res['mask'], expected_mask(img))
    truth = np.zeros((H0, W0), bool)
    truth[Y1:Y2, X1:X2] = True
    iou = (res['mask'] & truth).sum() / (res['mask'] | truth).sum()
    assert iou > 0.85
    # box at 32x32 is the mask's box there; divided by the scale (32/64, 32/48) it must come
    # back near the block's box [16, 9, 40, 27] (one input pixel = 2 x 1.5 original pixels)
    x1, y1, x2, y2 = res['box']
    assert abs(x1 - X1) <= 2 and abs(x2 - X2) <= 2
    assert abs(y1 - Y1) <= 1.5 and abs(y2 - Y2) <= 1.5
    assert res['no_target'] is False
    assert res['score'] == pytest.approx(expected_mask(img).sum() / (H0 * W0), abs=0.03)
    maps = res['extras']['expr_maps']
    assert maps.shape == (2, H0, W0)
    assert res['extras']['subject_index'] == 3


def test_mask_without_pred_prob_uses_the_bool_mask(tmp_path):
    """A model without pred_prob (old checkpoints): its bool mask is a 0/1 map, thr 0.5.

    A soft band (probability 110/255 = 0.43, below the threshold 127/255) above the block is
    not in pred_mask, but bilinear interpolation of the probability next to the block rises
    above the threshold on more rows than that of the binary mask does."""
    img = make_image()
    img[Y1 - 3:Y1, X1:X2, 0] = 110
    with_prob = RefInferencer(write_fake_config(tmp_path))(img, 'the block')[0]
    no_prob = RefInferencer(write_fake_config(tmp_path, with_prob=False))(img, 'the block')[0]
    np.testing.assert_array_equal(with_prob['mask'], expected_mask(img))
    small = cv2.resize(img, (32, 32), interpolation=cv2.INTER_NEAREST)[..., 0] > 127
    bool_up = cv2.resize(small.astype(np.float32), (W0, H0), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(no_prob['mask'], bool_up > 0.5)
    extra = with_prob['mask'] & ~no_prob['mask']
    assert extra.any() and not (no_prob['mask'] & ~with_prob['mask']).any()
    assert set(np.nonzero(extra)[0]) <= set(range(Y1 - 3, Y1))  # only in the soft band
    assert with_prob['box'] == no_prob['box']


def test_letterbox_pipeline_is_undone(tmp_path):
    """RefResize(letterbox=True) + PackRefInputs(keep_ori_gt=True) from mmrefer's transforms.

    Hand computation: 48x64 -> s = 0.5 -> 24x32 content, padded to 32x32 with top = 4. Nearest
    resize keeps source rows/cols 2*i, so the block (rows 9..26, cols 16..39) covers content
    rows 5..13 and cols 8..19, i.e. input rows 9..17. Box at the input: [8, 9, 20, 18];
    minus the pad and divided by 0.5: [16, 10, 40, 28]. The mask comes back as rows 10..27,
    cols 16..39 (nearest upsampling doubles every content pixel).
    """
    inf = RefInferencer(write_fake_config(tmp_path, letterbox=True))
    steps = [s['type'] for s in build_inference_pipeline(inf.cfg)]
    assert steps == ['mmdet.LoadImageFromNDArray', 'RefResize', 'PackRefInputs']
    res = inf(make_image(), 'the block')[0]
    assert res['box'] == [16.0, 10.0, 40.0, 28.0]
    # bilinear x2 from the 0/1 probability: each original pixel is 0.75 its nearest content
    # pixel + 0.25 a neighbour, so ``> 127/255`` keeps exactly the doubled content pixels
    truth = np.zeros((H0, W0), bool)
    truth[10:28, 16:40] = True
    np.testing.assert_array_equal(res['mask'], truth)
    assert res['extras']['expr_maps'].shape == (2, H0, W0)
    # the soft map of the mask channel comes back on the same rows/cols (bilinear edges)
    assert res['extras']['expr_maps'][1][truth].mean() > 0.9
    assert res['extras']['expr_maps'][1][~truth].mean() < 0.05


def test_batch_of_sentences_keeps_order_and_batches(inferencer):
    sentences = ['a', 'nothing is here', 'the block', 'b c', 'd']
    FakeRefModel.calls.clear()
    results = inferencer(make_image(), sentences)
    assert FakeRefModel.calls == [2, 2, 1]
    assert [r['text'] for r in results] == sentences
    assert [r['no_target'] for r in results] == [False, True, False, False, False]
    assert not results[1]['mask'].any()
    np.testing.assert_array_equal(results[0]['mask'], results[2]['mask'])
    assert [r['extras']['subject_index'] for r in results] == [1, 3, 2, 2, 1]


def test_path_and_array_and_rgb_give_same_answer(inferencer, tmp_path):
    img = make_image()
    path = str(tmp_path / 'img.png')
    cv2.imwrite(path, img)
    from_path = inferencer(path, ['the block'])[0]
    from_bgr = inferencer(img, ['the block'])[0]
    from_rgb = inferencer(np.ascontiguousarray(img[..., ::-1]), ['the block'],
                          channel_order='rgb')[0]
    for other in (from_bgr, from_rgb):
        np.testing.assert_array_equal(from_path['mask'], other['mask'])
        assert from_path['box'] == other['box']
    # RGB array read as BGR puts the block in the last channel: the fake model sees nothing
    wrong = inferencer(np.ascontiguousarray(img[..., ::-1]), ['the block'])[0]
    assert not wrong['mask'].any()


def test_weights_are_loaded(cfg_path, tmp_path):
    model = FakeRefModel()
    with torch.no_grad():
        model.threshold.fill_(300.0)  # above any uint8 value: empty mask
    ckpt = str(tmp_path / 'fake.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict(epoch=1)), ckpt)
    inf = RefInferencer(cfg_path, weights=ckpt)
    assert inf.model.threshold.item() == 300.0
    assert not inf(make_image(), 'the block')[0]['mask'].any()


def test_bad_inputs(inferencer, cfg_path, tmp_path):
    img = make_image()
    with pytest.raises(FileNotFoundError, match='no_such.jpg'):
        inferencer(str(tmp_path / 'no_such.jpg'), 'x')
    bad = tmp_path / 'bad.jpg'
    bad.write_bytes(b'not an image')
    with pytest.raises(ValueError, match='bad.jpg'):
        inferencer(str(bad), 'x')
    with pytest.raises(ValueError, match='empty'):
        inferencer(img, [])
    with pytest.raises(ValueError, match='sentence 1'):
        inferencer(img, ['ok', '  '])
    with pytest.raises(ValueError, match='HxWx3'):
        inferencer(img[..., 0], 'x')
    with pytest.raises(ValueError, match='uint8'):
        inferencer(img.astype(np.float32), 'x')
    with pytest.raises(TypeError, match='list'):
        inferencer([1, 2], 'x')
    with pytest.raises(ValueError, match='channel_order'):
        inferencer(img, 'x', channel_order='hsv')
    with pytest.raises(FileNotFoundError, match='no_such_config_name'):
        RefInferencer('no_such_config_name')
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        RefInferencer(cfg_path, weights=str(tmp_path / 'missing.pth'))


def shifted_image():
    """A second scene: the bright block moved to the bottom right."""
    img = np.zeros((40, 56, 3), np.uint8)
    img[20:36, 30:52, 0] = 255
    return img


def test_predict_pairs_batches_across_images_in_order(inferencer, tmp_path):
    """Pairs of two images (array and path) run in batches of batch_size across images, and
    each answer equals the one the single-image call gives."""
    img_a = make_image()
    path_b = str(tmp_path / 'b.png')
    cv2.imwrite(path_b, shifted_image())
    pairs = [(img_a, 'a'), (img_a, 'nothing here'), (path_b, 'the block'), (path_b, 'b c'),
             (img_a, 'd')]
    FakeRefModel.calls.clear()
    answers = inferencer.predict_pairs(pairs)
    assert FakeRefModel.calls == [2, 2, 1]
    assert [a['text'] for a in answers] == [s for _, s in pairs]
    alone = inferencer(img_a, ['a', 'nothing here', 'd'])
    alone += inferencer(path_b, ['the block', 'b c'])
    for a, b in zip(answers, [alone[0], alone[1], alone[3], alone[4], alone[2]]):
        assert a['text'] == b['text'] and a['no_target'] == b['no_target']
        np.testing.assert_array_equal(a['mask'], b['mask'])
        assert a['box'] == b['box'] and a['score'] == b['score']
    assert answers[2]['mask'].shape == (40, 56) and answers[0]['mask'].shape == (H0, W0)
    FakeRefModel.calls.clear()
    inferencer.predict_pairs(pairs, batch_size=4)
    assert FakeRefModel.calls == [4, 1]


def test_iter_pairs_reads_lazily_and_once_per_image(inferencer, tmp_path, monkeypatch):
    """A pair generator is read one batch at a time; consecutive pairs with the same path read
    the image once."""
    path_a, path_b = str(tmp_path / 'a.png'), str(tmp_path / 'b.png')
    cv2.imwrite(path_a, make_image())
    cv2.imwrite(path_b, shifted_image())
    reads = []
    load = RefInferencer.load_image
    monkeypatch.setattr(RefInferencer, 'load_image',
                        staticmethod(lambda im, order='bgr': reads.append(im) or load(im, order)))
    pulled = []

    def pairs():
        for p in [(path_a, 'a'), (path_a, 'b'), (path_b, 'c'), (path_a, 'd'), (path_a, 'e')]:
            pulled.append(p)
            yield p

    it = inferencer.iter_pairs(pairs())  # batch_size 2
    first = next(it)
    assert first['text'] == 'a' and len(pulled) == 2
    assert [a['text'] for a in it] == ['b', 'c', 'd', 'e']
    assert reads == [path_a, path_b, path_a]


def test_predict_pairs_errors_name_the_pair(inferencer, tmp_path):
    img = make_image()
    with pytest.raises(FileNotFoundError, match=r'pair 1: image file not found: .*no_such\.jpg'):
        inferencer.predict_pairs([(img, 'ok'), (str(tmp_path / 'no_such.jpg'), 'x')])
    with pytest.raises(ValueError, match='pair 0: the sentence must be a non-empty string'):
        inferencer.predict_pairs([(img, '  ')])
    with pytest.raises(TypeError, match=r'pair 0 must be an \(image, sentence\) pair'):
        inferencer.predict_pairs([img])
    with pytest.raises(ValueError, match='batch_size'):
        inferencer.predict_pairs([(img, 'x')], batch_size=0)


def test_base_inferencer_steps(inferencer):
    """The BaseInferencer steps compose to the same answers: preprocess -> forward ->
    postprocess (list form), and nothing is drawn."""
    from mmengine.infer import BaseInferencer
    assert isinstance(inferencer, BaseInferencer) and inferencer.visualizer is None
    img = make_image()
    batches = list(inferencer.preprocess([(img, 'the block'), (img, 'nothing')], batch_size=2))
    assert len(batches) == 1 and len(batches[0]['inputs']) == 2
    preds = inferencer.forward(batches[0])
    assert inferencer.visualize([img], preds) is None
    answers = inferencer.postprocess(preds)
    direct = inferencer(img, ['the block', 'nothing'])
    for a, b in zip(answers, direct):
        np.testing.assert_array_equal(a['mask'], b['mask'])
        assert a['box'] == b['box'] and a['no_target'] == b['no_target']
    assert inferencer.postprocess(preds, return_datasamples=True) == preds
