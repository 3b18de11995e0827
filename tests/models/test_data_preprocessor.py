"""RefDataPreprocessor pads the referring GT with the images (bottom / right) in training."""
import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmengine.structures import InstanceData, PixelData

from mmrefer.models import RefDataPreprocessor


def _sample(h, w):
    m = np.zeros((2, h, w), np.uint8)
    m[0, 1:3, 1:4] = 1
    m[1, h - 2:, w - 2:] = 1
    ds = DetDataSample(metainfo=dict(img_shape=(h, w)))
    ds.gt_instances = InstanceData(masks=BitmapMasks(m, h, w), labels=torch.zeros(2).long())
    ds.gt_merged_mask = PixelData(data=torch.from_numpy(m.max(0, keepdims=True)))
    return ds


def test_training_batch_gt_padded_like_the_images():
    pre = RefDataPreprocessor(mean=[0.] * 3, std=[1.] * 3)
    data = dict(inputs=[torch.zeros(3, 6, 10, dtype=torch.uint8),
                        torch.zeros(3, 9, 7, dtype=torch.uint8)],
                data_samples=[_sample(6, 10), _sample(9, 7)])
    out = pre(data, training=True)
    assert out['inputs'].shape == (2, 3, 9, 10)
    for ds, (h, w) in zip(out['data_samples'], ((6, 10), (9, 7))):
        merged = ds.gt_merged_mask.data
        inst = ds.gt_instances.masks
        assert merged.shape == (1, 9, 10) and inst.shape == (2, 9, 10)
        assert inst.dtype == torch.bool
        assert inst[:, h:].sum() == 0 and inst[:, :, w:].sum() == 0  # padding is background
        assert inst[1, h - 2:h, w - 2:w].all()  # the corner object stays at its pixels
        assert torch.equal(merged[0].bool(), inst.any(0))
        assert ds.metainfo['batch_input_shape'] == (9, 10)


def test_test_batch_untouched_and_oversized_gt_is_named():
    pre = RefDataPreprocessor(mean=[0.] * 3, std=[1.] * 3)
    out = pre(dict(inputs=[torch.zeros(3, 6, 10, dtype=torch.uint8)],
                   data_samples=[_sample(6, 10)]), training=False)
    assert isinstance(out['data_samples'][0].gt_instances.masks, BitmapMasks)
    bad = _sample(12, 10)
    bad.set_metainfo(dict(img_path='big.jpg'))
    with pytest.raises(ValueError, match=r'big.jpg.*larger than the batch \(6, 10\)'):
        RefDataPreprocessor.pad_ref_gt([bad], (6, 10))
