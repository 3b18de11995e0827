"""Every InstAlign config builds its model with no weight, tokenizer or data file present; the
paper model's encoders have the published Swin-B / RoBERTa-base sizes; the ablation configs
switch exactly their modules."""
import glob
import os.path as osp
import sys

import pytest
from mmengine.config import Config

from mmrefer.utils.setup_env import register_all_modules

register_all_modules()

from mmrefer.registry import MODELS, TASK_UTILS  # noqa: E402

ROOT = osp.join(osp.dirname(__file__), '..', '..')
PAPER = sorted(glob.glob(osp.join(ROOT, 'configs', 'instalign', '*.py')))
TINY = osp.join(ROOT, 'configs', 'quickstart', 'instalign_tiny_synthref.py')
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis_tools'))
import get_flops  # noqa: E402


def _count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope='module')
def paper_model():
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'instalign',
                                   'instalign_swin-b_roberta_grefcoco.py'))
    return cfg, MODELS.build(cfg.model)


@pytest.mark.slow
def test_paper_config(paper_model):
    _, model = paper_model
    assert len(model.head.decoder.layers) == 9  # the paper's 9 Phrase-Object blocks
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
        phrase_cost = TASK_UTILS.get('PhraseAlignmentCost')
        assert not any(isinstance(c, phrase_cost) for c in built.assigner.match_costs)
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


def test_get_flops_counts_the_tiny_model():
    """tools/analysis_tools/get_flops.py's dummy image + sentence run through InstAlign, and its
    parameter count is the built model's."""
    cfg = Config.fromfile(TINY)
    res = get_flops.count(cfg, 128, 128, 20)
    assert res['params'] == _count(MODELS.build(cfg.model))
    assert res['flops'] > 0


@pytest.mark.slow
def test_paper_schedule_param_groups(paper_model):
    """The paper's one learning rate (1e-4) for every parameter, Swin-B and RoBERTa included;
    weight decay 0.05 except on every norm (Swin's, RoBERTa's, the head's), Swin's position
    tables, the query / level embeddings (the decoder's and the pixel decoder's) and the
    aggregation's PReLU slope."""
    from model_helpers import schedule_options
    cfg, model = paper_model
    groups, norms, optimizer = schedule_options(model, cfg.optim_wrapper)
    assert {lr for lr, _ in groups.values()} == {1e-4}
    assert len(optimizer.param_groups) == 3  # merged: one group per set of options
    no_decay = norms | {n for n in groups if n.endswith(('relative_position_bias_table',
                                                         'query_embed.weight',
                                                         'query_feat.weight',
                                                         'level_embed.weight',
                                                         'level_encoding.weight',
                                                         'aggregation.prelu.weight'))}
    assert {'head.pixel_decoder.level_encoding.weight', 'head.aggregation.prelu.weight'} <= \
        no_decay
    assert any(n.startswith('backbone.stages.2.blocks.17.norm1') for n in norms)
    assert any(n.startswith('text_encoder.') and 'LayerNorm' in n for n in norms)
    for n, (_, wd) in groups.items():
        assert wd == (0.0 if n in no_decay else 0.05), (n, wd)
