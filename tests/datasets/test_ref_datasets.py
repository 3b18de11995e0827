"""Loaders vs. pycocotools on files in the official formats (see conftest.build_mini)."""
import json
import os.path as osp
import pickle

import numpy as np
import pytest
from pycocotools.coco import COCO

from mmrefer.datasets import GRefCOCODataset, RefCOCODataset, RefZOMDataset
from mmrefer.datasets.transforms import LoadRefAnnotations
from mmrefer.registry import DATASETS


def _ds(cls, root, **kw):
    kw.setdefault('ann_file', 'instances.json')
    return cls(data_root=str(root), data_prefix=dict(img_path='images/'), **kw)


def _by_sent(ds):
    return {ds.get_data_info(i)['sent_id']: ds.get_data_info(i) for i in range(len(ds))}


def _coco_mask(coco, ann_id, drop_degenerate=True):
    ann = dict(coco.anns[ann_id])
    if isinstance(ann['segmentation'], list) and drop_degenerate:
        ann['segmentation'] = [p for p in ann['segmentation'] if len(p) >= 6]
    return coco.annToMask(ann)


def test_refcoco_val_samples(mini_root):
    ds = _ds(RefCOCODataset, mini_root, split_file='refs(unc).p', split='val')
    s = _by_sent(ds)
    # ref 4 (crowd target) skipped, sentence 4 (empty) skipped
    assert sorted(s) == [2, 3, 5]
    d = s[2]
    assert d['img_path'] == osp.join(str(mini_root), 'images', 'a.png')
    assert (d['img_id'], d['ref_id'], d['text'], d['no_target']) == (11, 1, 'The bottom box',
                                                                     False)
    assert (d['height'], d['width'], d['source']) == (40, 50, 'refcoco')
    assert d['ref_bbox'] == [30.0, 25.0, 45.0, 35.0]
    assert len(d['instances']) == 1 and d['instances'][0]['bbox'] == [30.0, 25.0, 45.0, 35.0]
    assert d['instances'][0]['bbox_label'] == 0 and d['instances'][0]['ignore_flag'] == 0
    # sentences kept verbatim (no strip / lower-casing), 'raw' preferred over 'sent'
    assert s[5]['text'] == '  the triangle,  verbatim  '
    # the 2-point polygon part is dropped, the triangle kept
    assert s[5]['instances'][0]['mask'] == [[10, 10, 30, 10, 20, 25]]
    assert ds.metainfo['dataset_name'] == 'refcoco'


def test_masks_match_pycocotools(mini_root):
    coco = COCO(str(mini_root / 'instances.json'))
    load = LoadRefAnnotations()
    checked = 0
    for cls, split_file, split in ((RefCOCODataset, 'refs(unc).p', 'val'),
                                   (GRefCOCODataset, 'grefs(unc).json', 'val'),
                                   (RefZOMDataset, 'refs(final).p', 'test')):
        ds = _ds(cls, mini_root, split_file=split_file, split=split)
        refs = {r['ref_id']: r for r in
                (json.load(open(mini_root / split_file)) if split_file.endswith('json')
                 else pickle.load(open(mini_root / split_file, 'rb')))}
        for i in range(len(ds)):
            d = load(dict(ds.get_data_info(i)))
            ref = refs[d['ref_id']]
            aids = ref['ann_id'] if isinstance(ref['ann_id'], list) else [ref['ann_id']]
            if d['no_target']:
                aids = []
            aids = [a for a in aids if not coco.anns[a]['iscrowd']]
            expect = [_coco_mask(coco, a) for a in aids]
            assert d['gt_masks'].masks.shape == (len(aids), d['height'], d['width'])
            for got, exp in zip(d['gt_masks'].masks, expect):
                np.testing.assert_array_equal(got, exp)
            union = np.zeros((d['height'], d['width']), np.uint8)
            for e in expect:
                union |= e
            np.testing.assert_array_equal(d['gt_merged_mask'], union)
            boxes = [coco.anns[a]['bbox'] for a in aids]
            exp_boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in boxes],
                                 np.float32).reshape(-1, 4)
            np.testing.assert_allclose(d['gt_bboxes'], exp_boxes)
            checked += 1
    assert checked == 3 + 4 + 4


def test_rle_kinds_decode_to_the_rectangles(mini_root):
    from _refmini import H11, W11, rect_mask
    ds = _ds(GRefCOCODataset, mini_root, split='val')
    s = _by_sent(ds)
    compressed = LoadRefAnnotations()(dict(s[0]))['gt_masks'].masks[1]  # ann 2
    np.testing.assert_array_equal(compressed, rect_mask(H11, W11, 25, 35, 30, 45))
    uncompressed = LoadRefAnnotations()(dict(s[3]))['gt_masks'].masks[0]  # ann 3
    np.testing.assert_array_equal(uncompressed, rect_mask(H11, W11, 2, 8, 40, 48))


def test_image_resolved_through_image_id(mini_root):
    ds = _ds(RefCOCODataset, mini_root, split_file='refs(unc).p', split='train')
    assert len(ds) == 2
    for i in range(2):
        assert ds.get_data_info(i)['img_path'].endswith(osp.join('images', 'a.png'))


def test_grefcoco_multi_and_no_target(mini_root):
    ds = _ds(GRefCOCODataset, mini_root, split='val')
    s = _by_sent(ds)
    assert sorted(s) == [0, 1, 2, 3]
    multi = s[0]
    assert len(multi['instances']) == 2  # crowd ann 4 skipped
    assert multi['ref_bbox'] == [5.0, 5.0, 45.0, 35.0]  # union of anns 1 and 2
    for k in (1, 2):
        assert s[k]['no_target'] and s[k]['instances'] == [] and s[k]['ref_bbox'] is None
        assert s[k]['ref_id'] == 11
    assert s[3]['instances'][0]['bbox'] == [40.0, 2.0, 48.0, 8.0]  # int ann_id accepted
    assert s[0]['source'] == 'grefcoco'


def test_grefcoco_pickle_variant(mini_root):
    refs = json.load(open(mini_root / 'grefs(unc).json'))
    with open(mini_root / 'grefs(unc).p', 'wb') as f:
        pickle.dump(refs, f, protocol=2)
    a = _ds(GRefCOCODataset, mini_root, split='val')
    b = _ds(GRefCOCODataset, mini_root, split='val', split_file='grefs(unc).p')
    assert [a.get_data_info(i)['text'] for i in range(len(a))] == \
        [b.get_data_info(i)['text'] for i in range(len(b))]


def test_refzom_sources(mini_root):
    ds = _ds(RefZOMDataset, mini_root, split='test')
    s = _by_sent(ds)
    assert [s[k]['source'] for k in range(4)] == ['zero', 'one', 'many', 'zero']
    assert [s[k]['no_target'] for k in range(4)] == [True, False, False, True]
    assert s[3]['instances'] == []  # ann_id of a zero ref is ignored
    assert len(s[2]['instances']) == 2
    assert s[2]['ref_bbox'] == [5.0, 2.0, 48.0, 20.0]
    assert len(_ds(RefZOMDataset, mini_root, split='train')) == 1


def test_registry_build(mini_root):
    ds = DATASETS.build(dict(type='GRefCOCODataset', data_root=str(mini_root),
                             ann_file='instances.json', split='val',
                             data_prefix=dict(img_path='images/'),
                             metainfo=dict(dataset_name='g2')))
    assert len(ds) == 4 and ds.get_data_info(0)['source'] == 'g2'


def test_exclude_images_of(mini_root):
    ds = _ds(RefCOCODataset, mini_root, split_file='refs(unc).p', split=['train', 'val'],
             exclude_images_of=[dict(split_file='refs(final).p', splits=['train'])])
    assert {ds.get_data_info(i)['img_id'] for i in range(len(ds))} == {11}  # image 12 dropped
    assert len(ds) == 4
    with pytest.raises(ValueError, match="no split.*'nope'"):
        _ds(RefCOCODataset, mini_root, split='val',
            exclude_images_of=[dict(split_file='refs(final).p', splits=['nope'])])
    with pytest.raises(KeyError, match='split_file and splits'):
        _ds(RefCOCODataset, mini_root, split='val',
            exclude_images_of=[('refs(final).p', ['train'])])


def test_lazy_init(mini_root):
    ds = _ds(RefCOCODataset, mini_root, split_file='missing.p', lazy_init=True)
    with pytest.raises(FileNotFoundError, match='missing.p'):
        ds.full_init()


# ---------------------------------------------------------------------------- bad inputs
def test_unknown_split_lists_available(mini_root):
    with pytest.raises(ValueError, match=r"\['testA', 'train', 'val'\]"):
        _ds(RefCOCODataset, mini_root, split='testC')


def test_split_without_usable_samples(mini_root):
    # testA holds only ref 5, whose annotation is a 2-point polygon
    with pytest.raises(ValueError, match='no sample left'):
        _ds(RefCOCODataset, mini_root, split='testA')


def test_missing_ann_id_names_file_ref_and_ann(mini_root):
    refs = pickle.load(open(mini_root / 'refs(unc).p', 'rb'))
    refs[1]['ann_id'] = 999
    with open(mini_root / 'bad.p', 'wb') as f:
        pickle.dump(refs, f)
    with pytest.raises(KeyError, match=r'bad\.p.*ref_id 1.*ann_id 999'):
        _ds(RefCOCODataset, mini_root, split_file='bad.p', split='val')


def test_missing_image_id(mini_root):
    refs = pickle.load(open(mini_root / 'refs(unc).p', 'rb'))
    refs[1]['image_id'] = 77
    with open(mini_root / 'bad.p', 'wb') as f:
        pickle.dump(refs, f)
    with pytest.raises(KeyError, match='ref_id 1 names image_id 77'):
        _ds(RefCOCODataset, mini_root, split_file='bad.p', split='val')


@pytest.mark.parametrize('content,match', [
    ('', 'is empty'),
    ('{"images": [], "annotations": []}', 'holds no images'),
    ('{"images": [{"id": 1}], "annotations": []}', 'holds no annotations'),
    ('[]', 'must hold a COCO dict'),
    ('{"images": [1', 'not valid JSON'),
])
def test_bad_instances_json(mini_root, content, match):
    (mini_root / 'empty.json').write_text(content)
    with pytest.raises(ValueError, match=match):
        _ds(RefCOCODataset, mini_root, ann_file='empty.json', split='val')


def test_grefcoco_inconsistent_no_target(mini_root):
    refs = json.load(open(mini_root / 'grefs(unc).json'))
    refs[0]['no_target'] = True
    (mini_root / 'bad.json').write_text(json.dumps(refs))
    with pytest.raises(ValueError, match='ref_id 10 has no_target=True'):
        _ds(GRefCOCODataset, mini_root, split_file='bad.json', split='val')


def test_refzom_bad_source(mini_root):
    refs = pickle.load(open(mini_root / 'refs(final).p', 'rb'))
    refs[0]['source'] = 'two'
    with open(mini_root / 'bad.p', 'wb') as f:
        pickle.dump(refs, f)
    with pytest.raises(ValueError, match="ref_id 20 has source='two'"):
        _ds(RefZOMDataset, mini_root, split_file='bad.p')


def test_refs_to_json_converter(mini_root, capsys):
    import importlib.util
    path = osp.join(osp.dirname(__file__), '..', '..', 'tools', 'dataset_converters',
                    'refs_pickle_to_json.py')
    spec = importlib.util.spec_from_file_location('refs_pickle_to_json', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    counts = mod.convert(str(mini_root / 'refs(final).p'), str(mini_root / 'zom.json'))
    assert counts[('test', 'zero', 'refs')] == 2 and counts[('train', 'one', 'sentences')] == 1
    assert json.load(open(mini_root / 'zom.json')) == \
        pickle.load(open(mini_root / 'refs(final).p', 'rb'))
    a = _ds(RefZOMDataset, mini_root, split='test')
    b = _ds(RefZOMDataset, mini_root, split='test', split_file='zom.json')
    assert [a.get_data_info(i)['instances'] for i in range(len(a))] == \
        [b.get_data_info(i)['instances'] for i in range(len(b))]
    # nothing is lost: the input is never the output, an existing output stays without
    # --overwrite, a missing folder is named before any work
    (mini_root / 'zom2.json').write_text('{"keep": "me"}')
    for argv, words in (([str(mini_root / 'zom.json')], 'is the input itself'),
                        ([str(mini_root / 'refs(final).p'), '--out', str(mini_root / 'zom2.json')],
                         'zom2.json exists; use --overwrite'),
                        ([str(mini_root / 'refs(final).p'), '--out',
                          str(mini_root / 'nodir' / 'x.json')], 'does not exist')):
        before = (mini_root / 'zom.json').read_bytes()
        with pytest.raises(SystemExit) as e:
            mod.main(argv)
        assert e.value.code == 2 and words in capsys.readouterr().err
        assert (mini_root / 'zom.json').read_bytes() == before
    assert (mini_root / 'zom2.json').read_text() == '{"keep": "me"}'
    mod.main([str(mini_root / 'refs(final).p'), '--out', str(mini_root / 'zom2.json'),
              '--overwrite'])
    assert json.load(open(mini_root / 'zom2.json')) == json.load(open(mini_root / 'zom.json'))


def test_refs_to_json_converter_trusts_numpy_pickle_on_request(mini_root):
    """A Python-3 refs pickle holding numpy ints is refused by the datasets (and by the converter
    by default); ``--trust-pickle`` converts it, and the JSON loads the same samples as the
    plain-int original."""
    import importlib.util
    import os
    import subprocess
    import sys

    import numpy as np

    from mmrefer.datasets.safe_pickle import UnsafePickleError
    tool = osp.join(osp.dirname(__file__), '..', '..', 'tools', 'dataset_converters',
                    'refs_pickle_to_json.py')
    refs = pickle.load(open(mini_root / 'refs(final).p', 'rb'))

    def numpy_ids(ref):
        ref = dict(ref, ref_id=np.int64(ref['ref_id']), image_id=np.int64(ref['image_id']))
        aid = ref['ann_id']
        ref['ann_id'] = (np.array(aid, np.int64) if isinstance(aid, list) else np.int64(aid))
        return ref

    (mini_root / 'np.p').write_bytes(pickle.dumps([numpy_ids(r) for r in refs], protocol=4))
    with pytest.raises(UnsafePickleError, match=r'np\.p.*numpy.*--trust-pickle'):
        _ds(RefZOMDataset, mini_root, split='test', split_file='np.p')
    spec = importlib.util.spec_from_file_location('refs_pickle_to_json', tool)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(UnsafePickleError):
        mod.convert(str(mini_root / 'np.p'), str(mini_root / 'np.json'))
    root = osp.join(osp.dirname(__file__), '..', '..')  # this tree's mmrefer, not the wheel's
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    proc = subprocess.run([sys.executable, tool, str(mini_root / 'np.p'), '--trust-pickle'],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.load(open(mini_root / 'np.json')) == json.loads(json.dumps(refs))
    for split in ('train', 'test'):
        a = _ds(RefZOMDataset, mini_root, split=split)
        b = _ds(RefZOMDataset, mini_root, split=split, split_file='np.json')
        assert [a.get_data_info(i) for i in range(len(a))] == \
            [b.get_data_info(i) for i in range(len(b))]
