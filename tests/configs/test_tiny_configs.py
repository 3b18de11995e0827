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


def test_instalign_mask_grid_tiles_inputs_that_are_not_multiples_of_32(synthref_root):
    """mmdet's Swin pads an input that is not a multiple of 4 (32 at its last stage) inside, so
    its 1/4 mask grid covers more than the input. The InstAlign configs pad the batch to 32
    (the grid then tiles it exactly and the post-processing crops each image); a batch padded
    otherwise is refused, naming the fix, instead of stretching every mask."""
    from mmdet.structures import DetDataSample
    cfg = Config.fromfile(osp.join(QUICKSTART, 'instalign_tiny_synthref.py'))
    point_config_at_synthref(cfg, str(synthref_root))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    assert model.data_preprocessor.pad_size_divisor == 32

    def batch():
        img = torch.randint(0, 256, (3, 130, 97), dtype=torch.uint8)
        ds = DetDataSample(metainfo=dict(img_shape=(130, 97), ori_shape=(130, 97),
                                         scale_factor=(1.0, 1.0), text='the red circle'))
        return dict(inputs=[img], data_samples=[ds])

    with torch.no_grad():
        out = model.test_step(batch())[0]
        assert out.batch_input_shape == (160, 128)
        assert out.pred_prob.shape == (130, 97) and out.pred_mask.shape == (130, 97)
        model.data_preprocessor.pad_size_divisor = 1
        with pytest.raises(ValueError, match=r'batch shape \(130, 97\) is not a whole multiple '
                                             r'of the mask grid \(33, 25\).*pad_size_divisor=32'):
            model.test_step(batch())
