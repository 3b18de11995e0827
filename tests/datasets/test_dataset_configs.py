"""Base dataset configs: they parse, hold the agreed fields, and the SynthRef ones (and the
combined RefCOCO/+/g one, on a SynthRef-derived copy) build and run on real files."""
import glob
import os
import os.path as osp
import pickle
import shutil

import pytest
import torch
from mmengine.config import Config

from mmrefer.registry import DATASETS
from mmrefer.utils import register_all_modules

register_all_modules()

CFG_DIR = osp.join(osp.dirname(__file__), '..', '..', 'configs', '_base_', 'datasets')
NAMES = ['refcoco', 'refcocop', 'refcocog_umd', 'refcoco_combined', 'grefcoco', 'refzom',
         'synthref_ris', 'synthref_gres', 'synthref_refzom']


def _cfg(name):
    return Config.fromfile(osp.join(CFG_DIR, f'{name}.py'))


def test_all_configs_present():
    assert sorted(osp.basename(p)[:-3] for p in glob.glob(osp.join(CFG_DIR, '*.py'))) == \
        sorted(NAMES)


@pytest.mark.parametrize('name', NAMES)
def test_config_fields(name):
    cfg = _cfg(name)
    for key in ('data_root', 'img_scale', 'train_pipeline', 'test_pipeline', 'train_dataloader',
                'val_dataloader', 'test_dataloader', 'val_evaluator', 'test_evaluator'):
        assert key in cfg, key
    assert cfg.img_scale == ((128, 128) if name.startswith('synthref') else (480, 480))
    types = [t['type'] for t in cfg.test_pipeline]
    assert types == ['LoadRefImageFromFile', 'LoadRefAnnotations', 'RefResize', 'PackRefInputs']
    ev = cfg.val_evaluator
    ev_types = [e['type'] for e in ev] if isinstance(ev, list) else [ev['type']]
    if 'gres' in name or name == 'grefcoco':
        assert ev_types == ['GRESMetric']
    elif 'refzom' in name:
        assert ev_types == ['RefZOMMetric']
    else:
        assert ev_types == ['RISMetric', 'RECMetric']
    assert cfg.train_dataloader.pin_memory is False


@pytest.mark.parametrize('name', ['synthref_ris', 'synthref_gres', 'synthref_refzom'])
def test_synthref_configs_build(name, synthref_root):
    cfg = _cfg(name)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dcfg = cfg[loader].dataset
        dcfg.data_root = str(synthref_root) + '/'
        ds = DATASETS.build(dcfg)
        out = ds[0]
        assert out['inputs'].shape == (3, 128, 128)
        assert out['data_samples'].gt_merged_mask.data.shape == (1, 128, 128)
    if name == 'synthref_refzom':
        assert {ds.get_data_info(i)['source'] for i in range(len(ds))} == {'zero', 'one', 'many'}


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
