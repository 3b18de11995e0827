"""Every parameter that a config builds is trained: it gets a gradient, and a non-zero one within
a few optimizer steps (issue: no parameter without a gradient by design, so DDP can run with
``find_unused_parameters = False``).

Each paper, ablation and quick-start config is shrunk to the quick-start sizes with the same
``--cfg-options`` the DDP tests use (``tiny_sized_cfg_options``: every switch the config sets is
kept), built, and trained for 3 AdamW steps on one SynthRef batch. A parameter counts as unused
when it has no gradient at some step (``None``: outside that step's autograd graph, what DDP
without the unused-parameter search trips on in the next iteration) or a zero gradient at every
step (mmcv zero-initialises the deformable attention's offset and weight projections, so a few
parameters see a zero gradient at the first step only). This is the check of every ablation;
tests/e2e/test_ddp_no_unused_params.py runs the two quick-start models through DDP itself.
"""
import glob
import os.path as osp

import pytest
import torch

from e2e_helpers import ROOT, tiny_sized_cfg_options

CONFIGS = sorted(
    [osp.join(ROOT, 'configs', 'latentvg_beit3.py')] +
    glob.glob(osp.join(ROOT, 'configs', 'latentvg', '*.py')) +
    glob.glob(osp.join(ROOT, 'configs', 'instalign', '*.py')) +
    [p for p in glob.glob(osp.join(ROOT, 'configs', 'quickstart', '*.py'))
     if not p.endswith('_ris-eval.py')])


def _unused_parameters(config_path, data_root, steps=3):
    from mmengine.config import Config
    from mmengine.runner import Runner

    from mmrefer.registry import MODELS
    from mmrefer.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(config_path)
    cfg.merge_from_dict(tiny_sized_cfg_options(config_path, data_root, validate=False))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    batch = model.data_preprocessor(next(iter(loader)), training=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    named = dict(model.named_parameters())
    no_grad = set()  # without a gradient at one step or more
    nonzero = set()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        losses = model.loss(batch['inputs'], batch['data_samples'])
        sum(v for k, v in losses.items() if 'loss' in k).backward()
        for name, p in named.items():
            if p.grad is None:
                no_grad.add(name)
            elif p.grad.abs().sum() > 0:
                nonzero.add(name)
        opt.step()
    return sorted(no_grad), sorted(set(named) - nonzero - no_grad)


@pytest.mark.slow
@pytest.mark.parametrize('config_path', CONFIGS, ids=lambda p: osp.basename(p)[:-3])
def test_every_parameter_gets_a_gradient(config_path, synthref_root, one_torch_thread):
    no_grad, zero_grad = _unused_parameters(config_path, synthref_root)
    assert not no_grad, (f'{osp.basename(config_path)}: parameters outside the graph at some '
                         f'step: {no_grad}')
    assert not zero_grad, f'{osp.basename(config_path)}: parameters with a zero gradient at ' \
                          f'every step: {zero_grad}'
