"""Helpers: a hand-made referring dataset in the official formats (tests/datasets only).

Two images (11: 40x50, 12: 30x60) and these annotations of ``instances.json``:

==  =====  =============================================  ==========================
id  image  segmentation                                   notes
==  =====  =============================================  ==========================
1   11     polygon square (5,5)-(20,20)                   bbox [5, 5, 15, 15]
2   11     compressed RLE, rows 25..34, cols 30..44       bbox [30, 25, 15, 10]
3   11     uncompressed RLE, rows 2..7, cols 40..47       bbox [40, 2, 8, 6]
4   11     uncompressed RLE, crowd                        iscrowd=1
5   12     polygons: a 2-point part + a triangle          degenerate part dropped
6   12     only a 2-point polygon                         annotation dropped
==  =====  =============================================  ==========================
"""
import json
import pickle

import cv2
import numpy as np
import pycocotools.mask as mask_utils

H11, W11, H12, W12 = 40, 50, 30, 60


def rect_mask(h, w, r0, r1, c0, c1):
    m = np.zeros((h, w), np.uint8)
    m[r0:r1, c0:c1] = 1
    return m


def uncompressed_rle(m):
    flat = m.flatten(order='F')
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    return dict(size=list(m.shape), counts=[int(c) for c in counts])


def sent(i, text):
    return dict(sent_id=i, sent=text, raw=text.capitalize(), tokens=text.split())


def build_mini(root):
    """Write the mini dataset under ``root``; return a dict of paths."""
    (root / 'images').mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    cv2.imwrite(str(root / 'images' / 'a.png'), rng.randint(0, 255, (H11, W11, 3), np.uint8))
    cv2.imwrite(str(root / 'images' / 'b.png'), rng.randint(0, 255, (H12, W12, 3), np.uint8))
    m2 = rect_mask(H11, W11, 25, 35, 30, 45)
    rle2 = mask_utils.encode(np.asfortranarray(m2))
    anns = [
        dict(id=1, image_id=11, category_id=1, iscrowd=0, area=225.0, bbox=[5, 5, 15, 15],
             segmentation=[[5, 5, 20, 5, 20, 20, 5, 20]]),
        dict(id=2, image_id=11, category_id=1, iscrowd=0, area=150.0, bbox=[30, 25, 15, 10],
             segmentation=dict(size=[H11, W11], counts=rle2['counts'].decode('ascii'))),
        dict(id=3, image_id=11, category_id=2, iscrowd=0, area=48.0, bbox=[40, 2, 8, 6],
             segmentation=uncompressed_rle(rect_mask(H11, W11, 2, 8, 40, 48))),
        dict(id=4, image_id=11, category_id=2, iscrowd=1, area=16.0, bbox=[0, 30, 4, 4],
             segmentation=uncompressed_rle(rect_mask(H11, W11, 30, 34, 0, 4))),
        dict(id=5, image_id=12, category_id=3, iscrowd=0, area=150.0, bbox=[10, 10, 20, 15],
             segmentation=[[1, 1, 2, 2], [10, 10, 30, 10, 20, 25]]),
        dict(id=6, image_id=12, category_id=3, iscrowd=0, area=0.0, bbox=[1, 1, 4, 4],
             segmentation=[[1, 1, 5, 5]]),
    ]
    images = [dict(id=11, file_name='a.png', height=H11, width=W11),
              dict(id=12, file_name='b.png', height=H12, width=W12)]
    inst = dict(images=images, annotations=anns,
                categories=[dict(id=i, name=f'c{i}') for i in (1, 2, 3)])
    (root / 'instances.json').write_text(json.dumps(inst))

    refs = [
        # file_name deliberately wrong: images are resolved through image_id
        dict(ref_id=0, ann_id=1, image_id=11, category_id=1, split='train',
             file_name='COCO_train2014_000000000011_1.jpg', sent_ids=[0, 1],
             sentences=[sent(0, 'the left square'), sent(1, 'top left thing')]),
        dict(ref_id=1, ann_id=2, image_id=11, category_id=1, split='val', file_name='x.jpg',
             sent_ids=[2], sentences=[sent(2, 'the bottom box')]),
        dict(ref_id=2, ann_id=3, image_id=11, category_id=2, split='val', file_name='x.jpg',
             sent_ids=[3, 4], sentences=[sent(3, 'small thing top right'),
                                         dict(sent_id=4, sent='', raw='', tokens=[])]),
        dict(ref_id=3, ann_id=5, image_id=12, category_id=3, split='val', file_name='x.jpg',
             sent_ids=[5], sentences=[sent(5, '  The Triangle,  verbatim  ')]),
        dict(ref_id=4, ann_id=4, image_id=11, category_id=2, split='val', file_name='x.jpg',
             sent_ids=[6], sentences=[sent(6, 'the crowd')]),
        dict(ref_id=5, ann_id=6, image_id=12, category_id=3, split='testA', file_name='x.jpg',
             sent_ids=[7], sentences=[sent(7, 'a line')]),
    ]
    with open(root / 'refs(unc).p', 'wb') as f:
        pickle.dump(refs, f, protocol=2)

    grefs = [
        dict(ref_id=10, ann_id=[1, 2, 4], category_id=[1, 1, 2], image_id=11, split='val',
             no_target=False, file_name='COCO_train2014_000000000011_5.jpg', sent_ids=[0],
             sentences=[sent(0, 'the two boxes')]),
        dict(ref_id=11, ann_id=[-1], category_id=[-1], image_id=11, split='val',
             no_target=True, file_name='x.jpg', sent_ids=[1, 2],
             sentences=[sent(1, 'the dog'), sent(2, 'a cat')]),
        dict(ref_id=12, ann_id=3, category_id=2, image_id=11, split='val', no_target=False,
             file_name='x.jpg', sent_ids=[3], sentences=[sent(3, 'tiny box')]),
        dict(ref_id=13, ann_id=[5], category_id=[3], image_id=12, split='train',
             no_target=False, file_name='x.jpg', sent_ids=[4], sentences=[sent(4, 'triangle')]),
    ]
    (root / 'grefs(unc).json').write_text(json.dumps(grefs))

    zom = [
        dict(ref_id=20, ann_id=[], image_id=11, split='test', source='zero', sent_ids=[0],
             sentences=[sent(0, 'the elephant')]),
        dict(ref_id=21, ann_id=1, image_id=11, split='test', source='one', sent_ids=[1],
             sentences=[sent(1, 'the square')]),
        dict(ref_id=22, ann_id=[1, 3], image_id=11, split='test', source='many', sent_ids=[2],
             sentences=[sent(2, 'both boxes')]),
        dict(ref_id=23, ann_id=2, image_id=11, split='test', source='zero', sent_ids=[3],
             sentences=[sent(3, 'the giraffe')]),
        dict(ref_id=24, ann_id=5, image_id=12, split='train', source='one', sent_ids=[4],
             sentences=[sent(4, 'triangle')]),
    ]
    with open(root / 'refs(final).p', 'wb') as f:
        pickle.dump(zom, f, protocol=2)
    return dict(root=str(root), instances=str(root / 'instances.json'))

