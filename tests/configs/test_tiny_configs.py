"""The quick-start configs run as configured: their model, built from the config, predicts on a
batch of their own val loader (pointed at the session's SynthRef) with the fields and sizes of
docs/contracts.md section 3."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmrefer.datasets.synthetic import point_config_at_synthref
from mmrefer.registry import MODELS
from mmrefer.utils import register_all_modules

register_all_modules()
QUICKSTART = osp.join(osp.dirname(__file__), '..', '..', 'configs', 'quickstart')
pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.mark.parametrize('name', ['latentvg_tiny_synthref.py', 'instalign_tiny_synthref.py'])
def test_tiny_config_predicts_on_its_val_loader(name, synthref_root):
    cfg = Config.fromfile(osp.join(QUICKSTART, name))
    point_config_at_synthref(cfg, str(synthref_root))
    loader = cfg.val_dataloader
    loader.update(batch_size=3, num_workers=0, persistent_workers=False)
    batch = next(iter(Runner.build_dataloader(loader, seed=0)))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        out = model.test_step(batch)
    assert len(out) == 3
    h, w = cfg.img_scale[1], cfg.img_scale[0]
    for sample in out:
        assert tuple(sample.img_shape) == (h, w)
        assert sample.pred_mask.shape == (h, w) and sample.pred_mask.dtype == torch.bool
        assert sample.pred_prob.shape == (h, w)
        assert 0 <= float(sample.pred_prob.min()) <= float(sample.pred_prob.max()) <= 1
        assert isinstance(sample.pred_no_target, bool)
        assert not (sample.pred_no_target and sample.pred_mask.any())
        assert sample.pred_box.shape == (4, )
