"""Checkpoints of the tiny InstAlign saved before the head's rename (``head.no_target.*``, the
``nn.Sequential`` mask MLP ``head.mask_embed.{0,2,4}.*``) load into today's model: every key of
``tests/data/pre_restructure/instalign_tiny_synthref.json`` (name -> shape, written by the code
of commit 9f32b58) lands, none is missing, none is left over."""
import os.path as osp

import torch
from mmengine.config import Config
from model_helpers import pre_restructure_state_dict

from mmrefer.utils.setup_env import register_all_modules

register_all_modules()

from mmrefer.registry import MODELS  # noqa: E402

ROOT = osp.join(osp.dirname(__file__), '..', '..', '..')
CONFIG = osp.join(ROOT, 'configs', 'quickstart', 'instalign_tiny_synthref.py')


def _old_state_dict():
    return pre_restructure_state_dict('instalign_tiny_synthref')


def _model(tmp_path):
    cfg = Config.fromfile(CONFIG)
    cfg.model.text_encoder.tokenizer_dir = str(tmp_path / 'absent')  # building needs no file
    return MODELS.build(cfg.model)


def test_old_keys_load_strictly_into_todays_tiny_model(tmp_path):
    model = _model(tmp_path)
    old = _old_state_dict()
    assert 'head.no_target.mlp.0.weight' in old and 'head.mask_embed.4.bias' in old
    result = model.load_state_dict(dict(old), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    head = model.head
    # the renamed tensors hold the old values
    for i, j in ((0, 0), (2, 1), (4, 2)):
        assert torch.equal(head.mask_embed.layers[j].weight, old[f'head.mask_embed.{i}.weight'])
        assert torch.equal(head.mask_embed.layers[j].bias, old[f'head.mask_embed.{i}.bias'])
        assert torch.equal(head.no_target_predictor.mlp[i].weight,
                           old[f'head.no_target.mlp.{i}.weight'])
    assert torch.equal(head.score_embed.bias, old['head.score_embed.bias'])
    # and every parameter / buffer of today's model came from the old file
    assert len(model.state_dict()) == len(old)


def test_old_keys_through_mmengine_checkpoint_loader(tmp_path):
    """The path of ``load_from`` / ``mim test -C``: mmengine's ``load_checkpoint``."""
    from mmengine.runner.checkpoint import load_state_dict
    model = _model(tmp_path)
    old = _old_state_dict()
    load_state_dict(model, dict(old), strict=True)  # raises on any missing / unexpected key
    assert torch.equal(model.head.no_target_predictor.mlp[4].bias, old['head.no_target.mlp.4.bias'])
