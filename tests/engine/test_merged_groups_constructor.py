"""MergedGroupsOptimWrapperConstructor: the default constructor's per-parameter options, in one
group per distinct set of options, and the same optimizer updates."""
import copy
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config, ConfigDict
from mmengine.optim import build_optim_wrapper

from mmrefer.engine import MergedGroupsOptimWrapperConstructor, merge_param_groups
from mmrefer.utils import register_all_modules

register_all_modules()


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 8))
        self.head = nn.Sequential(nn.Linear(8, 8), nn.GroupNorm(2, 8), nn.Linear(8, 3))
        self.query_embed = nn.Embedding(4, 8)

    def forward(self, x):
        h = self.head[1](self.head[0](self.backbone(x)))
        return self.head[2](h) + self.query_embed.weight.sum()


PARAMWISE = dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                 custom_keys={'head.2': dict(lr_mult=0.1), 'query_embed': dict(decay_mult=0.0)})


def _cfg(merged, **optimizer):
    cfg = dict(type='OptimWrapper', clip_grad=dict(max_norm=0.5),
               optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.05, **optimizer),
               paramwise_cfg=copy.deepcopy(PARAMWISE))
    if merged:
        cfg['constructor'] = 'MergedGroupsOptimWrapperConstructor'
    return cfg


def _wrapper(model, merged, **optimizer):
    return build_optim_wrapper(model, _cfg(merged, **optimizer))


def _options(wrapper, model):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: {k: v for k, v in g.items() if k != 'params'}
            for g in wrapper.optimizer.param_groups for p in g['params']}


def test_each_parameter_keeps_the_default_options_in_fewer_groups():
    model = _Net()
    default, merged = _wrapper(model, False), _wrapper(model, True)
    assert isinstance(merged, type(default))
    assert _options(merged, model) == _options(default, model)
    # default: one group per parameter; merged: one per distinct set of options
    assert len(default.optimizer.param_groups) == len(list(model.parameters())) == 13
    lr_wd = sorted((g['lr'], g['weight_decay'], len(g['params']))
                   for g in merged.optimizer.param_groups)
    # weights (3 linears); norms + biases; query_embed (its decay_mult key kept apart); head.2
    # weight and bias (lr x 0.1; a custom key switches the bias rule off for what it matches)
    assert lr_wd == [(1e-3, 0.05, 2), (1e-2, 0.0, 1), (1e-2, 0.0, 7), (1e-2, 0.05, 3)]


@pytest.mark.parametrize('clip', [False, True], ids=['no-clip', 'clip'])
@pytest.mark.parametrize('impl', ['for-loop', 'foreach', 'fused'])
def test_updates_are_identical_to_the_default_constructor(impl, clip):
    """Three AdamW steps: the same weights and optimizer state as with one group per parameter
    (AdamW updates every parameter on its own), bitwise for the for-loop and foreach
    implementations (CUDA's default). Within 1e-6 when the gradients are clipped (the total norm
    sums the parameters in group order, so in another order) and for CPU's fused kernel (seen:
    1.5e-8 on weights of ~0.3 at the third step)."""
    flags = {'for-loop': dict(foreach=False), 'foreach': dict(foreach=True),
             'fused': dict(fused=True)}[impl]
    torch.manual_seed(0)
    model_a = _Net()
    model_b = copy.deepcopy(model_a)
    opt_a, opt_b = _wrapper(model_a, False, **flags), _wrapper(model_b, True, **flags)
    if not clip:
        opt_a.clip_grad_kwargs = opt_b.clip_grad_kwargs = {}
    for step in range(3):
        x = torch.randn(5, 6, generator=torch.Generator().manual_seed(step))
        for model, opt in ((model_a, opt_a), (model_b, opt_b)):
            opt.update_params(model(x).pow(2).mean())
    exact = impl != 'fused' and not clip
    tol = dict(rtol=0, atol=0) if exact else dict(rtol=1e-6, atol=1e-7)
    for (name, a), b in zip(model_a.named_parameters(), model_b.parameters()):
        torch.testing.assert_close(a, b, **tol, msg=name)
        sa, sb = opt_a.optimizer.state[a], opt_b.optimizer.state[b]
        torch.testing.assert_close(sa['exp_avg_sq'], sb['exp_avg_sq'], **tol, msg=name)
    assert not torch.equal(model_a.backbone[0].weight, _Net().backbone[0].weight)


def test_merge_keeps_order_and_accepts_a_bare_tensor():
    a, b, c = (nn.Parameter(torch.zeros(1)) for _ in range(3))
    groups = merge_param_groups([dict(params=[a], lr=1.0), dict(params=b, lr=2.0),
                                 dict(params=[c], lr=1.0)])
    assert [g['lr'] for g in groups] == [1.0, 2.0]
    assert [[id(p) for p in g['params']] for g in groups] == [[id(a), id(c)], [id(b)]]


def test_without_paramwise_cfg_it_is_the_default():
    model = _Net()
    wrapper = MergedGroupsOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1)))(model)
    assert len(wrapper.optimizer.param_groups) == 1
    assert len(wrapper.optimizer.param_groups[0]['params']) == 13


def test_groups_are_plain_dicts_where_the_default_gives_config_dicts():
    # AdamW reads its options from the group for every parameter on every step: a ConfigDict's
    # Python __getitem__ there is host time per step, and dynamo cannot trace over it. The
    # Runner passes the config's ConfigDict, and mmengine then stores the groups as ConfigDict
    model = _Net()
    default, merged = (build_optim_wrapper(model, ConfigDict(_cfg(m))) for m in (False, True))
    assert {type(g).__name__ for g in default.optimizer.param_groups} == {'ConfigDict'}
    assert all(type(g) is dict for g in merged.optimizer.param_groups)
    x = torch.randn(4, 6)
    merged.update_params(model(x).square().mean())  # the optimizer steps with them
    assert all(merged.optimizer.state[p] for p in model.parameters())


@pytest.mark.parametrize('config', ['latentvg_beit3.py',
                                    'instalign/instalign_swin-b_roberta_grefcoco.py'])
def test_paper_schedules_step_each_group_in_one_fused_op(config):
    """The paper schedules' AdamW is fused: a step is one ``_fused_adamw_`` per group (plus the
    step counters' ``_foreach_add_``), a single pass over each parameter, its gradient and both
    moments, however many parameters there are. The for-loop AdamW (CPU's default) runs about
    ten ops per parameter, and foreach (CUDA's default) about ten full passes per group. The
    weights after two steps agree to rounding."""
    from model_helpers import OpCount
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    cfg = Config.fromfile(osp.join(root, 'configs', config)).optim_wrapper
    counts, weights = {}, {}
    for fused in (True, False):
        torch.manual_seed(0)
        model = _Net()
        ow_cfg = copy.deepcopy(cfg)
        ow_cfg['optimizer']['fused'] = fused
        wrapper = build_optim_wrapper(model, ow_cfg)
        for step in range(2):  # the first step creates the moments
            wrapper.optimizer.zero_grad()
            model(torch.randn(5, 6)).square().mean().backward()
            with OpCount(views=False) as ops:
                wrapper.optimizer.step()
        counts[fused] = ops.n
        weights[fused] = [p.detach().clone() for p in model.parameters()]
    torch.manual_seed(0)
    for a, b, init in zip(weights[True], weights[False], _Net().parameters()):
        assert not torch.equal(a, init)  # the steps moved every parameter
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    groups = len(wrapper.optimizer.param_groups)
    # + 2: the optimizer's profiler range opens and closes (no kernel)
    assert counts[True] == 2 * groups + 2 < counts[False] // 10, counts


def test_fused_without_a_kernel_for_the_parameters_names_the_field():
    """Parameters on a device without a fused AdamW kernel (meta here; the CPU with torch < 2.4)
    are refused when the optimizer is built, naming the config field and the way out: torch
    2.13 itself raises only at the first step, without either."""
    with torch.device('meta'):
        model = _Net()
    with pytest.raises(ValueError) as err:
        _wrapper(model, True, fused=True)
    msg = str(err.value)
    assert 'optim_wrapper.optimizer.fused=True (AdamW)' in msg and 'on meta' in msg
    assert 'optim_wrapper.optimizer.fused=False' in msg
    assert _wrapper(model, True, fused=False).optimizer.defaults['fused'] is False
    assert _wrapper(_Net(), True, fused=True).optimizer.defaults['fused'] is True  # CPU: kernel
