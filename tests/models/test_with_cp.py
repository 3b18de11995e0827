"""Activation checkpointing (``model.backbone.with_cp=True``) of both paper models.

Each paper config (Latent-VG on BEiT-3, InstAlign on mmdet's Swin) is shrunk to the quick-start
sizes with ``tiny_sized_cfg_options`` (every switch of the config kept) and built twice with the
same weights, ``backbone.with_cp`` False and True. On one SynthRef batch in training mode, with
the same seed, the losses and every parameter's gradient must agree, and the backbone's blocks
must really be recomputed in the backward pass: their forward pre-hooks fire twice per step
with checkpointing (forward + recomputation) and once without.
"""
import os.path as osp

import pytest
import torch

from e2e_helpers import ROOT, tiny_sized_cfg_options

pytestmark = pytest.mark.usefixtures('one_torch_thread')

CONFIGS = {
    'latentvg': osp.join(ROOT, 'configs', 'latentvg_beit3.py'),
    'instalign': osp.join(ROOT, 'configs', 'instalign', 'instalign_swin-b_roberta_grefcoco.py'),
}


def _blocks(model):
    """The modules run inside each checkpointed unit of the backbone: BEiT-3's encoder layers;
    the attention of each Swin block (mmdet checkpoints the block's inner forward)."""
    backbone = model.backbone
    if type(backbone).__name__ == 'BEiT3':
        return list(backbone.encoder.layers)
    return [blk.attn for stage in backbone.stages for blk in stage.blocks]


def _step(cfg, with_cp, state, batch):
    """Loss terms, gradients and block-call count of one training forward/backward."""
    from mmrefer.registry import MODELS
    cfg.model.backbone.with_cp = with_cp
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.load_state_dict(state)
    model.train()
    calls = []
    # pre-hooks: non-reentrant checkpointing stops the recomputation as soon as the saved
    # tensors are rebuilt, so a block's forward (and its forward hook) need not complete
    hooks = [b.register_forward_pre_hook(lambda *a: calls.append(1)) for b in _blocks(model)]
    data = model.data_preprocessor(batch, training=True)
    torch.manual_seed(1)
    losses = model.loss(data['inputs'], data['data_samples'])
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    for h in hooks:
        h.remove()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return ({k: float(v) for k, v in losses.items() if 'loss' in k}, grads, len(calls),
            len(_blocks(model)))


@pytest.mark.parametrize('method', sorted(CONFIGS))
def test_with_cp_same_loss_and_gradients_and_recomputes(method, synthref_root):
    from mmengine.config import Config
    from mmengine.runner import Runner

    from mmrefer.registry import MODELS
    from mmrefer.utils import register_all_modules
    register_all_modules()
    path = CONFIGS[method]
    cfg = Config.fromfile(path)
    assert cfg.model.backbone.with_cp is False, f'{path}: with_cp should be explicit and off'
    cfg.merge_from_dict(tiny_sized_cfg_options(path, synthref_root, validate=False))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    state = model.state_dict()
    batch = next(iter(Runner.build_dataloader(cfg.train_dataloader, seed=0)))

    loss0, grads0, calls0, n_blocks = _step(cfg, False, state, batch)
    loss1, grads1, calls1, _ = _step(cfg, True, state, batch)
    assert n_blocks > 0
    assert calls0 == n_blocks, (calls0, n_blocks)
    assert calls1 == 2 * n_blocks, f'with_cp=True: {calls1} block calls, expected ' \
                                   f'{2 * n_blocks} (forward + recomputation in backward)'
    assert loss0.keys() == loss1.keys()
    for k in loss0:
        assert loss1[k] == pytest.approx(loss0[k], rel=1e-5, abs=1e-6), k
    assert grads0.keys() == grads1.keys()
    backbone_grads = [n for n in grads0 if n.startswith('backbone.')]
    assert backbone_grads
    for n in grads0:
        torch.testing.assert_close(grads1[n], grads0[n], rtol=1e-4, atol=1e-6, msg=n)
