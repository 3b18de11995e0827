"""SynthRef: a small, deterministic referring dataset written in the official file formats.

Every image shows 1-4 coloured shapes (circle / square / triangle) on a dark, lightly noisy
background. Each shape is a COCO annotation (category = shape) whose segmentation is a polygon,
a compressed RLE or an uncompressed RLE; some images also hold a grey striped ``clutter`` region
annotated with ``iscrowd=1``, which no sentence ever refers to. Sentences name colour, shape,
size and relative position, and are generated so that each one denotes exactly its targets:

* RefCOCO style (``refcoco/refs(unc).p``): one ref per shape, splits train/val/testA/testB.
* gRefCOCO style (``grefcoco/grefs(unc).json``): single-, multi- ("all green shapes") and
  no-target refs (a colour+shape pair absent from the image), ``ann_id == [-1]`` for no-target.
* Ref-ZOM style (``refzom/refs(final).p``): ``source`` zero/one/many, splits train/test.

Tokenizers trained on the sentences are written next to it: ``tokenizers/beit3.spm`` (XLM-R
sentencepiece layout: unk 0, bos 1, eos 2) and ``tokenizers/roberta/`` (byte-level BPE loadable
with ``transformers.AutoTokenizer.from_pretrained(dir)``).

Image sizes: by default each image is ``w x h`` with ``w != h`` drawn from 96-160 px. With
``image_sizes=[(w, h), ...]`` (e.g. :data:`SYNTHREF_COCO_IMAGE_SIZES`, COCO's common photo
sizes) the images cycle through those sizes and everything drawn scales with
``s = min(w, h) / 128``: shape half-sizes, gaps and margins, the clutter region and its stripes,
and the grain of the background noise (drawn at ``w/s x h/s`` and resized bilinearly), so a
640x427 image looks like an enlarged default one. Masks, RLEs, boxes and areas are computed from
the polygons at the final size.

Usage::

    from mmrefer.datasets.synthetic import make_synthref, SYNTHREF_COCO_IMAGE_SIZES
    paths = make_synthref('data/synthref', num_images=dict(train=30, val=10), seed=0)
    paths = make_synthref('data/synthref_coco', image_sizes=SYNTHREF_COCO_IMAGE_SIZES)
"""
import io
import json
import os
import os.path as osp
import pickle
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_utils

from .masks import segm_to_rle

__all__ = ['make_synthref', 'make_synthref_coco', 'parse_image_sizes', 'point_config_at_synthref',
           'dataset_leaves', 'SYNTHREF_DEFAULT_SIZES', 'SYNTHREF_SMALL_SIZES',
           'SYNTHREF_COCO_IMAGE_SIZES', 'COLORS', 'SHAPES']

#: colour name -> BGR value (clearly distinct hues; the background is dark grey)
COLORS = {
    'red': (40, 40, 230),
    'green': (50, 200, 50),
    'blue': (230, 90, 30),
    'yellow': (40, 230, 240),
    'white': (245, 245, 245),
    'purple': (200, 50, 170),
}
SHAPES = ('circle', 'square', 'triangle')
CATEGORIES = [dict(id=1, name='circle', supercategory='shape'),
              dict(id=2, name='square', supercategory='shape'),
              dict(id=3, name='triangle', supercategory='shape'),
              dict(id=4, name='clutter', supercategory='background')]
SHAPE_CAT = {'circle': 1, 'square': 2, 'triangle': 3}
PLURAL = {'circle': 'circles', 'square': 'squares', 'triangle': 'triangles'}

SYNTHREF_DEFAULT_SIZES = dict(train=300, val=60, testA=40, testB=40)
SYNTHREF_SMALL_SIZES = dict(train=30, val=10, testA=4, testB=4)
#: (width, height) of common COCO photos (landscape / portrait 3:2 and 4:3); the
#: ``image_sizes`` of :func:`make_synthref` for COCO-like SynthRef (``--coco-sizes``)
SYNTHREF_COCO_IMAGE_SIZES = [(640, 427), (427, 640), (500, 333), (640, 480), (480, 640)]
_BIG = (17, 23)     # half-size range in pixels (at scale 1)
_SMALL = (8, 11)
_MARGIN = 8         # min gap (px at scale 1) for "left/right/top/bottom" to be used
_REF_SIDE = 128     # with image_sizes, scale = min(w, h) / _REF_SIDE
_MIN_SIDE = 64      # smallest side accepted in image_sizes


# ------------------------------------------------------------------------------------- drawing
def _polygon(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    """Vertices (k, 2) float of a shape centred at (cx, cy) with half-size r."""
    if shape == 'circle':
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)
    elif shape == 'square':
        pts = np.array([[cx - r, cy - r], [cx + r, cy - r], [cx + r, cy + r], [cx - r, cy + r]])
    else:  # upward triangle
        pts = np.array([[cx, cy - r], [cx + r, cy + r], [cx - r, cy + r]])
    return np.round(pts, 1)


def _rle_uncompressed(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE (counts list, column-major, starting with a run of zeros)."""
    flat = mask.flatten(order='F').astype(np.uint8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return dict(size=[int(mask.shape[0]), int(mask.shape[1])], counts=[int(c) for c in counts])


def _scaled(v: float, scale: float) -> int:
    """``v`` px at scale 1 -> int px at ``scale`` (identity at scale 1)."""
    return v if scale == 1 else int(round(v * scale))


def _place_shapes(rng: np.random.RandomState, w: int, h: int, scale: float = 1) -> List[dict]:
    """1-4 non-overlapping shapes; at most one (colour, shape) pair is used twice, and then the
    twins differ in size and are horizontally apart, so every shape has a unique description.

    Half-sizes, gaps and margins are the scale-1 pixel values times ``scale``; each object
    dict holds ``color, shape, size, cx, cy, r`` and its scene's ``margin`` (px)."""
    n = int(rng.choice([1, 2, 3, 4], p=[0.1, 0.3, 0.35, 0.25]))
    colors = list(COLORS)
    objs: List[dict] = []
    twin = n >= 2 and rng.rand() < 0.25
    for k in range(n):
        if twin and k == 1:
            color, shape = objs[0]['color'], objs[0]['shape']
            size = 'small' if objs[0]['size'] == 'big' else 'big'
        else:
            while True:
                color, shape = colors[rng.randint(len(colors))], SHAPES[rng.randint(3)]
                if all((o['color'], o['shape']) != (color, shape) for o in objs):
                    break
            size = 'big' if rng.rand() < 0.5 else 'small'
        lo, hi = (_scaled(v, scale) for v in (_BIG if size == 'big' else _SMALL))
        edge, gap, margin = _scaled(2, scale), _scaled(3, scale), _scaled(_MARGIN, scale)
        for _ in range(200):
            r = float(rng.randint(lo, hi + 1))
            cx = float(rng.randint(int(r) + edge, w - int(r) - edge))
            cy = float(rng.randint(int(r) + edge, h - int(r) - edge))
            ok = all(abs(cx - o['cx']) > r + o['r'] + gap or
                     abs(cy - o['cy']) > r + o['r'] + gap for o in objs)
            if ok and twin and k == 1:
                ok = abs(cx - objs[0]['cx']) > margin + r + objs[0]['r']
            if ok:
                break
        else:
            continue  # no room: drop this shape
        objs.append(dict(color=color, shape=shape, size=size, cx=cx, cy=cy, r=r, margin=margin))
    return objs


def _draw_image(rng, w, h, objs, clutter, scale=1):
    """BGR uint8 ``[h, w, 3]``: grey background + Gaussian noise (std 4, grain ``scale`` px),
    the striped clutter rectangle (stripe period ``3 * scale`` px), then the filled shapes."""
    base = rng.randint(30, 70)
    img = np.full((h, w, 3), base, np.float32)
    if scale == 1:
        img += rng.randn(h, w, 3).astype(np.float32) * 4.0
    else:  # the noise of a scale-1 image, enlarged
        sh, sw = max(1, int(round(h / scale))), max(1, int(round(w / scale)))
        noise = rng.randn(sh, sw, 3).astype(np.float32) * 4.0
        img += cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if clutter is not None:
        x0, y0, x1, y1 = clutter
        stripes = (np.arange(x0, x1)[None, :] // _scaled(3, scale) % 2) * 40 + 90
        img[y0:y1, x0:x1] = stripes[..., None].astype(np.uint8)
    for o in objs:
        pts = np.round(o['poly']).astype(np.int32)
        cv2.fillPoly(img, [pts], COLORS[o['color']])
    return img


def _find_clutter(rng, w, h, objs, scale=1):
    """A small free rectangle ``(x0, y0, x1, y1)`` for the crowd region (10-19 px a side and
    2 px clear of every shape, times ``scale``), or None."""
    lo, hi, gap = _scaled(10, scale), _scaled(20, scale), _scaled(2, scale)
    for _ in range(50):
        cw, ch = rng.randint(lo, hi), rng.randint(lo, hi)
        x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
        if all(x0 + cw < o['cx'] - o['r'] - gap or x0 > o['cx'] + o['r'] + gap or
               y0 + ch < o['cy'] - o['r'] - gap or y0 > o['cy'] + o['r'] + gap for o in objs):
            return (x0, y0, x0 + cw, y0 + ch)
    return None


# ----------------------------------------------------------------------------------- sentences
def _extreme(objs, i, axis, sign, pool=None):
    """True if objs[i] is the extreme one along axis ('cx'/'cy'), by the scene's margin
    (``_MARGIN`` px times the image scale), within pool."""
    pool = range(len(objs)) if pool is None else pool
    others = [objs[j][axis] for j in pool if j != i]
    if not others:
        return False
    v = objs[i][axis]
    margin = objs[i].get('margin', _MARGIN)
    return all(sign * (v - o) > margin for o in others)


def _single_sentences(objs, i, rng) -> List[str]:
    """Several sentences, each true of objs[i] only."""
    o = objs[i]
    c, s, z = o['color'], o['shape'], o['size']
    same = [j for j, p in enumerate(objs) if (p['color'], p['shape']) == (c, s)]
    out = []
    if len(same) == 1:
        out += [f'the {c} {s}', f'{c} {s}', f'the {z} {c} {s}']
        if sum(p['color'] == c for p in objs) == 1:
            out.append(f'the {c} shape')
        if sum(p['shape'] == s for p in objs) == 1:
            out.append(f'the {s}')
        if sum(p['color'] == c for p in objs) == 1 and sum(p['shape'] == s for p in objs) == 1:
            out.append(f'the {s} that is {c}')
        for axis, sign, word in (('cx', -1, 'left'), ('cx', 1, 'right'),
                                 ('cy', -1, 'top'), ('cy', 1, 'bottom')):
            if len(objs) > 1 and _extreme(objs, i, axis, sign):
                out.append(f'the {c} {s} on the {word}')
    else:  # twins: same colour+shape, different size, horizontally apart
        out.append(f'the {z} {c} {s}')
        for axis, sign, word in (('cx', -1, 'left'), ('cx', 1, 'right')):
            if _extreme(objs, i, axis, sign, pool=same):
                out.append(f'the {c} {s} on the {word}')
    k = min(len(out), int(rng.randint(2, 4)))
    pick = rng.choice(len(out), size=k, replace=False)
    return [out[j] for j in sorted(pick)]


def _multi_candidates(objs) -> List[tuple]:
    """(target indices, sentences) for groups of >= 2 shapes."""
    cands = []
    for c in COLORS:
        idx = [j for j, p in enumerate(objs) if p['color'] == c]
        if len(idx) >= 2:
            cands.append((idx, [f'all {c} shapes', f'the {c} shapes']))
    for s in SHAPES:
        idx = [j for j, p in enumerate(objs) if p['shape'] == s]
        if len(idx) >= 2:
            cands.append((idx, [f'all {PLURAL[s]}', f'the {PLURAL[s]}']))
    pairs = {}
    for j, p in enumerate(objs):
        pairs.setdefault((p['color'], p['shape']), []).append(j)
    uniq = [(k, v[0]) for k, v in pairs.items() if len(v) == 1]
    for a in range(len(uniq)):
        for b in range(a + 1, len(uniq)):
            (c1, s1), i1 = uniq[a]
            (c2, s2), i2 = uniq[b]
            cands.append((sorted([i1, i2]), [f'the {c1} {s1} and the {c2} {s2}',
                                            f'{c1} {s1} and {c2} {s2}']))
    for (c, s), v in pairs.items():
        if len(v) == 2:
            cands.append((v, [f'both {c} {PLURAL[s]}', f'the two {c} {PLURAL[s]}']))
    if len(objs) >= 2:
        cands.append((list(range(len(objs))), ['all shapes', 'every shape']))
    return cands


def _absent_sentences(objs, rng) -> List[str]:
    present = {(p['color'], p['shape']) for p in objs}
    absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
    c, s = absent[rng.randint(len(absent))]
    out = [f'the {c} {s}', f'{c} {s}']
    if all(p['color'] != c for p in objs):
        out.append(f'the {c} shape')
    if all(p['shape'] != s for p in objs):
        out.append(f'the {s}')
    k = min(len(out), 2)
    return [out[j] for j in sorted(rng.choice(len(out), size=k, replace=False))]


# ---------------------------------------------------------------------------------- generation
class _Ids:
    def __init__(self):
        self.ref = 0
        self.sent = 0

    def sentences(self, texts):
        out = []
        for t in texts:
            out.append(dict(sent_id=self.sent, raw=t[:1].upper() + t[1:], sent=t,
                            tokens=t.split()))
            self.sent += 1
        return out


def _make_images(out_dir, sizes, rng, image_sizes=None):
    img_dir = osp.join(out_dir, 'images', 'train2014')
    os.makedirs(img_dir, exist_ok=True)
    images, anns, scenes = [], [], []
    ann_id = 1
    img_id = 100000
    k = 0  # image counter (cycles through image_sizes)
    for split, n in sizes.items():
        for _ in range(n):
            img_id += int(rng.randint(1, 50))
            if image_sizes is None:
                scale = 1
                while True:
                    w, h = int(rng.randint(96, 161)), int(rng.randint(96, 161))
                    if w != h:
                        break
            else:
                w, h = image_sizes[k % len(image_sizes)]
                scale = min(w, h) / _REF_SIDE
            k += 1
            objs = _place_shapes(rng, w, h, scale)
            clutter = _find_clutter(rng, w, h, objs, scale) if rng.rand() < 0.2 else None
            for o in objs:
                o['poly'] = _polygon(o['shape'], o['cx'], o['cy'], o['r'])
            img = _draw_image(rng, w, h, objs, clutter, scale)
            fname = 'COCO_train2014_%012d.jpg' % img_id
            cv2.imwrite(osp.join(img_dir, fname), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
            images.append(dict(id=img_id, file_name=fname, height=h, width=w,
                               license=1, coco_url='', flickr_url='', date_captured=''))
            for o in objs:
                flat = o['poly'].flatten().tolist()
                rle = segm_to_rle([flat], h, w)
                mask = mask_utils.decode(rle)
                kind = rng.choice(['poly', 'poly', 'poly', 'rle', 'urle'])
                if kind == 'poly':
                    seg = [[float(v) for v in flat]]
                elif kind == 'rle':
                    seg = dict(size=[h, w], counts=rle['counts'].decode('ascii'))
                else:
                    seg = _rle_uncompressed(mask)
                bbox = [float(v) for v in mask_utils.toBbox(rle)]
                anns.append(dict(id=ann_id, image_id=img_id, category_id=SHAPE_CAT[o['shape']],
                                 segmentation=seg, area=float(mask_utils.area(rle)), bbox=bbox,
                                 iscrowd=0))
                o['ann_id'] = ann_id
                ann_id += 1
            if clutter is not None:
                x0, y0, x1, y1 = clutter
                m = np.zeros((h, w), np.uint8)
                m[y0:y1, x0:x1] = 1
                anns.append(dict(id=ann_id, image_id=img_id, category_id=4,
                                 segmentation=_rle_uncompressed(m), area=float(m.sum()),
                                 bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                                 iscrowd=1))
                ann_id += 1
            scenes.append(dict(split=split, img_id=img_id, objs=objs))
    instances = dict(info=dict(description='SynthRef (mmrefer synthetic referring data)'),
                     licenses=[dict(id=1, name='CC0')], images=images, annotations=anns,
                     categories=CATEGORIES)
    return instances, scenes


def _refcoco_refs(scenes, rng):
    ids, refs = _Ids(), []
    for sc in scenes:
        for i, o in enumerate(sc['objs']):
            sents = ids.sentences(_single_sentences(sc['objs'], i, rng))
            refs.append(dict(
                ref_id=ids.ref, ann_id=o['ann_id'], image_id=sc['img_id'],
                category_id=SHAPE_CAT[o['shape']], split=sc['split'],
                # official file names carry an ann-derived suffix: loaders must ignore them
                file_name='COCO_train2014_%012d_%d.jpg' % (sc['img_id'], o['ann_id']),
                sent_ids=[s['sent_id'] for s in sents], sentences=sents))
            ids.ref += 1
    return refs


def _grefcoco_refs(scenes, rng):
    """~60% single, ~25% multi, ~15% no-target refs (counted over refs)."""
    ids, refs = _Ids(), []
    n_single = n_multi = n_nt = 0

    def add(sc, targets, texts):
        sents = ids.sentences(texts)
        objs = sc['objs']
        nt = not targets
        refs.append(dict(
            ref_id=ids.ref, image_id=sc['img_id'], split=sc['split'],
            ann_id=[-1] if nt else [objs[j]['ann_id'] for j in targets],
            category_id=[-1] if nt else [SHAPE_CAT[objs[j]['shape']] for j in targets],
            no_target=nt, file_name='COCO_train2014_%012d.jpg' % sc['img_id'],
            sent_ids=[s['sent_id'] for s in sents], sentences=sents))
        ids.ref += 1

    for sc in scenes:
        objs = sc['objs']
        for i in range(len(objs)):
            add(sc, [i], _single_sentences(objs, i, rng))
            n_single += 1
        cands = _multi_candidates(objs)
        order = rng.permutation(len(cands))
        for k in order[:2]:
            if n_multi >= n_single * 25 / 60:
                break
            idx, texts = cands[k]
            add(sc, idx, texts)
            n_multi += 1
        if n_nt < (n_single + n_multi) * 15 / 85:
            add(sc, [], _absent_sentences(objs, rng))
            n_nt += 1
    return refs


def _refzom_refs(scenes, rng):
    """Ref-ZOM style: ``source`` zero/one/many; ann_id int for one, list for many; zero refs
    carry an empty list or (as some official refs do) an unrelated ann id, to be ignored."""
    ids, refs = _Ids(), []
    for sc in scenes:
        split = 'train' if sc['split'] == 'train' else 'test'
        objs = sc['objs']
        items = [([i], _single_sentences(objs, i, rng)) for i in range(len(objs))]
        cands = _multi_candidates(objs)
        if cands:
            items.append(cands[rng.randint(len(cands))])
        items.append(([], _absent_sentences(objs, rng)))
        for targets, texts in items:
            sents = ids.sentences(texts)
            if not targets:
                source = 'zero'
                ann = [] if rng.rand() < 0.7 else [objs[0]['ann_id']]
                cat = [] if not ann else [SHAPE_CAT[objs[0]['shape']]]
            elif len(targets) == 1:
                source = 'one'
                ann = objs[targets[0]]['ann_id']
                cat = SHAPE_CAT[objs[targets[0]]['shape']]
            else:
                source = 'many'
                ann = [objs[j]['ann_id'] for j in targets]
                cat = [SHAPE_CAT[objs[j]['shape']] for j in targets]
            refs.append(dict(ref_id=ids.ref, image_id=sc['img_id'], split=split, ann_id=ann,
                             category_id=cat, source=source,
                             file_name='COCO_train2014_%012d.jpg' % sc['img_id'],
                             sent_ids=[s['sent_id'] for s in sents], sentences=sents))
            ids.ref += 1
    return refs


SPM_FILE = osp.join('tokenizers', 'beit3.spm')  # tiny XLM-R-layout sentencepiece model
ROBERTA_DIR = osp.join('tokenizers', 'roberta')  # tiny RoBERTa BPE (AutoTokenizer-loadable)


def dataset_leaves(ds) -> list:
    """The dataset configs that read files under a dataset config ``ds``: ``ds`` itself, or
    the parts of a ``ConcatDataset`` (``datasets``) / the inner ``dataset`` of a wrapper,
    recursively."""
    if ds.get('datasets') is not None:
        return [leaf for part in ds['datasets'] for leaf in dataset_leaves(part)]
    if ds.get('dataset') is not None:
        return dataset_leaves(ds['dataset'])
    return [ds]


def point_config_at_synthref(cfg, root: str) -> str:
    """Point a config's dataloaders and its model's tokenizer at the SynthRef folder ``root``.

    Sets ``data_root`` of every train/val/test dataloader the config has (of each part of a
    ``ConcatDataset`` and of the dataset inside a wrapper such as ``RepeatDataset``), and
    ``model.tokenizer.spm_path`` (Latent-VG) or ``model.text_encoder.tokenizer_dir``
    (InstAlign) when the model has one. Returns ``root`` with a trailing ``/``.
    """
    root = root.rstrip('/') + '/'
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(key):
            for ds in dataset_leaves(cfg[key].dataset):
                ds.data_root = root
    model = cfg.model
    if model.get('tokenizer') and 'spm_path' in model.tokenizer:
        model.tokenizer.spm_path = osp.join(root, SPM_FILE)
    if model.get('text_encoder') and 'tokenizer_dir' in model.text_encoder:
        model.text_encoder.tokenizer_dir = osp.join(root, ROBERTA_DIR)
    return root


def _write_tokenizers(out_dir, corpus):
    import sentencepiece as spm
    from tokenizers import ByteLevelBPETokenizer
    spm_path, rob_dir = osp.join(out_dir, SPM_FILE), osp.join(out_dir, ROBERTA_DIR)
    os.makedirs(rob_dir, exist_ok=True)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=buf, vocab_size=64, model_type='unigram',
        character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        hard_vocab_limit=False, num_threads=1, minloglevel=2)
    with open(spm_path, 'wb') as f:
        f.write(buf.getvalue())
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=1, show_progress=False,
                            special_tokens=['<s>', '<pad>', '</s>', '<unk>', '<mask>'])
    bpe.save_model(rob_dir)
    with open(osp.join(rob_dir, 'tokenizer_config.json'), 'w') as f:
        json.dump(dict(tokenizer_class='RobertaTokenizer', model_max_length=512,
                       bos_token='<s>', eos_token='</s>', sep_token='</s>', cls_token='<s>',
                       unk_token='<unk>', pad_token='<pad>', mask_token='<mask>',
                       add_prefix_space=False), f, indent=1, sort_keys=True)
    return spm_path, rob_dir


def _dump_pickle(obj, path):
    with open(path, 'wb') as f:
        pickle.dump(obj, f, protocol=2)


def _dump_json(obj, path):
    with open(path, 'w') as f:
        json.dump(obj, f)


def parse_image_sizes(spec) -> Optional[List[Tuple[int, int]]]:
    """``'640x427,427x640'`` or ``[(640, 427), ...]`` -> ``[(w, h), ...]`` (None stays None).

    Raises ValueError naming the bad entry: not ``WxH``, not integers, or a side below
    ``_MIN_SIDE`` (64) px."""
    if spec is None:
        return None
    if isinstance(spec, str):
        items = [t.strip() for t in spec.split(',') if t.strip()]
        pairs = []
        for t in items:
            parts = t.lower().split('x')
            if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
                raise ValueError(f'image_sizes: {t!r} is not WIDTHxHEIGHT (e.g. 640x427)')
            pairs.append((int(parts[0]), int(parts[1])))
    else:
        pairs = []
        for t in spec:
            if (not isinstance(t, (tuple, list)) or len(t) != 2 or
                    not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                            for v in t)):
                raise ValueError(f'image_sizes: {t!r} is not a (width, height) pair of ints')
            pairs.append((int(t[0]), int(t[1])))
    if not pairs:
        raise ValueError(f'image_sizes: no size given in {spec!r}')
    for w, h in pairs:
        if min(w, h) < _MIN_SIDE:
            raise ValueError(f'image_sizes: {w}x{h} has a side below {_MIN_SIDE} px')
    return pairs


def make_synthref(out_dir: str, num_images: Optional[Dict[str, int]] = None, seed: int = 0,
                  tokenizers: bool = True,
                  image_sizes: Optional[Sequence[Tuple[int, int]]] = None) -> Dict[str, str]:
    """Write SynthRef under ``out_dir`` (deterministic for a given ``seed`` and sizes).

    Args:
        out_dir (str): output root, e.g. ``data/synthref``.
        num_images (dict): images per split (``train``, ``val``, ``testA``, ``testB``);
            default :data:`SYNTHREF_DEFAULT_SIZES`.
        seed (int): random seed.
        tokenizers (bool): also train the tiny sentencepiece and RoBERTa BPE tokenizers.
        image_sizes (list[tuple[int, int]] | str, optional): ``(width, height)`` of the images,
            cycled in order (image ``k`` gets ``image_sizes[k % len]``), or a ``'WxH,WxH'``
            string; shapes, gaps, margins, clutter and noise grain scale with
            ``min(w, h) / 128``. None (default): random 96-160 px sizes at scale 1, byte-identical
            to earlier releases for the same seed. :data:`SYNTHREF_COCO_IMAGE_SIZES` gives
            COCO-like photo sizes.

    Returns:
        dict: paths of everything written (``root``, ``img_dir``, ``refcoco_instances``,
        ``refcoco_refs``, ``grefcoco_instances``, ``grefcoco_refs``, ``refzom_instances``,
        ``refzom_refs``, ``beit3_spm``, ``roberta_dir``).
    """
    sizes = dict(SYNTHREF_DEFAULT_SIZES if num_images is None else num_images)
    for k, v in sizes.items():
        if k not in ('train', 'val', 'testA', 'testB'):
            raise ValueError(f'make_synthref: unknown split {k!r} in num_images; expected '
                             'train, val, testA, testB')
        if not isinstance(v, int) or v < 0:
            raise ValueError(f'make_synthref: num_images[{k!r}] must be an int >= 0, got {v!r}')
    image_sizes = parse_image_sizes(image_sizes)
    rng = np.random.RandomState(seed)
    instances, scenes = _make_images(out_dir, sizes, rng, image_sizes)
    paths = dict(root=out_dir, img_dir=osp.join(out_dir, 'images', 'train2014'))
    corpus = []
    for name, fn, refs_name, dump in (('refcoco', _refcoco_refs, 'refs(unc).p', _dump_pickle),
                                      ('grefcoco', _grefcoco_refs, 'grefs(unc).json', _dump_json),
                                      ('refzom', _refzom_refs, 'refs(final).p', _dump_pickle)):
        d = osp.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        refs = fn(scenes, rng)
        _dump_json(instances, osp.join(d, 'instances.json'))
        dump(refs, osp.join(d, refs_name))
        paths[f'{name}_instances'] = osp.join(d, 'instances.json')
        paths[f'{name}_refs'] = osp.join(d, refs_name)
        corpus += [s[k] for r in refs for s in r['sentences'] for k in ('raw', 'sent')]
    if tokenizers:
        paths['beit3_spm'], paths['roberta_dir'] = _write_tokenizers(out_dir, sorted(set(corpus)))
    return paths


def make_synthref_coco(root: str) -> str:
    """SynthRef at COCO photo sizes under ``root``, written once (small split sizes, seed 0).

    ``make_synthref(image_sizes=SYNTHREF_COCO_IMAGE_SIZES)`` (640x427, 427x640, 500x333,
    640x480, 480x640), plus ``refcoco+/`` and ``refcocog/`` aliases of its RefCOCO files so that
    the combined-RefCOCO config's three parts and its ``exclude_images_of`` lists resolve
    (RefCOCOg's umd ``test`` split = RefCOCO's testA + testB). A ``.complete`` marker makes later
    calls free. Used by the paper-size check and the pipeline benchmark. Returns ``root``.
    """
    from .safe_pickle import load_refs
    done = osp.join(root, '.complete')
    if osp.isfile(done):
        return root
    make_synthref(root, num_images=SYNTHREF_SMALL_SIZES, seed=0,
                  image_sizes=SYNTHREF_COCO_IMAGE_SIZES)
    links = [('refcoco+', 'instances.json'), ('refcocog', 'instances.json'),
             ('refcoco+', 'refs(unc).p')]
    for alias, name in links:
        os.makedirs(osp.join(root, alias), exist_ok=True)
        dst = osp.join(root, alias, name)
        if not osp.lexists(dst):
            os.symlink(osp.join('..', 'refcoco', name), dst)
    refs = load_refs(osp.join(root, 'refcoco', 'refs(unc).p'))
    for r in refs:
        if r['split'] in ('testA', 'testB'):
            r['split'] = 'test'
    _dump_pickle(refs, osp.join(root, 'refcocog', 'refs(umd).p'))
    open(done, 'w').close()
    return root
