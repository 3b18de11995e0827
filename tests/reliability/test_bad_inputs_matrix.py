"""The bad-data matrix of the reliability issue, walked on SynthRef-derived files.

Each case copies the session's SynthRef (``synthref_root``) to ``tmp_path``, corrupts the copy
and checks the documented outcome (docs/reliability.md keeps the same table):

=============================  =====================================================  ========
case                           outcome                                                kinds
=============================  =====================================================  ========
missing image file             FileNotFoundError naming the path and the sample       both
corrupt image file             ValueError 'could not decode image <path>'             both
grayscale / RGBA image         loaded as 3-channel BGR                                both
empty instances.json           ValueError naming the file ('is empty')                both
instances.json without images  ValueError naming the file ('holds no images')         both
ref whose ann ids are missing  KeyError naming refs file, ref_id and ann_id           both
crowd-only target              ref skipped; warning with counts                       both
degenerate polygon (< 3 pts)   part dropped (ann dropped if none left); warning       both
zero-area mask                 target kept with an empty mask; warning, count, ids    both
empty sentence                 sentence skipped; warning with count                   both
500-word sentence              kept; tokenizers truncate with a warning + count       both
unknown split name             ValueError listing the available splits               both
ref without a split            KeyError naming the refs file and the ref_id           both
image entry without height     KeyError naming instances.json, the image and field    both
sentence without raw/sent      KeyError naming the refs file, ref_id and sentence     both
refs neither pickle nor JSON   ValueError naming the file                             both
malicious refs pickle          UnsafePickleError naming file and global; no code runs both
=============================  =====================================================  ========

and the build-time checks of fields (boxes, ids, duplicates, polygons, RLEs, sentences, image
entries, encodings): each error names the file, the ref / annotation / image and the field
(the rows after the table in docs/reliability.md).

"both" = the RefCOCO (pickle refs) and gRefCOCO (JSON refs) layouts. The image cases are also
run through an mmengine-built DataLoader with ``num_workers=2``: the error raised in the main
process keeps its type and still names the file.
"""
import json
import logging
import os
import pickle
import re
import shutil
import warnings

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest

from mmrefer.utils import register_all_modules
from reliability_helpers import captured_log

register_all_modules()

KINDS = {
    'refcoco': dict(type='RefCOCODataset', ann_file='refcoco/instances.json',
                    split_file='refcoco/refs(unc).p'),
    'grefcoco': dict(type='GRefCOCODataset', ann_file='grefcoco/instances.json',
                     split_file='grefcoco/grefs(unc).json'),
}
SPLITS = ['testA', 'testB', 'train', 'val']
PIPELINE = [dict(type='LoadRefImageFromFile', color_type='color'),
            dict(type='LoadRefAnnotations'),
            dict(type='RefResize', scale=(64, 64)),
            dict(type='PackRefInputs')]


# ------------------------------------------------------------------------------ helpers
def warnings_of(log):
    return '\n'.join(m for lvl, m in log if lvl >= logging.WARNING)


@pytest.fixture
def root(synthref_root, tmp_path):
    """A private copy of SynthRef's images + RefCOCO/gRefCOCO files, safe to corrupt."""
    dst = tmp_path / 'synthref'
    for sub in ('images', 'refcoco', 'grefcoco'):
        shutil.copytree(synthref_root / sub, dst / sub)
    return dst


def build(root, kind, pipeline=(), split='val', **kw):
    from mmrefer.registry import DATASETS
    return DATASETS.build(dict(KINDS[kind], data_root=str(root) + '/', split=split,
                               data_prefix=dict(img_path='images/train2014/'),
                               pipeline=list(pipeline), **kw))


def refs_path(root, kind):
    return root / KINDS[kind]['split_file']


def read_refs(root, kind):
    data = refs_path(root, kind).read_bytes()
    return pickle.loads(data) if kind == 'refcoco' else json.loads(data)


def write_refs(root, kind, refs):
    path = refs_path(root, kind)
    if kind == 'refcoco':
        path.write_bytes(pickle.dumps(refs, protocol=2))
    else:
        path.write_text(json.dumps(refs))


def read_coco(root, kind):
    return json.loads((root / KINDS[kind]['ann_file']).read_text())


def write_coco(root, kind, coco):
    (root / KINDS[kind]['ann_file']).write_text(json.dumps(coco))


def target_ids(ref):
    aid = ref['ann_id']
    return list(aid) if isinstance(aid, list) else [aid]


def first_val_ref(refs):
    """The first targeted val ref (and its index in the list)."""
    for i, r in enumerate(refs):
        if r['split'] == 'val' and target_ids(r) != [-1] and not r.get('no_target'):
            return i, r
    raise AssertionError('SynthRef has no targeted val ref')


def set_ann(root, kind, ann_ids, **fields):
    coco = read_coco(root, kind)
    for a in coco['annotations']:
        if a['id'] in ann_ids:
            a.update(fields)
    write_coco(root, kind, coco)
    return coco


def first_sample_image(root, kind):
    ds = build(root, kind)
    info = ds.get_data_info(0)
    return info, root / 'images' / 'train2014' / os.path.basename(info['img_path'])


def sentences_of(ds, ref_id):
    return [ds.get_data_info(i)['sent_id'] for i in range(len(ds))
            if ds.get_data_info(i)['ref_id'] == ref_id]


# ----------------------------------------------------------------- annotation-file cases
def case_empty_instances_json(root, kind):
    (root / KINDS[kind]['ann_file']).write_bytes(b'')
    with pytest.raises(ValueError, match=r"instances file '.*instances\.json' is empty"):
        build(root, kind)


def case_instances_json_without_images(root, kind):
    coco = read_coco(root, kind)
    coco['images'] = []
    write_coco(root, kind, coco)
    with pytest.raises(ValueError, match=r"instances\.json' holds no images"):
        build(root, kind)


def case_missing_ann_ids(root, kind):
    refs = read_refs(root, kind)
    i, ref = first_val_ref(refs)
    ref['ann_id'] = [987654] if kind == 'grefcoco' else 987654
    write_refs(root, kind, refs)
    with pytest.raises(KeyError) as err:
        build(root, kind)
    assert (f"{refs_path(root, kind)}: ref_id {ref['ref_id']} names ann_id 987654, which is "
            f"not in {root / KINDS[kind]['ann_file']}") in str(err.value)


def _corrupt_first_val_ref_targets(root, kind, corrupt):
    """Build the dataset (``base``), then apply ``corrupt(ann, coco)`` to the target annotations
    of the first targeted val ref; returns ``(base, val refs, that ref, its target ids, how many
    times the val refs name them)``."""
    base = build(root, kind)
    refs = [r for r in read_refs(root, kind) if r['split'] == 'val']
    _, ref = first_val_ref(refs)
    ids = set(target_ids(ref))
    uses = sum(len(set(target_ids(r)) & ids) for r in refs)
    coco = read_coco(root, kind)
    for a in coco['annotations']:
        if a['id'] in ids:
            corrupt(a, coco)
    write_coco(root, kind, coco)
    return base, refs, ref, ids, uses


def _skip_one_ref(root, kind, corrupt, counts):
    """Corrupt the annotations of the first targeted val ref with ``corrupt(ann, coco)``; every
    val ref left without a target must be skipped (its sentences gone, nothing else) with a
    warning holding ``counts(n_annotation_uses, n_refs_skipped)``."""
    base, refs, ref, ids, uses = _corrupt_first_val_ref_targets(root, kind, corrupt)
    gone = [r['ref_id'] for r in refs
            if target_ids(r) != [-1] and set(target_ids(r)) <= ids]
    lost = sum(len(sentences_of(base, rid)) for rid in gone)
    assert ref['ref_id'] in gone and lost > 0
    with captured_log() as log:
        ds = build(root, kind)
    assert all(sentences_of(ds, rid) == [] for rid in gone)
    assert len(ds) == len(base) - lost
    text = warnings_of(log)
    for key, n in counts(uses, len(gone)).items():
        assert f'{key}: {n}' in text, (key, text)
    return sorted(ids), text


def case_crowd_only_target(root, kind):
    def crowd(a, coco):
        a['iscrowd'] = 1
    _skip_one_ref(root, kind, crowd, lambda n_ann, n_ref: {
        'crowd target annotations skipped': n_ann, 'refs skipped (no usable target)': n_ref})


def case_degenerate_polygons(root, kind):
    def two_points(a, coco):
        x, y = a['bbox'][:2]
        a['segmentation'] = [[x, y, x + 5, y + 5]]  # 2 points
    ids, text = _skip_one_ref(root, kind, two_points, lambda n_ann, n_ref: {
        'degenerate polygon parts dropped': n_ann,
        'annotations dropped (no valid polygon)': n_ann,
        'refs skipped (no usable target)': n_ref})
    for aid in ids:  # the warning names the annotations
        assert re.search(rf'annotation ids \[[^\]]*\b{aid}\b', text), (aid, text)


def case_degenerate_polygon_part(root, kind):
    # a valid polygon plus a 2-point part: the part is dropped, the sample keeps the polygon
    _, ref = first_val_ref(read_refs(root, kind))
    aid = target_ids(ref)[0]
    coco = read_coco(root, kind)
    ann = next(a for a in coco['annotations'] if a['id'] == aid)
    x, y, w, h = ann['bbox']
    square = [x, y, x + w, y, x + w, y + h, x, y + h]
    set_ann(root, kind, {aid}, segmentation=[square, [x, y, x + 1, y + 1]])
    with captured_log() as log:
        ds = build(root, kind)
    assert 'degenerate polygon parts dropped: 1' in warnings_of(log)
    assert f'annotation ids [{aid}]' in warnings_of(log)
    info = next(ds.get_data_info(i) for i in range(len(ds))
                if ds.get_data_info(i)['ref_id'] == ref['ref_id'])
    inst = next(m for m in info['instances'] if m['bbox'] == [x, y, x + w, y + h])
    assert inst['mask'] == [square]


def _keep_empty_target(root, kind, corrupt):
    """Corrupt the target annotations of the first targeted val ref so that their masks cover
    no pixel: every sample stays (a target whose mask is empty is still a target, as in
    pycocotools' annToMask, ReLA and LAVT), its loaded ground truth is empty, its REC box still
    comes from instances.json, and a warning counts and names the annotations."""
    base, _, ref, ids, uses = _corrupt_first_val_ref_targets(root, kind, corrupt)
    with captured_log() as log:
        ds = build(root, kind, pipeline=PIPELINE[:2])
    assert len(ds) == len(base)
    text = warnings_of(log)
    assert f'zero-area target masks kept (empty): {uses}' in text, text
    assert all(re.search(rf'annotation ids \[[^\]]*\b{aid}\b', text) for aid in ids), text
    i = next(i for i in range(len(ds)) if ds.get_data_info(i)['ref_id'] == ref['ref_id'])
    before, info = base.get_data_info(i), ds.get_data_info(i)
    assert info['ref_bbox'] == before['ref_bbox'] and not info['no_target']
    assert len(info['instances']) == len(before['instances'])
    masks = ds[i]['gt_masks'].masks
    assert masks.shape[0] == len(ids) and masks.sum() == 0


def case_zero_area_polygon(root, kind):
    def collinear(a, coco):
        x, y = a['bbox'][:2]
        a['segmentation'] = [[x, y, x + 4, y + 4, x + 8, y + 8]]  # 3 points on a line
    _keep_empty_target(root, kind, collinear)


def case_zero_area_rle(root, kind):
    def empty_rle(a, coco):
        img = next(i for i in coco['images'] if i['id'] == a['image_id'])
        rle = mask_utils.encode(np.zeros((img['height'], img['width']), np.uint8, order='F'))
        a['segmentation'] = dict(size=rle['size'], counts=rle['counts'].decode('ascii'))
    _keep_empty_target(root, kind, empty_rle)


def case_empty_sentence(root, kind):
    base = build(root, kind)
    refs = read_refs(root, kind)
    _, ref = first_val_ref(refs)
    sent = ref['sentences'][0]
    sent['sent'], sent['raw'] = '   ', ''
    write_refs(root, kind, refs)
    with captured_log() as log:
        ds = build(root, kind)
    assert len(ds) == len(base) - 1
    assert sent['sent_id'] not in sentences_of(ds, ref['ref_id'])
    assert 'empty sentences skipped: 1' in warnings_of(log)


def case_blank_raw_sentence_falls_back_to_sent(root, kind):
    base = build(root, kind)
    refs = read_refs(root, kind)
    _, ref = first_val_ref(refs)
    sent = ref['sentences'][0]
    sent['raw'] = '  '
    write_refs(root, kind, refs)
    ds = build(root, kind)
    assert len(ds) == len(base)
    texts = [ds.get_data_info(i)['text'] for i in range(len(ds))
             if ds.get_data_info(i)['sent_id'] == sent['sent_id']]
    assert texts == [sent['sent']]


def case_long_sentence(root, kind):
    # kept verbatim by the dataset; truncation is the tokenizers' job (test_long_sentence_*)
    refs = read_refs(root, kind)
    _, ref = first_val_ref(refs)
    long = ' '.join(['red'] * 500)
    ref['sentences'][0]['sent'] = ref['sentences'][0]['raw'] = long
    write_refs(root, kind, refs)
    ds = build(root, kind)
    texts = [ds.get_data_info(i)['text'] for i in range(len(ds))]
    assert texts.count(long) == 1


def _edit_first_val_ref_raises(root, kind, edit, message, error=KeyError):
    """``edit(ref)`` on the first targeted val ref; building must raise ``error`` matching
    ``message(ref)``."""
    refs = read_refs(root, kind)
    _, ref = first_val_ref(refs)
    edit(ref)
    write_refs(root, kind, refs)
    with pytest.raises(error, match=message(ref)):
        build(root, kind)


def case_ref_without_split(root, kind):
    _edit_first_val_ref_raises(
        root, kind, lambda ref: ref.pop('split'),
        lambda ref: rf"{re.escape(str(refs_path(root, kind)))}: ref {ref['ref_id']} has no "
                    r"'split' field")


def case_image_entry_without_size(root, kind):
    info, _ = first_sample_image(root, kind)
    coco = read_coco(root, kind)
    img = next(i for i in coco['images'] if i['id'] == info['img_id'])
    del img['height']
    write_coco(root, kind, coco)
    with pytest.raises(KeyError, match=rf"instances.json: image {info['img_id']} \(named by "
                                       rf"ref_id \d+ of .*\) has no field\(s\) \['height'\]"):
        build(root, kind)


def case_sentence_without_text_field(root, kind):
    def edit(ref):
        ref['sentences'][1] = dict(sent_id=ref['sentences'][1]['sent_id'], tokens=['a'])
    _edit_first_val_ref_raises(
        root, kind, edit,
        lambda ref: rf"ref_id {ref['ref_id']} sentence 1 has neither 'raw' nor 'sent'")


def case_sentence_without_sent_id(root, kind):
    # refer.py / G_REFER fail on it (KeyError in createIndex); a silent default id would repeat
    # across refs and mix samples up in results and per-sample dumps
    _edit_first_val_ref_raises(
        root, kind, lambda ref: ref['sentences'][1].pop('sent_id'),
        lambda ref: rf"{re.escape(str(refs_path(root, kind)))}: ref_id {ref['ref_id']} "
                    r"sentence 1 has no 'sent_id'")


def case_unknown_split(root, kind):
    with pytest.raises(ValueError) as err:
        build(root, kind, split='nosuch')
    assert (f"split(s) ['nosuch'] not in '{refs_path(root, kind)}'; available splits: "
            f'{SPLITS!r}') in str(err.value)


def case_refs_garbage_bytes(root, kind):
    refs_path(root, kind).write_bytes(b'\x00\x01\x02 definitely not annotations')
    with pytest.raises(ValueError, match=r'refs file .* is neither JSON nor a readable pickle'):
        build(root, kind)


def case_refs_plain_text(root, kind):
    refs_path(root, kind).write_text('these are my refs, one per line\n')
    with pytest.raises(ValueError, match=r'refs file .* is neither JSON nor a readable pickle'):
        build(root, kind)


def case_refs_broken_json(root, kind):
    refs_path(root, kind).write_text('[{"ref_id": 1, "split": ')
    with pytest.raises(ValueError, match=r'looks like JSON but does not parse'):
        build(root, kind)


def _first_target_annotation(root, kind):
    """``(coco, ann)``: the instances file and the annotation of the first val ref's target."""
    _, ref = first_val_ref(read_refs(root, kind))
    coco = read_coco(root, kind)
    return coco, next(a for a in coco['annotations'] if a['id'] == target_ids(ref)[0])


def _ann_raises(root, kind, edit, error, message):
    """``edit(annotation)`` on the first val target's annotation; building must raise ``error``
    matching ``message(ann)``, which names the file, the annotation and the image."""
    coco, ann = _first_target_annotation(root, kind)
    edit(ann)
    write_coco(root, kind, coco)
    with pytest.raises(error, match=rf"instances\.json: annotation {ann['id']} of image "
                                    rf"{ann['image_id']}.*{message(ann)}"):
        build(root, kind)


def case_bbox_negative_size(root, kind):   # an [x1, y1, x2, y2] box would score REC 0
    _ann_raises(root, kind, lambda a: a.update(bbox=[a['bbox'][0], a['bbox'][1], -20, -30]),
                ValueError, lambda a: r'has a negative width/height')


def case_bbox_not_finite(root, kind):
    _ann_raises(root, kind, lambda a: a.update(bbox=[float('nan')] * 4), ValueError,
                lambda a: 'is not finite')


def case_bbox_three_numbers(root, kind):
    _ann_raises(root, kind, lambda a: a.update(bbox=[1, 2, 3]), ValueError,
                lambda a: r'must be \[x, y, w, h\] \(4 numbers\)')


def case_bbox_outside_the_image(root, kind):
    _ann_raises(root, kind, lambda a: a.update(bbox=[5000, 5000, 30, 30]), ValueError,
                lambda a: r'lies outside its \d+x\d+ image')


def case_polygon_flat_list(root, kind):   # [x0, y0, ...] instead of [[x0, y0, ...]]
    _ann_raises(root, kind, lambda a: a.update(segmentation=a['segmentation'][0]), ValueError,
                lambda a: r'polygons must be a list of \[x0, y0, x1, y1, ...\] lists')


def case_polygon_odd_coordinate_count_is_counted(root, kind):
    coco, ann = _first_target_annotation(root, kind)
    ann['segmentation'][0] = ann['segmentation'][0] + [ann['segmentation'][0][0]]
    write_coco(root, kind, coco)
    with captured_log() as log:
        build(root, kind)
    said = warnings_of(log)
    assert 'polygon parts with an odd coordinate count (last number ignored): 1' in said
    assert f"e.g. annotation ids [{ann['id']}]" in said


def case_rle_that_does_not_decode(root, kind):   # caught when the dataset is built
    coco, ann = _first_target_annotation(root, kind)
    img = next(i for i in coco['images'] if i['id'] == ann['image_id'])
    ann['segmentation'] = dict(size=[img['height'], img['width']], counts='zz!!##')
    write_coco(root, kind, coco)
    with pytest.raises(ValueError, match=rf"annotation {ann['id']} of image {img['id']} has a "
                                         r'bad segmentation: RLE counts do not decode'):
        build(root, kind)


def case_duplicate_annotation_id(root, kind):   # pycocotools would keep only the last one
    coco = read_coco(root, kind)
    coco['annotations'].append(dict(coco['annotations'][0], bbox=[0, 0, 3, 3]))
    write_coco(root, kind, coco)
    with pytest.raises(ValueError, match=rf"instances\.json': annotation id "
                                         rf"{coco['annotations'][0]['id']} appears 2 times"):
        build(root, kind)


def case_duplicate_image_id(root, kind):
    coco = read_coco(root, kind)
    coco['images'].append(dict(coco['images'][0], file_name='other.jpg'))
    write_coco(root, kind, coco)
    with pytest.raises(ValueError, match=rf"image id {coco['images'][0]['id']} appears 2 times"):
        build(root, kind)


def case_duplicate_ref(root, kind):   # its sentences would count twice
    refs = read_refs(root, kind)
    _, ref = first_val_ref(refs)
    write_refs(root, kind, refs + [ref])
    with pytest.raises(ValueError, match=rf"ref_id {ref['ref_id']} appears more than once in "
                                         r"split 'val'"):
        build(root, kind)


def case_image_height_not_a_number(root, kind):
    info, _ = first_sample_image(root, kind)
    coco = read_coco(root, kind)
    next(i for i in coco['images'] if i['id'] == info['img_id'])['height'] = 'abc'
    write_coco(root, kind, coco)
    with pytest.raises(ValueError, match=rf"image {info['img_id']} field 'height' = 'abc' is "
                                         'not a positive integer'):
        build(root, kind)


def case_image_file_name_none(root, kind):
    info, _ = first_sample_image(root, kind)
    coco = read_coco(root, kind)
    next(i for i in coco['images'] if i['id'] == info['img_id'])['file_name'] = None
    write_coco(root, kind, coco)
    with pytest.raises(ValueError, match=rf"image {info['img_id']} field 'file_name' must be a "
                                         'non-empty string, got None'):
        build(root, kind)


def case_instances_json_not_utf8(root, kind):   # e.g. the refs pickle given as ann_file
    shutil.copy(refs_path(root, kind), root / KINDS[kind]['ann_file'])
    if kind == 'grefcoco':
        (root / KINDS[kind]['ann_file']).write_bytes(b'\x80\x02]q\x00(}q\x01')
    with pytest.raises(ValueError, match=r'is not UTF-8 JSON .*ann_file must be the COCO '
                                         r'instances\.json'):
        build(root, kind)


def case_annotations_not_a_list(root, kind):
    coco = read_coco(root, kind)
    coco['annotations'] = {'a': 1}
    write_coco(root, kind, coco)
    with pytest.raises(ValueError, match=r"field 'annotations' must be a list, got dict"):
        build(root, kind)


def case_sentences_not_a_list(root, kind):
    import copy
    original = read_refs(root, kind)
    for value in ('the purple circle', None):
        write_refs(root, kind, copy.deepcopy(original))
        _edit_first_val_ref_raises(
            root, kind, lambda ref: ref.update(sentences=value),
            lambda ref: rf"ref_id {ref['ref_id']} field 'sentences' must be a list", TypeError)


def case_ref_without_sentences_is_counted(root, kind):
    refs = read_refs(root, kind)
    _, ref = first_val_ref(refs)
    ref['sentences'] = []
    write_refs(root, kind, refs)
    with captured_log() as log:
        ds = build(root, kind)
    assert 'refs skipped (no sentences): 1' in warnings_of(log)
    assert ref['ref_id'] not in {ds.get_data_info(i)['ref_id'] for i in range(len(ds))}


def case_sentence_field_not_a_string(root, kind):
    _edit_first_val_ref_raises(
        root, kind, lambda ref: ref['sentences'][0].update(raw=123),
        lambda ref: rf"ref_id {ref['ref_id']} sentence 0: field 'raw' must be a string, got "
                    r'int 123', TypeError)


def case_control_character_sentence_is_skipped(root, kind):
    refs = read_refs(root, kind)
    _, ref = first_val_ref(refs)
    ref['sentences'][0]['raw'] = ref['sentences'][0]['sent'] = '\x00\x01\x02'
    write_refs(root, kind, refs)
    with captured_log() as log:
        ds = build(root, kind)
    assert 'empty sentences skipped: 1' in warnings_of(log)
    assert '\x00\x01\x02' not in {ds.get_data_info(i)['text'] for i in range(len(ds))}


def case_ids_that_are_not_integers(root, kind):
    import copy
    original = read_refs(root, kind)
    for field, value in (('image_id', 'abc'), ('ann_id', [94.9] if kind == 'grefcoco' else 94.9),
                         ('ref_id', True)):
        refs = copy.deepcopy(original)
        _, ref = first_val_ref(refs)
        ref[field] = value
        write_refs(root, kind, refs)
        shown = value[0] if isinstance(value, list) else value
        with pytest.raises(ValueError, match=rf'{field} = {re.escape(repr(shown))} is not an '
                                             'integer id'):
            build(root, kind)


def case_split_not_a_string(root, kind):
    _edit_first_val_ref_raises(
        root, kind, lambda ref: ref.update(split=1),
        lambda ref: rf"ref {ref['ref_id']} field 'split' must be a string, got int 1",
        ValueError)


class _Shell:
    """Pickles to ``os.system(cmd)``: would run at load time under plain pickle."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd, ))


def case_malicious_refs_pickle(root, kind):
    from mmrefer.datasets.safe_pickle import UnsafePickleError
    marker = root / 'pwned'
    refs = read_refs(root, kind)
    refs[0]['sentences'][0]['sent'] = _Shell(f'touch {marker}')
    refs_path(root, kind).write_bytes(pickle.dumps(refs, protocol=2))  # .json name too
    with pytest.raises(UnsafePickleError, match=r'refused to unpickle .*(posix|os)\.system.*'
                                                r'Nothing was executed'):
        build(root, kind)
    assert not marker.exists()


DATA_CASES = {name[5:]: fn for name, fn in dict(globals()).items() if name.startswith('case_')}


@pytest.mark.parametrize('kind', sorted(KINDS))
@pytest.mark.parametrize('case', sorted(DATA_CASES))
def test_annotation_file_matrix(case, kind, root):
    DATA_CASES[case](root, kind)


# ----------------------------------------------------------------------------- images
def _break_missing(path):
    path.unlink()


def _break_corrupt(path):
    path.write_bytes(b'\xff\xd8\xff\xe0 truncated jpeg ' + os.urandom(64))


IMAGE_ERRORS = {
    'missing': (_break_missing, FileNotFoundError, 'image file not found: {path}'),
    'corrupt': (_break_corrupt, ValueError, 'could not decode image {path}'),
}


def _gray_bgr(path):
    img = cv2.imread(str(path))
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    path.write_bytes(cv2.imencode('.png', gray)[1].tobytes())  # PNG bytes under .jpg: by content
    return np.repeat(gray[..., None], 3, axis=2)


def _rgba_bgr(path):
    img = cv2.imread(str(path))
    rgba = np.concatenate([img, np.full(img.shape[:2] + (1, ), 255, np.uint8)], axis=2)
    path.write_bytes(cv2.imencode('.png', rgba)[1].tobytes())
    return img


IMAGE_MODES = {'grayscale': _gray_bgr, 'rgba': _rgba_bgr}


@pytest.mark.parametrize('kind', sorted(KINDS))
@pytest.mark.parametrize('bad', sorted(IMAGE_ERRORS))
def test_bad_image_names_file_and_sample(bad, kind, root):
    info, path = first_sample_image(root, kind)
    breaker, exc, msg = IMAGE_ERRORS[bad]
    breaker(path)
    ds = build(root, kind, PIPELINE)
    with pytest.raises(exc) as err:
        ds[0]
    text = str(err.value)
    assert msg.format(path=os.path.join(str(root) + '/', info['img_path'])) in text
    assert f"img_id={info['img_id']}, ref_id={info['ref_id']}" in text


@pytest.mark.parametrize('kind', sorted(KINDS))
@pytest.mark.parametrize('mode', sorted(IMAGE_MODES))
def test_grayscale_and_rgba_load_as_three_channels(mode, kind, root):
    info, path = first_sample_image(root, kind)
    expected = IMAGE_MODES[mode](path)
    ds = build(root, kind, [dict(type='LoadRefImageFromFile', color_type='color')])
    img = ds[0]['img']
    assert img.shape == expected.shape and img.shape[2] == 3
    np.testing.assert_array_equal(img, expected)
    packed = build(root, kind, PIPELINE)[0]
    assert tuple(packed['inputs'].shape) == (3, 64, 64)


def _loader(root, kind, pipeline=PIPELINE):
    from mmengine.runner import Runner
    return Runner.build_dataloader(dict(
        batch_size=2, num_workers=2, persistent_workers=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        collate_fn=dict(type='pseudo_collate'),
        dataset=dict(KINDS[kind], data_root=str(root) + '/', split='val',
                     data_prefix=dict(img_path='images/train2014/'), pipeline=pipeline)))


@pytest.mark.parametrize('bad', sorted(IMAGE_ERRORS))
def test_bad_image_error_survives_dataloader_workers(bad, root):
    kind = 'grefcoco'
    info, path = first_sample_image(root, kind)
    breaker, exc, msg = IMAGE_ERRORS[bad]
    breaker(path)
    loader = _loader(root, kind)
    assert loader.num_workers == 2
    batches = iter(loader)
    try:
        with pytest.raises(exc) as err:
            next(batches)
    finally:
        batches._shutdown_workers()  # now, not at garbage collection
    text = str(err.value)
    assert 'DataLoader worker process' in text  # raised in a worker, re-raised here
    assert msg.format(path=os.path.join(str(root) + '/', info['img_path'])) in text
    assert f"img_id={info['img_id']}" in text


def test_grayscale_and_rgba_batch_through_dataloader_workers(root):
    kind = 'grefcoco'
    ds = build(root, kind)
    paths = [root / 'images' / 'train2014' / os.path.basename(ds.get_data_info(i)['img_path'])
             for i in range(2)]
    if paths[0] == paths[1]:
        paths = paths[:1]
    for p, fn in zip(paths, (_gray_bgr, _rgba_bgr)):
        fn(p)
    batches = iter(_loader(root, kind))
    try:
        batch = next(batches)
    finally:
        batches._shutdown_workers()
    assert [tuple(x.shape) for x in batch['inputs']] == [(3, 64, 64)] * 2


# -------------------------------------------------------------------- text (tokenizers)
LONG = ' '.join(['the red circle on the left'] * 84)  # 504 words


# the tokenizers alone: tests/models/language_models (truncation keeps </s> and is counted;
# an empty sentence is named by its index)


@pytest.mark.parametrize('which', ['spm', 'hf'])
def test_long_sentence_tokenize_text_truncates_with_warning(which, synthref_beit3_spm,
                                                            synthref_roberta_dir):
    from mmrefer.datasets.transforms import TokenizeText
    t = TokenizeText(synthref_beit3_spm if which == 'spm' else synthref_roberta_dir,
                     max_length=12)
    with captured_log() as log:
        out = t(dict(text=LONG))
        t(dict(text='the red circle'))
    assert out['attention_mask'].tolist() == [1] * 12
    assert out['input_ids'][-1] == 2  # </s> kept at the end (both vocabularies use id 2)
    assert t.num_truncated == 1
    assert '1 sentence(s) truncated to max_length=12' in warnings_of(log)


def _text_encoder(roberta_dir):
    from mmrefer.models.language_models.text_encoder import HFTextEncoder
    return HFTextEncoder(arch=dict(vocab_size=400, hidden_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=64,
                                   max_position_embeddings=24),
                         tokenizer_dir=roberta_dir, max_length=12)


def test_long_sentence_hf_text_encoder_warns(synthref_roberta_dir):
    enc = _text_encoder(synthref_roberta_dir)
    with captured_log() as log, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        enc([LONG])
    said = warnings_of(log) + ' '.join(str(w.message) for w in caught)
    assert 'truncat' in said.lower()


def test_grefcoco_refs_given_to_the_refcoco_loader_name_the_right_class(root):
    """gRefCOCO refs (no-target [-1], several targets) under RefCOCODataset: the error says to
    use GRefCOCODataset, not that the files do not match."""
    from mmrefer.registry import DATASETS
    with pytest.raises(ValueError, match=r'grefs\(unc\)\.json: ref_id \d+ .*GRefCOCODataset'):
        DATASETS.build(dict(type='RefCOCODataset', ann_file='grefcoco/instances.json',
                            split_file='grefcoco/grefs(unc).json', data_root=str(root) + '/',
                            split='val', data_prefix=dict(img_path='images/train2014/')))
