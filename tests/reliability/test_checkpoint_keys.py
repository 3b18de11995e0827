"""Wrong / partial checkpoints: missing and unexpected keys grouped by module, shape mismatches
naming the key and both shapes, strict still raising, non-strict still loading what matches.

Model: the tiny Latent-VG quick-start config (configs/quickstart/latentvg_tiny_synthref.py).
"""
import logging
import os.path as osp
import re

import pytest
import torch

from mmrefer.utils.checkpoint_report import checkpoint_report, group_keys
from reliability_helpers import WritesMarker, captured_log

CONFIG = osp.join(osp.dirname(__file__), '..', '..', 'configs', 'quickstart',
                  'latentvg_tiny_synthref.py')


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def model_cfg():
    from mmengine.config import Config

    from mmrefer.utils import register_all_modules
    register_all_modules()
    return Config.fromfile(CONFIG).model


def _build(cfg, seed):
    from mmrefer.registry import MODELS
    torch.manual_seed(seed)
    return MODELS.build(cfg)


@pytest.fixture(scope='module')
def source_state(model_cfg):
    """state dict of a differently seeded model: every tensor differs from a fresh model's."""
    return {k: v.clone() for k, v in _build(model_cfg, seed=1).state_dict().items()}


def _layers(keys, idx):
    return [k for k in keys if re.match(rf'backbone\.encoder\.layers\.({idx})\.', k)]


# ---------------------------------------------------------------------------- pure grouping
def test_group_keys_hand_computed():
    model_keys = ['enc.layers.0.w', 'enc.layers.0.b', 'enc.layers.1.w', 'enc.layers.1.b',
                  'enc.layers.2.w', 'enc.layers.2.b', 'enc.norm.w', 'head.a.w', 'head.b.w']
    ckpt_keys = ['enc.layers.0.w', 'enc.layers.0.b', 'enc.norm.w', 'old_head.w']
    missing = [k for k in model_keys if k not in ckpt_keys]
    groups = group_keys(missing, ckpt_keys, population=model_keys)
    # layers 1 and 2 wholly missing -> one wildcard line over all 3 layers; head wholly missing
    assert dict(groups) == {
        'enc.layers.*': dict(count=4, total=6, example='enc.layers.1.w'),
        'head': dict(count=2, total=2, example='head.a.w')}
    unexpected = group_keys(['old_head.w'], model_keys)
    assert dict(unexpected) == {'old_head': dict(count=1, total=1, example='old_head.w')}
    # a parameter outside any module is its own group
    assert list(group_keys(['logit_scale'], model_keys)) == ['logit_scale']
    # one tensor missing inside a present layer: reported at that layer (capped depth)
    g = group_keys(['enc.layers.0.b'], ['enc.layers.0.w'], population=model_keys)
    assert dict(g) == {'enc.layers.*': dict(count=1, total=6, example='enc.layers.0.b')}
    # max_depth caps the group name
    g = group_keys(['a.b.c.d.e.w'], ['a.b.c.d.x.w'], max_depth=2)
    assert list(g) == ['a.b']


# ------------------------------------------- through the runner (load_from, mim test -C)
def _runner(model_cfg, tmp_path, load_from, name):
    """A Runner as tools/train.py and tools/test.py build it from the shared runtime: with the
    CheckpointReportHook."""
    from mmengine.runner import Runner
    return Runner(model=model_cfg, work_dir=str(tmp_path / name), load_from=load_from,
                  default_scope='mmrefer', experiment_name=name,
                  custom_hooks=[dict(type='CheckpointReportHook')],
                  env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo')))


def _load(runner, path):
    from mmrefer.utils import runner_checkpoint_loading
    with captured_log() as log, runner_checkpoint_loading(path):
        runner.load_or_resume()
    return log


def test_partial_checkpoint_reports_groups_and_loads_the_rest(model_cfg, source_state,
                                                              tmp_path):
    dropped = set(_layers(source_state, '2|3')) | {k for k in source_state
                                                   if k.startswith('head.')}
    partial = {k: v for k, v in source_state.items() if k not in dropped}
    partial['vision_head.weight'] = torch.zeros(3, 3)  # official-style task head
    path = str(tmp_path / 'partial.pth')
    torch.save({'state_dict': partial, 'meta': {}}, path)

    torch.manual_seed(0)
    runner = _runner(model_cfg, tmp_path, path, 'partial')
    before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    log = _load(runner, path)
    after = runner.model.state_dict()
    # what matched was loaded, what was missing kept its initial value
    for k in after:
        expected = before[k] if k in dropped else source_state[k]
        assert torch.equal(after[k], expected), k
    reports = [m for lvl, m in log if lvl == logging.WARNING and 'do not match:' in m]
    assert len(reports) == 1
    text = reports[0]
    n_layers = len(_layers(before, r'\d+'))
    n_lost = len(_layers(before, '2|3'))
    n_head = sum(k.startswith('head.') for k in before)
    assert n_lost == n_layers // 2 and n_head > 0
    assert f'backbone.encoder.layers.*: {n_lost} missing (of {n_layers})' in text
    assert f'head: {n_head} missing (of {n_head})' in text
    assert 'vision_head: 1 unexpected (of 1)' in text
    assert f'{n_lost + n_head} missing, 1 unexpected, 0 shape mismatch' in text
    # grouped: no individual layer key other than the examples is listed
    assert text.count('backbone.encoder.layers.') <= 2


def test_shape_mismatch_names_key_and_both_shapes(model_cfg, source_state, tmp_path):
    bad = dict(source_state)
    key = 'backbone.text_embed.weight'
    rows, cols = source_state[key].shape
    bad[key] = torch.zeros(rows + 7, cols)
    path = str(tmp_path / 'shape.pth')
    torch.save(bad, path)  # a bare state dict (no 'state_dict' wrapper) works too
    torch.manual_seed(0)
    runner = _runner(model_cfg, tmp_path, path, 'shape')
    before = runner.model.state_dict()[key].clone()
    text = '\n'.join(m for _, m in _load(runner, path))
    assert f'{key}: ({rows + 7}, {cols}) vs ({rows}, {cols})' in text
    assert '0 missing, 0 unexpected, 1 shape mismatch' in text
    assert torch.equal(runner.model.state_dict()[key], before)  # not loaded
    other = 'backbone.vision_embed.proj.bias'
    assert torch.equal(runner.model.state_dict()[other], source_state[other])


def test_exact_checkpoint_is_silent(model_cfg, source_state, tmp_path):
    path = str(tmp_path / 'full.pth')
    torch.save({'state_dict': source_state}, path)
    runner = _runner(model_cfg, tmp_path, path, 'full')
    log = _load(runner, path)
    assert not [m for _, m in log if 'do not match:' in m]
    assert all(torch.equal(v, source_state[k]) for k, v in runner.model.state_dict().items())
    assert not checkpoint_report(runner.model, source_state)


def test_unconverted_checkpoint_is_reported_per_top_level_module(model_cfg, source_state):
    # an official-style file: every key under 'beit3.' -> nothing matches
    wrong = {'beit3.' + k[len('backbone.'):]: v for k, v in source_state.items()
             if k.startswith('backbone.')}
    model = _build(model_cfg, seed=0)
    report = checkpoint_report(model, wrong)
    own = model.state_dict()
    tops = {k.split('.')[0] for k in own}
    assert set(report.missing_groups) == tops
    for top, g in report.missing_groups.items():
        n = sum(k.split('.')[0] == top for k in own)
        assert g['count'] == g['total'] == n
    assert dict(report.unexpected_groups) == {
        'beit3': dict(count=len(wrong), total=len(wrong), example=next(iter(wrong)))}
    assert sorted(report.missing) == sorted(own)
    assert report.loaded == 0 and report.nothing_loaded
    with pytest.raises(ValueError, match=rf"wrong\.pth: none of the model's {len(own)} keys"):
        report.check_loaded('wrong.pth')


def test_a_checkpoint_that_fills_nothing_is_refused(model_cfg, source_state, tmp_path):
    """The runner (load_from, mim test -C) and RefInferencer (inference, demo, ONNX export)
    refuse a checkpoint of another model instead of running on random weights."""
    other = {'head.decoder.' + k: v for k, v in source_state.items()}
    path = str(tmp_path / 'other_model.pth')
    torch.save({'state_dict': other}, path)
    runner = _runner(model_cfg, tmp_path, path, 'other')
    with pytest.raises(ValueError, match=r"other_model\.pth: none of the model's \d+ keys"):
        _load(runner, path)
    partial = {k: v for i, (k, v) in enumerate(source_state.items()) if i % 2}
    report = checkpoint_report(_build(model_cfg, seed=0), partial)
    assert report.loaded == len(partial) and not report.nothing_loaded
    assert f'{len(partial)} of the model\'s {report.total} keys loaded' in report.format()


def test_load_from_refuses_a_non_allow_listed_global(model_cfg, source_state, tmp_path):
    from mmrefer.utils import UnsafeCheckpointError
    marker = tmp_path / 'marker.txt'
    path = str(tmp_path / 'evil.pth')
    torch.save({'state_dict': source_state, 'meta': {'x': WritesMarker(str(marker))}}, path)
    runner = _runner(model_cfg, tmp_path, path, 'load_from_evil')
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pth.*allow-list"):
        _load(runner, path)
    assert not marker.exists()
