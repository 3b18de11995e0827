"""SynthRef: determinism, official formats, and that every sentence denotes exactly its targets.

The targets are re-derived independently: colours are read from the JPEG pixels under each
annotation's mask (nearest palette entry), shapes from the COCO category, and every sentence is
interpreted by a small grammar below, then compared with the ref's annotation ids.
"""
import collections
import hashlib
import json
import os
import re

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from mmrefer.datasets.safe_pickle import load_refs
from mmrefer.datasets.synthetic import (SYNTHREF_COCO_IMAGE_SIZES, COLORS, SHAPES, make_synthref,
                                        parse_image_sizes)

PLURAL = {s + 's': s for s in SHAPES}
C = '|'.join(COLORS)
S = '|'.join(SHAPES)
SP = '|'.join(PLURAL)


def _digest(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = hashlib.sha1(open(p, 'rb').read()).hexdigest()
    return out


def test_deterministic(tmp_path):
    sizes = dict(train=4, val=2, testA=1, testB=1)
    make_synthref(str(tmp_path / 'a'), sizes, seed=3)
    make_synthref(str(tmp_path / 'b'), sizes, seed=3)
    make_synthref(str(tmp_path / 'c'), sizes, seed=4, tokenizers=False)
    a, b, c = (_digest(tmp_path / k) for k in 'abc')
    assert a == b and len(a) == 8 + 6 + 1 + 3  # images, 3x2 annotation files, spm, roberta (3)
    assert a['refcoco/refs(unc).p'] != c['refcoco/refs(unc).p']


def test_default_output_unchanged(tmp_path):
    """The default (random 96-160 px) output is byte-identical to the release before
    ``image_sizes`` existed (SHA-1 of its annotation files, seed 3): the quick-start figures
    depend on it. Any extra random draw on the default path changes every file."""
    paths = make_synthref(str(tmp_path), dict(train=4, val=2, testA=1, testB=1), seed=3,
                          tokenizers=False)
    digests = {k: hashlib.sha1(open(paths[k], 'rb').read()).hexdigest()
               for k in ('refcoco_instances', 'refcoco_refs', 'grefcoco_refs', 'refzom_refs')}
    assert digests == dict(refcoco_instances='0e76bbd11a1b08e9c60514edcd1b3bf5796ad772',
                           refcoco_refs='4f968f026fcca4b156a7c44f0203ab18ab94c859',
                           grefcoco_refs='e7b026cec8c48e861caa27855d30b6117260c781',
                           refzom_refs='76ceae4d110d56c8714df13760e4ee79bfb4e977')


def test_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match="unknown split 'test'"):
        make_synthref(str(tmp_path), dict(test=3))
    with pytest.raises(ValueError, match="'640-427' is not WIDTHxHEIGHT"):
        make_synthref(str(tmp_path), dict(train=1), image_sizes='640x480,640-427')
    with pytest.raises(ValueError, match='40x480 has a side below 64'):
        make_synthref(str(tmp_path), dict(train=1), image_sizes=[(40, 480)])
    with pytest.raises(ValueError, match=r"\(640, 4\.5\) is not a \(width, height\) pair"):
        parse_image_sizes([(640, 4.5)])
    assert parse_image_sizes(' 640x427, 427X640 ') == [(640, 427), (427, 640)]


@pytest.fixture(scope='module')
def coco_paths(tmp_path_factory):
    """SynthRef at COCO-like sizes: 9 images cycling through SYNTHREF_COCO_IMAGE_SIZES."""
    root = tmp_path_factory.mktemp('synthref_coco')
    return make_synthref(str(root), dict(train=5, val=2, testA=1, testB=1), seed=0,
                         tokenizers=False, image_sizes=SYNTHREF_COCO_IMAGE_SIZES)


def test_coco_sizes_cycle_and_cli(coco_paths, tmp_path):
    coco = json.load(open(coco_paths['refcoco_instances']))
    sizes = [(im['width'], im['height']) for im in coco['images']]
    assert sizes == [SYNTHREF_COCO_IMAGE_SIZES[k % 5] for k in range(9)]
    for im in coco['images']:
        pix = cv2.imread(os.path.join(coco_paths['img_dir'], im['file_name']))
        assert pix.shape == (im['height'], im['width'], 3)
    # the command line: --coco-sizes is --image-sizes with that list, same files
    import importlib.util
    spec = importlib.util.spec_from_file_location('make_synthref', os.path.join(
        os.path.dirname(__file__), '..', '..', 'tools', 'dataset_converters', 'make_synthref.py'))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    main = cli.main
    nums = '{"train": 5, "val": 2, "testA": 1, "testB": 1}'
    a = main(['--out', str(tmp_path / 'a'), '--coco-sizes', '--num-images', nums])
    b = main(['--out', str(tmp_path / 'b'), '--num-images', nums, '--image-sizes',
              ','.join(f'{w}x{h}' for w, h in SYNTHREF_COCO_IMAGE_SIZES)])
    assert open(a['refcoco_instances']).read() == open(coco_paths['refcoco_instances']).read()
    assert _digest(a['root']) == _digest(b['root'])


def _regions(pix):
    """Connected regions drawn in a SynthRef image, read from the pixels alone: shapes (a
    channel above 150; the background is 30-70 + noise, clutter stripes 90/130 grey) and
    clutter (grey 80-145 with channels within 25 of each other, not a shape)."""
    shape_px = pix.max(2) > 150
    grey = (pix.min(2) > 80) & (pix.max(2) < 145) & (pix.max(2).astype(int) - pix.min(2) < 25)
    grey = cv2.morphologyEx(grey.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    return (cv2.connectedComponents(shape_px.astype(np.uint8))[1],
            cv2.connectedComponents(grey & ~shape_px)[1])


def test_coco_sizes_masks_boxes_areas(coco_paths):
    """Every annotation (polygon, RLE, uncompressed RLE, crowd) decodes with pycocotools to the
    region actually drawn in the JPEG (IoU >= 0.9 against the connected pixel region it covers;
    JPEG blurs the borders), its bbox / area equal pycocotools' toBbox / area of that RLE, and
    shapes have the default half-sizes (8-23 px) times min(w, h) / 128."""
    import pycocotools.mask as mask_utils
    coco = COCO(coco_paths['refcoco_instances'])
    n_shapes = n_crowd = 0
    for img_id, img in coco.imgs.items():
        pix = cv2.imread(os.path.join(coco_paths['img_dir'], img['file_name']))
        shapes, clutter = _regions(pix)
        scale = min(img['width'], img['height']) / 128
        for ann in coco.imgToAnns[img_id]:
            rle = coco.annToRLE(ann)
            m = mask_utils.decode(rle).astype(bool)
            assert np.allclose(ann['bbox'], mask_utils.toBbox(rle)), ann['id']
            assert ann['area'] == float(mask_utils.area(rle)), ann['id']
            labels = clutter if ann['iscrowd'] else shapes
            lab = np.bincount(labels[m]).argmax()  # the region the mask sits on
            assert lab > 0, f'ann {ann["id"]}: nothing drawn under its mask'
            region = labels == lab
            iou = (m & region).sum() / (m | region).sum()
            assert iou >= 0.9, (ann['id'], ann['iscrowd'], iou)
            if ann['iscrowd']:
                n_crowd += 1
                continue
            n_shapes += 1
            w, h = ann['bbox'][2:]
            assert 2 * 8 * scale - 2 <= max(w, h) <= 2 * 23 * scale + 2, (ann['id'], w, h, scale)
    assert n_shapes > 10 and n_crowd >= 1
    # a 640x427 image: scale 3.34, big shapes 113-155 px wide, small ones 53-75
    big = [a['bbox'][2] for a in coco.dataset['annotations']
           if not a['iscrowd'] and coco.imgs[a['image_id']]['width'] == 640
           and coco.imgs[a['image_id']]['height'] == 427]
    assert big and all(52 <= w <= 156 for w in big), big


def _objects(root, coco, scaled=False):
    """ann_id -> dict(color, shape, cx, cy, w, crowd, scale) read back from pixels +
    annotations; ``scaled``: images made with ``image_sizes`` (scale = min(w, h) / 128)."""
    palette = np.array(list(COLORS.values()), np.float32)
    names = list(COLORS)
    out = {}
    for img_id, img in coco.imgs.items():
        pix = cv2.imread(os.path.join(root, 'images', 'train2014', img['file_name']))
        assert pix.shape[:2] == (img['height'], img['width'])
        for ann in coco.imgToAnns[img_id]:
            m = coco.annToMask(ann).astype(bool)
            m = cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            mean = pix[m].astype(np.float32).mean(0)
            color = names[int(np.argmin(((palette - mean) ** 2).sum(1)))]
            x, y, w, h = ann['bbox']
            scale = min(img['width'], img['height']) / 128 if scaled else 1
            out[ann['id']] = dict(img=img_id, color=color, crowd=bool(ann['iscrowd']),
                                  shape=coco.cats[ann['category_id']]['name'],
                                  cx=x + w / 2, cy=y + h / 2, w=w, scale=scale)
    return out


def _extreme(cands, pool, word):
    key, sign = dict(left=('cx', -1), right=('cx', 1), top=('cy', -1),
                     bottom=('cy', 1))[word]
    best = max(cands, key=lambda o: sign * o[key])
    if all(sign * (best[key] - o[key]) > 0 for o in pool if o is not best):
        return [best]
    return []


def interpret(text, objs):
    """Set of ann ids that ``text`` denotes among ``objs`` (None: not understood).
    Definite singular descriptions ("the ...") must match exactly one object, else []."""
    def f(c=None, s=None, z=None):
        return [o for o in objs if (c is None or o['color'] == c) and
                (s is None or o['shape'] == s) and
                (z is None or (o['w'] >= 28 * o['scale']) == (z == 'big'))]

    def the(found):
        return found if len(found) == 1 else []

    ids = lambda found: {o['id'] for o in found}  # noqa: E731
    m = re.fullmatch(rf'(?:the )?({C}) ({S}) and (?:the )?({C}) ({S})', text)
    if m:
        a, b = the(f(m[1], m[2])), the(f(m[3], m[4]))
        return ids(a + b) if a and b else set()
    m = re.fullmatch(rf'(?:both|the two) ({C}) ({SP})', text)
    if m:
        found = f(m[1], PLURAL[m[2]])
        return ids(found) if len(found) == 2 else set()
    m = re.fullmatch(rf'(?:all|the) ({C}) shapes', text)
    if m:
        return ids(f(m[1]))
    m = re.fullmatch(rf'(?:all|the) ({SP})', text)
    if m:
        return ids(f(s=PLURAL[m[1]]))
    if text in ('all shapes', 'every shape'):
        return ids(objs)
    m = re.fullmatch(rf'the ({C}) ({S}) on the (left|right|top|bottom)', text)
    if m:
        cands = f(m[1], m[2])
        if not cands:
            return set()
        pool = objs if len(cands) == 1 else cands
        return ids(_extreme(cands, pool, m[3]))
    m = re.fullmatch(rf'the ({S}) that is ({C})', text)
    if m:
        return ids(the(f(m[2], m[1])))
    m = re.fullmatch(rf'(?:the )?(big |small )?({C}) ({S})', text)
    if m:
        return ids(the(f(m[2], m[3], m[1].strip() if m[1] else None)))
    m = re.fullmatch(rf'the ({C}) shape', text)
    if m:
        return ids(the(f(m[1])))
    m = re.fullmatch(rf'the ({S})', text)
    if m:
        return ids(the(f(s=m[1])))
    return None


@pytest.mark.parametrize('sizes', ['default', 'coco'])
@pytest.mark.parametrize('kind', ['refcoco', 'grefcoco', 'refzom'])
def test_every_sentence_denotes_its_targets(request, kind, sizes):
    synthref_paths = request.getfixturevalue('synthref_paths' if sizes == 'default'
                                             else 'coco_paths')
    root = synthref_paths['root']
    coco = COCO(synthref_paths[f'{kind}_instances'])
    objs = _objects(root, coco, scaled=sizes == 'coco')
    by_img = collections.defaultdict(list)
    for aid, o in objs.items():
        if not o['crowd']:
            by_img[o['img']].append(dict(o, id=aid))
    refs = load_refs(synthref_paths[f'{kind}_refs'])
    n = 0
    for ref in refs:
        aids = ref['ann_id'] if isinstance(ref['ann_id'], list) else [ref['ann_id']]
        if kind == 'grefcoco' and ref['no_target']:
            assert aids == [-1] and ref['category_id'] == [-1]
            target = set()
        elif kind == 'refzom' and ref['source'] == 'zero':
            target = set()
        else:
            target = set(aids)
            assert all(not objs[a]['crowd'] for a in target)  # crowd anns never referred to
            if kind == 'refzom':
                assert ref['source'] == ('one' if len(target) == 1 else 'many')
        for s in ref['sentences']:
            got = interpret(s['sent'], by_img[ref['image_id']])
            assert got is not None, f'grammar does not cover {s["sent"]!r}'
            assert got == target, (ref['ref_id'], s['sent'], got, target)
            assert s['raw'].lower() == s['sent'] and s['tokens'] == s['sent'].split()
            n += 1
        assert ref['sent_ids'] == [s['sent_id'] for s in ref['sentences']]
    assert n > (50 if sizes == 'default' else 15)


def test_formats_and_mix(synthref_paths):
    coco = json.load(open(synthref_paths['refcoco_instances']))
    kinds = collections.Counter()
    for a in coco['annotations']:
        seg = a['segmentation']
        kinds['poly' if isinstance(seg, list) else
              'rle' if isinstance(seg['counts'], str) else 'urle'] += 1
        kinds['crowd'] += a['iscrowd']
    assert min(kinds.values()) >= 1, kinds
    for im in coco['images']:
        assert im['file_name'] == 'COCO_train2014_%012d.jpg' % im['id']
        assert 96 <= im['width'] <= 160 and 96 <= im['height'] <= 160
        assert im['width'] != im['height']
    refs = load_refs(synthref_paths['refcoco_refs'])
    assert {r['split'] for r in refs} == {'train', 'val', 'testA', 'testB'}
    assert all(isinstance(r['ann_id'], int) for r in refs)
    # split images are disjoint
    split_imgs = collections.defaultdict(set)
    for r in refs:
        split_imgs[r['split']].add(r['image_id'])
    assert not split_imgs['train'] & split_imgs['val']
    g = load_refs(synthref_paths['grefcoco_refs'])
    t = collections.Counter('nt' if r['no_target'] else 'multi' if len(r['ann_id']) > 1
                            else 'single' for r in g)
    total = sum(t.values())
    assert abs(t['single'] / total - 0.60) < 0.1
    assert abs(t['multi'] / total - 0.25) < 0.1
    assert abs(t['nt'] / total - 0.15) < 0.07
    z = load_refs(synthref_paths['refzom_refs'])
    assert {r['split'] for r in z} == {'train', 'test'}
    assert {r['source'] for r in z} == {'zero', 'one', 'many'}


@pytest.mark.parametrize('config,field', [
    ('latentvg_tiny_synthref.py', ('tokenizer', 'spm_path', 'beit3_spm')),
    ('instalign_tiny_synthref.py', ('text_encoder', 'tokenizer_dir', 'roberta_dir')),
])
def test_point_config_at_synthref(synthref_paths, config, field):
    """Every dataloader and the model's tokenizer end up on the files make_synthref wrote."""
    from mmengine.config import Config

    from mmrefer.datasets.synthetic import point_config_at_synthref
    cfg = Config.fromfile(os.path.join(os.path.dirname(__file__), '..', '..', 'configs',
                                       'quickstart', config))
    cfg.val_dataloader = None  # as the InstAlign benchmark does: absent loaders are skipped
    root = point_config_at_synthref(cfg, synthref_paths['root'])
    assert root == synthref_paths['root'].rstrip('/') + '/'
    assert cfg.train_dataloader.dataset.data_root == root
    assert cfg.test_dataloader.dataset.data_root == root
    module, key, written = field
    assert os.path.normpath(cfg.model[module][key]) == os.path.normpath(synthref_paths[written])


def test_point_config_at_synthref_concat(synthref_paths):
    """The combined-RefCOCO config trains on a ConcatDataset: each part gets the data root
    (the ConcatDataset itself takes no data_root argument)."""
    from mmengine.config import Config

    from mmrefer.datasets.synthetic import dataset_leaves, point_config_at_synthref
    cfg = Config.fromfile(os.path.join(os.path.dirname(__file__), '..', '..', 'configs',
                                       'latentvg_beit3.py'))
    root = point_config_at_synthref(cfg, synthref_paths['root'])
    train = cfg.train_dataloader.dataset
    assert train.type == 'ConcatDataset' and 'data_root' not in train
    parts = dataset_leaves(train)
    assert [p.split_file for p in parts] == [
        'refcoco/refs(unc).p', 'refcoco+/refs(unc).p', 'refcocog/refs(umd).p']
    assert all(p.data_root == root for p in parts)
    assert cfg.val_dataloader.dataset.data_root == root
