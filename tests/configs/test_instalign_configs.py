"""Every InstAlign config builds its model with no weight, tokenizer or data file present."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmrefer.utils.setup_env import register_all_modules

register_all_modules()

from mmrefer.registry import MODELS  # noqa: E402

ROOT = osp.join(osp.dirname(__file__), '..', '..', 'configs')
PAPER = sorted(glob.glob(osp.join(ROOT, 'instalign', '*.py')))
TINY = osp.join(ROOT, 'quickstart', 'instalign_tiny_synthref.py')


def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_config_names():
    names = [osp.basename(p) for p in PAPER]
    for n in ('instalign_swin-b_roberta_grefcoco.py', 'instalign_swin-b_roberta_refzom.py',
              'instalign_swin-b_roberta_refcoco-combined.py'):
        assert n in names
    ablations = [n for n in names if n.startswith('instalign_ablation_')]
    assert len(ablations) == 13


@pytest.fixture(scope='module')
def paper_model():
    cfg = Config.fromfile(osp.join(ROOT, 'instalign', 'instalign_swin-b_roberta_grefcoco.py'))
    return cfg, MODELS.build(cfg.model)


@pytest.mark.slow
def test_paper_config(paper_model):
    cfg, model = paper_model
    assert cfg.model.backbone.window_size == 12 and cfg.model.backbone.embed_dims == 128
    assert cfg.model.head.num_queries == 100 and len(model.head.decoder.layers) == 9
    assert cfg.model.head.pixel_decoder.encoder.num_layers == 6
    assert cfg.optim_wrapper.optimizer.lr == 1e-4 and cfg.train_cfg.max_epochs == 20
    sched = cfg.param_scheduler[0]
    assert sched.end_factor * cfg.optim_wrapper.optimizer.lr == pytest.approx(1e-6)
    assert cfg.train_dataloader.batch_size * 4 == 32
    assert [c.weight for c in cfg.model.train_cfg.assigner.match_costs] == [2, 5, 5, 1]
    h = cfg.model.head
    assert (h.loss_merged_bce.loss_weight, h.loss_no_target.loss_weight) == (5.0, 0.1)
    assert cfg.train_pipeline[2]['scale'] == (480, 480)
    # Swin-B 86.9M (mmdet, incl. out norms) + RoBERTa-base 124.1M (no pooler) + head
    assert _count(model.backbone) == 86_880_376
    assert _count(model.text_encoder) == 124_055_040
    assert 230e6 < _count(model) < 260e6


@pytest.mark.slow
@pytest.mark.parametrize('path', [p for p in PAPER if 'grefcoco.py' not in p],
                         ids=lambda p: osp.basename(p))
def test_child_configs_build(path, paper_model):
    cfg = Config.fromfile(path)
    # building Swin-B + RoBERTa-base 15 times is slow: build the head (all that differs)
    # and check that backbone / text encoder configs are the paper ones
    base_cfg, base_model = paper_model
    assert cfg.model.backbone == base_cfg.model.backbone
    assert cfg.model.text_encoder == base_cfg.model.text_encoder
    head = dict(cfg.model.head, text_channels=768, train_cfg=cfg.model.train_cfg,
                test_cfg=cfg.model.test_cfg)
    built = MODELS.build(head)
    name = osp.basename(path)
    if 'no-inst-sup' in name:
        assert not built.instance_supervision and built.assigner is None
    if 'no-phrase' in name:
        assert not built.phrase_alignment
        assert all('Phrase' not in type(c).__name__ for c in built.assigner.match_costs)
    if 'threshold' in name:
        assert built.aggregation.mode == 'threshold'
    if 'no-prelu' in name:
        assert built.aggregation.mode == 'aia_no_prelu' and built.aggregation.prelu is None
    for nt in ('qglobal', 'tsen', 'qmean'):
        if name.endswith(f'nt-{nt}.py'):
            assert built.no_target_predictor.inputs == nt
    for n in (20, 50, 100, 200):
        if name.endswith(f'_n{n}.py'):
            assert built.query_feat.num_embeddings == n
    if 'm2f-decoder' in name:
        assert built.decoder.text_mode == 'none'
    if 'rela-decoder' in name:
        assert built.decoder.text_mode == 'query_only'
    if 'refzom' in name:
        assert 'RefZOM' in cfg.val_evaluator.type


def test_tiny_config_builds_and_runs(tmp_path):
    cfg = Config.fromfile(TINY)
    cfg.model.text_encoder.tokenizer_dir = str(tmp_path / 'absent')  # independent of data/
    model = MODELS.build(cfg.model)
    assert _count(model) < 2_000_000
    assert cfg.train_pipeline[2]['scale'] == (128, 128)
    from mmdet.structures import DetDataSample
    with pytest.warns(UserWarning):  # no tokenizer dir here -> dummy ids in tensor mode
        merged, nt = model._forward(torch.randn(1, 3, 128, 128),
                                    [DetDataSample(metainfo=dict(text='a red circle'))])
    assert merged[-1].shape == (1, 32, 32)


def test_get_flops_dummy_input_on_tiny_config():
    """tools/analysis_tools/get_flops.py passes an image + a data sample with text/input_ids."""
    import importlib.util
    path = osp.join(osp.dirname(__file__), '..', '..', 'tools', 'analysis_tools', 'get_flops.py')
    spec = importlib.util.spec_from_file_location('get_flops', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = Config.fromfile(TINY)
    res = mod.count(cfg, 128, 128, 20)
    assert res['params'] == _count(MODELS.build(cfg.model))
    assert res['flops'] > 0 and res['macs'] == res['flops'] / 2
