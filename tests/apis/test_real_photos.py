"""RefInferencer on three real COCO photos with their real RefCOCO / RefCOCO+ sentences
(../shared/realdata/refcoco_sentences/images), tiny quick-start models at random init."""
import csv
import glob
import math
import os.path as osp
from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image

from mmrefer.apis import RefInferencer

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PHOTOS = osp.join(ROOT, '..', 'shared', 'realdata', 'refcoco_sentences', 'images')
SENTENCES_CSV = osp.join(PHOTOS, 'sentences_for_these_images.csv')

pytestmark = [
    pytest.mark.skipif(not osp.isfile(SENTENCES_CSV),
                       reason=f'real photos not found: {osp.normpath(SENTENCES_CSV)}'),
    pytest.mark.usefixtures('one_torch_thread'),
]


def photos_and_sentences():
    """OrderedDict ``photo path -> [sentence, ...]`` in the CSV's row order (columns
    ``dataset_split,uid,ref_id,img_id,sent_id,sent``; the photo of ``img_id`` i is
    ``COCO_train2014_%012d.jpg``)."""
    by_photo = OrderedDict()
    with open(SENTENCES_CSV, newline='') as f:
        for row in csv.DictReader(f):
            path = osp.join(PHOTOS, 'COCO_train2014_%012d.jpg' % int(row['img_id']))
            by_photo.setdefault(path, []).append(row['sent'])
    # the realdata README: 41 sentences of three photos
    assert sorted(by_photo) == sorted(glob.glob(osp.join(PHOTOS, '*.jpg')))
    assert sum(map(len, by_photo.values())) == 41
    return by_photo


def test_real_photos_load_in_bgr_as_pil_decodes_them():
    """RefInferencer.load_image (OpenCV) against PIL's decoding of the same JPEGs: same size,
    channels in BGR order (a swap would differ by tens of grey levels on these photos)."""
    for path in photos_and_sentences():
        ours = RefInferencer.load_image(path).astype(np.float64)
        rgb = np.asarray(Image.open(path).convert('RGB'), dtype=np.float64)
        assert ours.shape == rgb.shape, path
        assert np.abs(ours - rgb[..., ::-1]).mean() < 1.0, path
        assert np.abs(ours - rgb).mean() > 10 * np.abs(ours - rgb[..., ::-1]).mean(), path


@pytest.mark.parametrize('name,tokenizer_key,tokenizer_file', [
    ('latentvg_tiny_synthref', 'model.tokenizer.spm_path', 'tokenizers/beit3.spm'),
    ('instalign_tiny_synthref', 'model.text_encoder.tokenizer_dir', 'tokenizers/roberta'),
])
def test_every_real_sentence_gets_one_answer(name, tokenizer_key, tokenizer_file, synthref_root):
    by_photo = photos_and_sentences()
    torch.manual_seed(0)
    # one forward pass per photo: all of its sentences in one batch
    inferencer = RefInferencer(name, device='cpu', batch_size=max(map(len, by_photo.values())),
                               cfg_options={tokenizer_key: osp.join(synthref_root,
                                                                    tokenizer_file)})
    for path, sentences in by_photo.items():
        w, h = Image.open(path).size  # read independently of OpenCV
        answers = inferencer(path, sentences)
        assert [a['text'] for a in answers] == sentences, path
        for a in answers:
            where = f'{osp.basename(path)} / {a["text"]!r}'
            assert isinstance(a['mask'], np.ndarray) and a['mask'].dtype == bool, where
            assert a['mask'].shape == (h, w), where
            assert len(a['box']) == 4 and all(isinstance(v, float) for v in a['box']), where
            x1, y1, x2, y2 = a['box']
            assert all(map(math.isfinite, a['box'])), where
            assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h, (where, a['box'])
            assert isinstance(a['no_target'], bool), where
            assert isinstance(a['score'], float) and math.isfinite(a['score']), where
            if a['no_target']:
                assert not a['mask'].any(), where
    # the same photo as an RGB array gives the same answers as its path
    path, sentences = next(iter(by_photo.items()))
    rgb = np.ascontiguousarray(RefInferencer.load_image(path)[..., ::-1])
    for a, b in zip(inferencer(path, sentences), inferencer(rgb, sentences, channel_order='rgb')):
        assert np.array_equal(a['mask'], b['mask']) and a['box'] == b['box'], a['text']
        assert a['no_target'] == b['no_target'] and a['score'] == b['score'], a['text']


def test_a_truncated_photo_is_refused_as_the_dataset_loader_refuses_it(tmp_path):
    """Half of a real COCO JPEG: cv2.imread would fill the missing half with grey and answer on
    it; RefInferencer decodes the bytes as the datasets' loader (mmcv) does and refuses it."""
    import cv2
    from mmcv.transforms import LoadImageFromFile
    photo = next(iter(photos_and_sentences()))
    data = open(photo, 'rb').read()
    cut = tmp_path / 'half.jpg'
    cut.write_bytes(data[:len(data) // 2])
    partial = cv2.imread(str(cut))
    assert partial is not None and partial.shape[:2] == Image.open(photo).size[::-1]
    with pytest.raises(ValueError, match=r"half\.jpg' \(truncated, corrupt or not an image\)"):
        RefInferencer.load_image(str(cut))
    with pytest.raises(Exception):   # the training / test loader (mmcv) refuses it too
        LoadImageFromFile()(dict(img_path=str(cut)))
