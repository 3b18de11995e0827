"""tools/analysis_tools/synthref_error_analysis.py: sentence types, no-target cues recovered
from the released files, the tables' arithmetic, and a run on a random tiny Latent-VG."""
import json
import os.path as osp
import re
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis_tools'))
import synthref_error_analysis as sea  # noqa: E402

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.mark.parametrize('text,kind', [
    ('the red circle', 'colour + shape'),
    ('The circle that is red', 'colour + shape'),
    ('the blue square on the left', 'position'),
    ('the small white square', 'size'),
    ('the red circle and the blue square', 'X and Y'),
    ('All circles', 'plural'),
    ('both green triangles', 'plural'),
    ('every shape', 'plural'),
])
def test_sentence_type(text, kind):
    assert sea.sentence_type(text) == kind


def test_no_target_cue():
    objs = [('red', 'square'), ('blue', 'circle')]
    assert sea.no_target_cue('the red circle', objs) == 'colour present, shape present'
    assert sea.no_target_cue('The green circle', objs) == 'colour absent, shape present'
    assert sea.no_target_cue('the triangle', objs) == 'colour -, shape absent'
    assert sea.no_target_cue('the purple shape', objs) == 'colour absent, shape -'
    assert sea.no_target_cue('red triangle', objs) == 'colour present, shape absent'


def test_summarize_arithmetic():
    recs = [dict(text='the red circle', no_target=False, iou=1.0, pred_no_target=False),
            dict(text='red circle', no_target=False, iou=0.2, pred_no_target=False),
            dict(text='all circles', no_target=False, iou=0.6, pred_no_target=False),
            dict(text='the red square', no_target=True, iou=1.0, pred_no_target=True,
                 cue='colour absent, shape present'),
            dict(text='the red circle', no_target=True, iou=0.0, pred_no_target=False,
                 cue='colour present, shape present'),
            dict(text='the red circle', no_target=True, iou=1.0, pred_no_target=True,
                 cue='colour present, shape present')]
    t = sea.summarize(recs)
    assert list(t['targeted']) == ['colour + shape', 'plural']
    assert t['targeted']['colour + shape'] == dict(n=2, mean_iou=60.0, below_0_5=50.0)
    assert t['targeted']['plural'] == dict(n=1, mean_iou=60.0, below_0_5=0.0)
    assert t['no_target'] == {'colour absent, shape present': dict(n=1, acc=100.0),
                              'colour present, shape present': dict(n=2, acc=50.0)}
    assert '| colour present, shape present | 2 | 50.0 |' in sea.format_tables(t)


def test_image_objects_match_the_generator(synthref_root):
    """Colour from pixels + shape from the category equal what single-target
    "the <colour> <shape>" sentences say about their target."""
    from pycocotools.coco import COCO

    from mmrefer.datasets.synthetic import COLORS, SHAPES
    root = str(synthref_root)
    coco = COCO(osp.join(root, 'grefcoco', 'instances.json'))
    refs = json.load(open(osp.join(root, 'grefcoco', 'grefs(unc).json')))
    checked = 0
    for ref in refs:
        if ref['no_target'] or len(ref['ann_id']) != 1:
            continue
        for s in ref['sentences']:
            words = s['sent'].split()
            if len(words) == 3 and words[0] == 'the' and words[1] in COLORS \
                    and words[2] in SHAPES:
                ann = coco.anns[ref['ann_id'][0]]
                one = {'images': [coco.imgs[ref['image_id']]], 'annotations': [ann],
                       'categories': list(coco.cats.values())}
                single = COCO()
                single.dataset = one
                single.createIndex()
                got = sea.image_objects(single, osp.join(root, 'images', 'train2014'),
                                        ref['image_id'])
                assert got == [(words[1], words[2])], (s['sent'], got)
                checked += 1
    assert checked >= 20


def test_colour_rule(synthref_root):
    """The colour-only reference: exact on sentences that name one colour and target every shape
    of it, no-target flagged exactly when the named colour is absent, metrics = its records."""
    import numpy as np
    from mmengine.config import Config
    from pycocotools.coco import COCO

    from mmrefer.datasets.synthetic import point_config_at_synthref
    from mmrefer.registry import DATASETS
    from mmrefer.utils import register_all_modules
    register_all_modules()
    root = str(synthref_root)
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'quickstart', 'latentvg_tiny_synthref.py'))
    point_config_at_synthref(cfg, root)
    ds = DATASETS.build(cfg.test_dataloader.dataset)
    coco = COCO(osp.join(root, 'grefcoco', 'instances.json'))
    shapes = sea.shapes_reader(coco, osp.join(root, 'images', 'train2014'))
    records, metrics = sea.colour_rule_records(ds, shapes)
    assert len(records) == len(ds)
    exact = [r for r in records if re.fullmatch(r'(the|all) \w+ shapes?', r['text'].lower())
             and not r['no_target']]
    assert exact and all(r['iou'] == 1.0 for r in exact), exact
    nt = [r for r in records if r['no_target']]
    assert nt and all(r['pred_no_target'] == r['cue'].startswith('colour absent') for r in nt)
    assert metrics['gIoU'] == pytest.approx(100 * np.mean([r['iou'] for r in records]), abs=0.01)
    n_ok = sum(r['pred_no_target'] for r in nt)
    assert metrics['N-acc'] == pytest.approx(100 * n_ok / len(nt), abs=0.01)


@pytest.mark.slow
def test_runs_on_a_random_tiny_latentvg(synthref_root, tmp_path):
    import torch
    from mmengine.config import Config

    from mmrefer.registry import MODELS
    from mmrefer.utils import register_all_modules
    register_all_modules()
    root = str(synthref_root) + '/'
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'quickstart', 'latentvg_tiny_synthref.py'))
    cfg.model.tokenizer.spm_path = osp.join(root, 'tokenizers', 'beit3.spm')
    torch.manual_seed(0)
    ckpt = str(tmp_path / 'random.pth')
    torch.save({'state_dict': MODELS.build(cfg.model).state_dict()}, ckpt)
    out = str(tmp_path / 'errors.json')
    result = sea.main([osp.join(ROOT, 'configs', 'quickstart', 'latentvg_tiny_synthref.py'), ckpt,
                       '--data-root', root, '--out', out, '--work-dir', str(tmp_path / 'wd')])
    tables = result['tables']
    refs = json.load(open(osp.join(root, 'grefcoco', 'grefs(unc).json')))
    val = [s for r in refs if r['split'] == 'val' for s in r['sentences']]
    val_nt = [s for r in refs if r['split'] == 'val' and r['no_target'] for s in r['sentences']]
    n_t = sum(v['n'] for v in tables['targeted'].values())
    n_nt = sum(v['n'] for v in tables['no_target'].values())
    assert (n_t + n_nt, n_nt) == (len(val), len(val_nt))
    saved = json.load(open(out))
    assert len(saved['records']) == len(val) and saved['tables'] == json.loads(json.dumps(tables))
    assert saved['colour_rule'] == json.loads(json.dumps(result['colour_rule']))
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        sea.main([osp.join(ROOT, 'configs', 'quickstart', 'latentvg_tiny_synthref.py'),
                  str(tmp_path / 'missing.pth'), '--data-root', root])
