"""Dataset configs: every config's loaders agree with its img_scale and the evaluation rules,
each family's own evaluator scores oracle answers on its SynthRef-format files as perfect, and
the SynthRef and combined RefCOCO/+/g configs build and run on real files."""
import glob
import os
import os.path as osp
import pickle
import shutil

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.evaluator import Evaluator

from mmrefer.registry import DATASETS
from mmrefer.utils import register_all_modules

register_all_modules()

CONFIGS = osp.join(osp.dirname(__file__), '..', '..', 'configs')
CFG_DIR = osp.join(CONFIGS, '_base_', 'datasets')
ALL = sorted(glob.glob(osp.join(CONFIGS, '**', '*.py'), recursive=True))
# the configs with data (the model / schedule / runtime bases have none)
WITH_DATA = [p for p in ALL if Config.fromfile(p).get('train_dataloader')]
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def _cfg(name):
    return Config.fromfile(osp.join(CFG_DIR, f'{name}.py'))


def _leaves(dataset):
    """The datasets a loader reads (the parts of a ConcatDataset)."""
    return dataset['datasets'] if 'datasets' in dataset else [dataset]


def test_every_config_but_the_bases_has_data():
    bases = [osp.relpath(p, CONFIGS) for p in ALL if p not in WITH_DATA]
    assert bases and all(b.startswith('_base_' + os.sep) for b in bases), bases
    assert len(WITH_DATA) > len(bases)


@pytest.mark.parametrize('path', WITH_DATA, ids=lambda p: osp.relpath(p, CONFIGS))
def test_loaders_follow_img_scale_and_evaluation_rules(path):
    """Every config with data: each loader resizes to the config's img_scale (a child changing
    img_scale must rebuild its pipelines: mmengine resolves them in the base file), evaluation
    loaders keep every sample in order, and their pipelines keep the original-size GT for
    eval_resolution='original'."""
    cfg = Config.fromfile(path)
    for key in LOADERS:
        if not cfg.get(key):
            continue
        loader = cfg[key]
        for ds in _leaves(loader.dataset):
            resize = [t for t in ds.pipeline if t.type == 'RefResize']
            assert len(resize) == 1, (key, ds.pipeline)
            assert tuple(resize[0].scale) == tuple(cfg.img_scale), (key, resize[0])
            if key != 'train_dataloader':
                assert ds.get('test_mode') is True, key
                assert ds.pipeline[-1].get('keep_ori_gt') is True, key
        if key != 'train_dataloader':
            assert loader.sampler.shuffle is False and loader.get('drop_last') is False, key


FAMILIES = ('refcoco', 'grefcoco', 'refzom')


def _metric_types(evaluator):
    return sorted(e['type'] for e in (evaluator if isinstance(evaluator, list) else [evaluator]))


def _family_metrics():
    """dataset type -> metric types, as the family configs (checked on oracle answers below)
    pair them."""
    return {_cfg(f).val_dataloader.dataset.type: _metric_types(_cfg(f).val_evaluator)
            for f in FAMILIES}


@pytest.mark.parametrize('path', WITH_DATA, ids=lambda p: osp.relpath(p, CONFIGS))
def test_evaluators_fit_the_evaluated_datasets(path):
    """Every config scores each evaluation loader with the metrics its dataset family's config
    uses (e.g. a child that tests on RefCOCO-format files must also switch to RIS/REC)."""
    cfg = Config.fromfile(path)
    family = _family_metrics()
    for loader, evaluator in (('val_dataloader', 'val_evaluator'),
                              ('test_dataloader', 'test_evaluator')):
        for ds in _leaves(cfg[loader].dataset):
            assert _metric_types(cfg[evaluator]) == family[ds.type], (loader, ds.type)


def _oracle(sample):
    """The contract's prediction fields filled with the ground truth (docs/contracts.md)."""
    sample.pred_mask = sample.gt_merged_mask.data[0].bool()
    sample.pred_no_target = bool(sample.no_target)
    sample.pred_box = sample.gt_ref_bbox.clone()
    return sample


@pytest.mark.parametrize('name', FAMILIES + ('synthref_gres', ))
def test_each_family_evaluator_scores_oracle_answers_100(name, synthref_root):
    """The val loader on SynthRef's files in the family's format, oracle answers, the config's
    own evaluator: every metric is 100. An evaluator that does not fit the data (e.g. RIS on
    gRefCOCO, whose no-target sentences have IoU 0 under RIS) scores less."""
    cfg = _cfg(name)
    dcfg = cfg.val_dataloader.dataset
    dcfg.data_root = str(synthref_root) + '/'
    dcfg.data_prefix = dict(img_path='images/train2014/')  # Ref-ZOM's trainval2014 in SynthRef
    ds = DATASETS.build(dcfg)
    samples = [_oracle(ds[i]['data_samples']) for i in range(len(ds))]
    if name != 'refcoco':
        assert any(s.no_target for s in samples) and not all(s.no_target for s in samples)
    evaluator = Evaluator(cfg.val_evaluator)
    evaluator.process(data_samples=samples)
    res = evaluator.evaluate(len(samples))
    assert res and all(v == 100.0 for v in res.values()), res
    for s in samples:  # the same evaluator tells a wrong answer apart
        s.pred_box = s.pred_box.flip(0)
        s.pred_mask = ~s.pred_mask
        s.pred_no_target = not s.pred_no_target
    evaluator.process(data_samples=samples)
    res = evaluator.evaluate(len(samples))
    assert all(v < 100.0 or np.isnan(v) for v in res.values()), res


def test_synthref_config_builds(synthref_root):
    cfg = _cfg('synthref_gres')
    for loader in LOADERS:
        dcfg = cfg[loader].dataset
        dcfg.data_root = str(synthref_root) + '/'
        out = DATASETS.build(dcfg)[0]
        assert out['inputs'].shape == (3, 128, 128)
        assert out['data_samples'].gt_merged_mask.data.shape == (1, 128, 128)


def test_combined_config_excludes_eval_images(synthref_root, tmp_path):
    # RefCOCO/+/g layout made from SynthRef: refcocog gets umd-style splits train/val/test
    root = tmp_path / 'data'
    root.mkdir()
    os.symlink(synthref_root / 'images', root / 'images')
    refs = pickle.load(open(synthref_root / 'refcoco' / 'refs(unc).p', 'rb'))
    for d, fname in (('refcoco', 'refs(unc).p'), ('refcoco+', 'refs(unc).p'),
                     ('refcocog', 'refs(umd).p')):
        (root / d).mkdir()
        shutil.copy(synthref_root / 'refcoco' / 'instances.json', root / d / 'instances.json')
        out = [dict(r) for r in refs]
        if d == 'refcocog':
            for r in out:
                r['split'] = 'test' if r['split'] in ('testA', 'testB') else r['split']
        if d == 'refcoco+':  # move one train image into val: it must vanish from all three
            moved = out[0]['image_id']
            for r in out:
                if r['image_id'] == moved:
                    r['split'] = 'val'
        with open(root / d / fname, 'wb') as f:
            pickle.dump(out, f, protocol=2)
    cfg = _cfg('refcoco_combined')
    dcfg = cfg.train_dataloader.dataset
    for part in dcfg.datasets:
        part.data_root = str(root) + '/'
    ds = DATASETS.build(dcfg)
    eval_imgs = {r['image_id'] for r in refs if r['split'] != 'train'} | {moved}
    train_imgs = {r['image_id'] for r in refs if r['split'] == 'train'} - {moved}
    n_train_sents = sum(len(r['sentences']) for r in refs
                        if r['split'] == 'train' and r['image_id'] != moved)
    assert len(ds) == 3 * n_train_sents
    seen = {ds.get_data_info(i)['img_id'] for i in range(len(ds))}
    assert seen == train_imgs and not seen & eval_imgs
    assert {ds.get_data_info(i)['source'] for i in range(len(ds))} == \
        {'refcoco', 'refcoco+', 'refcocog'}
    assert ds[0]['inputs'].shape == (3, 480, 480)


def test_refcocog_google_config_reads_its_two_splits(synthref_root, tmp_path):
    """refs(google).p has train and val only; the config tests on val (the "val(G)" column)."""
    root = tmp_path / 'data'
    (root / 'refcocog').mkdir(parents=True)
    os.symlink(synthref_root / 'images', root / 'images')
    shutil.copy(synthref_root / 'refcoco' / 'instances.json', root / 'refcocog' / 'instances.json')
    refs = [dict(r, split='val' if r['split'] != 'train' else 'train')
            for r in pickle.load(open(synthref_root / 'refcoco' / 'refs(unc).p', 'rb'))]
    with open(root / 'refcocog' / 'refs(google).p', 'wb') as f:
        pickle.dump(refs, f, protocol=2)
    cfg = Config.fromfile(osp.join(CONFIGS, 'latentvg', 'latentvg_beit3-b_refcocog-google.py'))
    sizes = {}
    for loader in LOADERS:
        dcfg = cfg[loader].dataset
        dcfg.data_root = str(root) + '/'
        ds = DATASETS.build(dcfg)
        sizes[loader] = len(ds)
        assert ds.metainfo['dataset_name'] == 'refcocog_google'
    for split, loader in (('train', 'train_dataloader'), ('val', 'test_dataloader')):
        assert sizes[loader] == sum(len(r['sentences']) for r in refs if r['split'] == split)
    assert sizes['val_dataloader'] == sizes['test_dataloader']


def test_dataloader_and_data_preprocessor(synthref_root):
    """Config loader -> pseudo_collate -> mmdet DetDataPreprocessor (docs/contracts.md)."""
    from mmengine.runner import Runner

    from mmrefer.registry import MODELS
    cfg = _cfg('synthref_gres')
    loader_cfg = cfg.val_dataloader
    loader_cfg.dataset.data_root = str(synthref_root) + '/'
    loader_cfg.num_workers = 0
    loader_cfg.persistent_workers = False
    loader_cfg.batch_size = 4
    loader = Runner.build_dataloader(loader_cfg, seed=0)
    batch = next(iter(loader))
    assert len(batch['inputs']) == 4 and len(batch['data_samples']) == 4
    pre = MODELS.build(dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                            std=[58.395, 57.12, 57.375], bgr_to_rgb=True))
    out = pre(batch, training=False)
    assert out['inputs'].shape == (4, 3, 128, 128) and out['inputs'].dtype.is_floating_point
    raw = batch['inputs'][0].float()
    exp = (raw.flip(0) - torch.tensor([123.675, 116.28, 103.53])[:, None, None]) / \
        torch.tensor([58.395, 57.12, 57.375])[:, None, None]
    torch.testing.assert_close(out['inputs'][0], exp)
    for s in out['data_samples']:
        assert s.batch_input_shape == (128, 128)
        assert s.gt_merged_mask.data.shape == (1, 128, 128)
        assert s.gt_instances.masks.masks.shape[1:] == (128, 128)


def test_make_synthref_cli(tmp_path):
    import subprocess
    import sys
    script = osp.join(osp.dirname(__file__), '..', '..', 'tools', 'dataset_converters',
                      'make_synthref.py')
    repo = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get('PYTHONPATH', ''))
    out = subprocess.run([sys.executable, script, '--out', str(tmp_path / 'sr'), '--num-images',
                          '{"train": 2, "val": 1}'], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'refs(unc).p' in out.stdout and 'sentences' in out.stdout
    imgs = os.listdir(tmp_path / 'sr' / 'images' / 'train2014')
    assert len(imgs) == 3
