"""Checkpoints of the tiny Latent-VG saved before the no-target modules got one name
(``head.empty_token.*``, today ``head.no_target_predictor.*``) load into today's model: every
key of ``tests/data/pre_restructure/latentvg_tiny_synthref.json`` (name -> shape, written by the
code of commit 9f32b58) lands with its value, none is missing, none is left over."""
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.runner.checkpoint import load_state_dict
from model_helpers import pre_restructure_state_dict

from mmrefer.utils.setup_env import register_all_modules

register_all_modules()

from mmrefer.registry import MODELS  # noqa: E402

ROOT = osp.join(osp.dirname(__file__), '..', '..', '..')
CONFIG = osp.join(ROOT, 'configs', 'quickstart', 'latentvg_tiny_synthref.py')


def _old_state_dict():
    return pre_restructure_state_dict('latentvg_tiny_synthref')


def _model():
    return MODELS.build(Config.fromfile(CONFIG).model)


def test_old_keys_load_strictly_into_todays_tiny_model():
    model = _model()
    old = _old_state_dict()
    renamed = [k for k in old if k.startswith('head.empty_token.')]
    assert renamed, 'the key list no longer holds the pre-rename names this test is about'
    result = model.load_state_dict(dict(old), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    new = model.state_dict()
    for key in renamed:
        today = 'head.no_target_predictor.' + key[len('head.empty_token.'):]
        assert torch.equal(new[today], old[key]), key
    # every other tensor kept its name and value
    for key in set(old) - set(renamed):
        assert torch.equal(new[key], old[key]), key
    assert len(new) == len(old)


def test_old_keys_through_mmengine_checkpoint_loader():
    """The path of ``load_from`` / ``mim test -C``: mmengine's ``load_state_dict``."""
    model = _model()
    old = _old_state_dict()
    load_state_dict(model, dict(old), strict=True)  # raises on any missing / unexpected key
    assert torch.equal(model.head.no_target_predictor.empty_token,
                       old['head.empty_token.empty_token'])
