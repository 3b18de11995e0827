"""Every Latent-VG config builds its model with MODELS.build while no weight, tokenizer or data
file exists, for its own input size; the ablation configs switch exactly their modules;
parameter counts match the supplementary's Tables 9-10 within 2%."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmrefer.registry import MODELS
from mmrefer.utils import register_all_modules

register_all_modules()
ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..', 'configs'))
PAPER = sorted(glob.glob(osp.join(ROOT, 'latentvg', '*.py'))) + [
    osp.join(ROOT, 'latentvg_beit3.py')]
TINY = osp.join(ROOT, 'quickstart', 'latentvg_tiny_synthref.py')


def _load(name):
    return Config.fromfile(name if osp.isabs(name) else osp.join(ROOT, name))


def _build_meta(cfg):
    with torch.device('meta'):
        return MODELS.build(cfg.model)


def _params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize('path', PAPER + [TINY], ids=osp.basename)
def test_config_builds_without_files(path):
    cfg = _load(path)
    # point every file field at a path that cannot exist: building must not read them
    if cfg.model.get('pretrained'):
        cfg.model.pretrained = '/nonexistent/beit3_weights.pth'
    cfg.model.tokenizer.spm_path = '/nonexistent/beit3.spm'
    assert cfg.default_scope == 'mmrefer'
    assert tuple(cfg.img_scale) == (cfg.model.backbone.img_size, ) * 2
    model = MODELS.build(cfg.model) if path == TINY else _build_meta(cfg)
    assert isinstance(model, MODELS.get('LatentVG'))
    n_latent = 0 if model.latent_init is None else model.latent_init.num_expressions
    assert model.head.num_class_tokens == n_latent + 1


def test_gres_variant():
    """The GRES config builds the no-target predictor and drops the subject distributor."""
    model = _build_meta(_load('latentvg/latentvg_beit3-b_grefcoco.py'))
    assert model.subject_distributor is None and model.head.no_target_predictor is not None
    assert model.concept_injector is not None


ABLATIONS = {
    # name: (latent mode, SD, VCI, contrastive type)
    'no-latent': (None, False, False, None),
    'naive-latent': ('naive', False, False, None),
    'sd': ('latent', True, False, None),
    'vci': ('latent', False, True, None),
    'sd-vci': ('latent', True, True, None),
    'full': ('latent', True, True, 'PositiveMarginContrastiveLoss'),
    'infonce': ('latent', True, True, 'InfoNCELoss'),
    'triplet': ('latent', True, True, 'TripletContrastiveLoss'),
    'arcface': ('latent', True, True, 'ArcFaceContrastiveLoss'),
    'full_vci-per-layer': ('latent', True, True, 'PositiveMarginContrastiveLoss'),
}


@pytest.mark.parametrize('name', sorted(ABLATIONS))
def test_ablation_switches(name):
    mode, sd, vci, loss = ABLATIONS[name]
    model = _build_meta(_load(f'latentvg/latentvg_ablation_{name}.py'))
    assert (model.latent_init.mode if model.latent_init else None) == mode
    assert (model.subject_distributor is not None) == sd
    assert (model.concept_injector is not None) == vci
    got = model.head.loss_contrastive
    assert got is None if loss is None else isinstance(got, MODELS.get(loss))


@pytest.mark.parametrize('name,target', [('no-latent', 255e6), ('sd-vci', 267e6),
                                         ('vci', 267e6), ('sd', 266e6), ('full', 267e6)])
def test_parameter_targets(name, target):
    """Supplementary Table 10 (params do not depend on the input size)."""
    n = _params(_build_meta(_load(f'latentvg/latentvg_ablation_{name}.py')))
    assert abs(n / target - 1) <= 0.02, f'{name}: {n / 1e6:.2f}M vs {target / 1e6:.0f}M'


def test_per_layer_concept_banks_add_the_supplementarys_million():
    """Supplementary C.3: the injector adds ~1M parameters "of the concept tokens"; 12 banks of
    100 x 768 over the shared one: +0.84M, and the per-layer config stays within Table 10."""
    shared = _build_meta(_load('latentvg/latentvg_ablation_full.py'))
    per_layer = _build_meta(_load('latentvg/latentvg_ablation_full_vci-per-layer.py'))
    assert tuple(per_layer.concept_injector.concepts.shape) == (12, 100, 768)
    assert _params(per_layer) - _params(shared) == 11 * 100 * 768
    assert abs(_params(per_layer) / 267e6 - 1) <= 0.02


def test_paper_schedule_param_groups():
    """Latent-VG's schedule as docs/latentvg.md states it: lr 1e-4 for every parameter, weight
    decay 0.01 on all but the norms and the biases, the backbone's included (a custom_keys entry
    for the backbone used to switch the norm / bias rules off for all 685 of its parameters), in
    one optimizer group per set of options."""
    from model_helpers import schedule_options
    cfg = _load('latentvg_beit3.py')
    groups, norms, optimizer = schedule_options(_build_meta(cfg), cfg.optim_wrapper)
    assert {lr for lr, _ in groups.values()} == {1e-4}
    assert 'backbone.encoder.layers.0.self_attn_layer_norm.A.weight' in norms
    no_decay = norms | {n for n in groups if n.endswith('.bias')}
    for n, (_, wd) in groups.items():
        assert wd == (0.0 if n in no_decay else 0.01), (n, wd)
    assert len(optimizer.param_groups) == 2
