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
from mmrefer.datasets.synthetic import COLORS, SHAPES, make_synthref

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


def test_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match="unknown split 'test'"):
        make_synthref(str(tmp_path), dict(test=3))


def _objects(root, coco):
    """ann_id -> dict(color, shape, cx, cy, w, crowd) read back from pixels + annotations."""
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
            out[ann['id']] = dict(img=img_id, color=color, crowd=bool(ann['iscrowd']),
                                  shape=coco.cats[ann['category_id']]['name'],
                                  cx=x + w / 2, cy=y + h / 2, w=w)
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
                (z is None or (o['w'] >= 28) == (z == 'big'))]

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


@pytest.mark.parametrize('kind', ['refcoco', 'grefcoco', 'refzom'])
def test_every_sentence_denotes_its_targets(synthref_paths, kind):
    root = synthref_paths['root']
    coco = COCO(synthref_paths[f'{kind}_instances'])
    objs = _objects(root, coco)
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
    assert n > 50


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
