"""RefDataPreprocessor pads the referring GT with the images (bottom / right) in training and
puts it on the device in one copy per batch."""
import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmengine.structures import InstanceData, PixelData
from torch.overrides import TorchFunctionMode

from mmrefer.models import RefDataPreprocessor


class HostUploads(TorchFunctionMode):
    """Records every ``Tensor.to(device)`` of a host tensor: its shape and ``non_blocking``."""

    def __init__(self):
        super().__init__()
        self.shapes, self.non_blocking = [], []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.to and args[0].device.type == 'cpu' and (
                kwargs.get('device') is not None
                or any(isinstance(a, (str, torch.device)) for a in args[1:])):
            self.shapes.append(tuple(args[0].shape))
            self.non_blocking.append(kwargs.get('non_blocking', False))
        return func(*args, **kwargs)


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


def test_ground_truth_reaches_the_device_in_one_copy():
    """Every mask of the batch travels in one host -> device copy and the no-target flags in a
    second one, whatever the batch size; samples get views (the ``meta`` device stands in for
    an accelerator)."""
    for B in (1, 4):
        samples = [_sample(6, 10) for _ in range(B)]
        for b, ds in enumerate(samples):
            ds.set_metainfo(dict(no_target=False, img_path=f'{b}.jpg'))
        samples[0].gt_instances = samples[0].gt_instances[:0]  # a no-target sample
        samples[0].gt_merged_mask = PixelData(data=torch.zeros(1, 6, 10, dtype=torch.uint8))
        samples[0].set_metainfo(dict(no_target=True))
        with HostUploads() as copies:
            RefDataPreprocessor.pad_ref_gt(samples, (8, 12), torch.device('meta'))
        assert len(copies.shapes) == 2, copies.shapes
        for b, ds in enumerate(samples):
            assert ds.gt_merged_mask.data.device.type == 'meta'
            assert ds.gt_merged_mask.data.shape == (1, 8, 12)
            assert ds.gt_instances.masks.shape == ((0, 8, 12) if b == 0 else (2, 8, 12))
            assert ds.gt_instances.masks.dtype == torch.bool
            assert ds.gt_no_target.device.type == 'meta' and ds.gt_no_target.shape == ()


def test_training_forward_uploads_images_and_masks_once_each():
    """Through the whole forward (mmengine's cast_data included, which moves every sample's
    tensor fields on its own): the images in one copy, every mask of the batch in one, the
    no-target flags in one; only the small per-sample fields (labels here) travel one by one.
    The caller's samples keep their fields."""
    pre = RefDataPreprocessor(mean=[0.] * 3, std=[1.] * 3, bgr_to_rgb=True).to('meta')
    B = 4
    samples = [_sample(6, 10) for _ in range(B)]
    for b, ds in enumerate(samples):
        ds.set_metainfo(dict(no_target=False, img_path=f'{b}.jpg'))
    data = dict(inputs=[torch.zeros(3, 6, 10, dtype=torch.uint8)] * B, data_samples=samples)
    with HostUploads() as up:
        out = pre(data, training=True)
    big = [s for s in up.shapes if len(s) >= 3]
    assert big == [(B, 3, 6, 10), (B + 2 * B, 6, 10)], up.shapes  # images; merged + instances
    assert up.shapes.count((B, )) == 1  # the no-target flags
    assert up.shapes.count((2, )) == B  # gt_instances.labels, moved by mmengine per sample
    assert out['inputs'].device.type == 'meta' and out['inputs'].shape == (B, 3, 6, 10)
    for ds in out['data_samples']:
        assert ds.gt_merged_mask.data.device.type == 'meta'
        assert ds.gt_instances.masks.device.type == 'meta'
    assert all(ds.gt_merged_mask.data.device.type == 'cpu' for ds in samples)


@pytest.mark.parametrize('divisor', [1, 32])
def test_images_of_one_shape_are_processed_as_one_batch_with_mmdets_values(divisor):
    """A same-shape list (pseudo_collate) is stacked once: the inputs and the shapes mmdet's
    DetDataPreprocessor gives (bitwise), in as many ops for 5 images as for 1 (mmengine's
    list path moves, swaps, converts and normalises image by image)."""
    from mmdet.models.data_preprocessors import DetDataPreprocessor
    from model_helpers import OpCount

    cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True,
               pad_size_divisor=divisor)
    ops = {}
    for B in (1, 5):
        g = torch.Generator().manual_seed(B)
        imgs = [torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8, generator=g)
                for _ in range(B)]
        samples = [_sample(40, 50) for _ in range(B)]
        ref = DetDataPreprocessor(**cfg)(dict(inputs=list(imgs), data_samples=[
            _sample(40, 50) for _ in range(B)]), training=False)
        with OpCount() as count:
            out = RefDataPreprocessor(**cfg)(dict(inputs=list(imgs), data_samples=samples),
                                             training=False)
        ops[B] = count.n
        assert torch.equal(out['inputs'], ref['inputs'])
        for a, b in zip(out['data_samples'], ref['data_samples']):
            assert a.metainfo['batch_input_shape'] == b.metainfo['batch_input_shape']
            assert a.metainfo['pad_shape'] == b.metainfo['pad_shape']
    assert ops[5] == ops[1], ops


def test_batching_keeps_the_callers_samples_and_mmengines_checks():
    """A batch that repeats one sample object trains and leaves it whole; an exception inside
    leaves the caller's samples whole; images whose channels the mean does not fit still get
    mmengine's assertion (a stacked batch would broadcast them silently)."""
    pre = RefDataPreprocessor(mean=[0.] * 3, std=[1.] * 3)
    ds = _sample(6, 10)
    out = pre(dict(inputs=[torch.zeros(3, 6, 10, dtype=torch.uint8)] * 2,
                   data_samples=[ds, ds]), training=True)
    assert all(s.gt_merged_mask.data.shape == (1, 6, 10) for s in out['data_samples'])
    assert 'gt_merged_mask' in ds and ds.gt_merged_mask.data.sum() > 0
    samples = [_sample(6, 10), _sample(6, 10)]
    with pytest.raises(ValueError, match='need .3, H, W. images'):
        RefDataPreprocessor(mean=[0.] * 3, std=[1.] * 3, bgr_to_rgb=True)(
            dict(inputs=[torch.zeros(1, 6, 10, dtype=torch.uint8)] * 2, data_samples=samples),
            training=True)
    assert all('gt_merged_mask' in s for s in samples)
    with pytest.raises(AssertionError, match='the mean has 3 values'):
        pre(dict(inputs=[torch.zeros(1, 6, 10, dtype=torch.uint8)] * 2,
                 data_samples=[_sample(6, 10), _sample(6, 10)]), training=False)


def test_host_copies_are_asynchronous_only_where_safe():
    """Non-blocking from pinned memory or to CUDA (a host tensor is pinned first there); a
    pageable temporary to another device is copied blocking (MPS may read it after it is
    freed); the preprocessor's own non_blocking=False is honoured."""
    from mmrefer.models.data_preprocessor import _to_device

    with HostUploads() as f:
        _to_device(torch.zeros(2), torch.device('meta'))
        _to_device(torch.zeros(2), torch.device('meta'), non_blocking=False)
    assert f.non_blocking == [False, False]
    pre = RefDataPreprocessor(mean=[0.] * 3, std=[1.] * 3, non_blocking=False).to('meta')
    with HostUploads() as f:
        pre(dict(inputs=[torch.zeros(3, 6, 10, dtype=torch.uint8)] * 2,
                 data_samples=[_sample(6, 10), _sample(6, 10)]), training=False)
    assert f.non_blocking and not any(f.non_blocking)


def test_no_target_flags_and_contradictions():
    samples = [_sample(6, 10), _sample(6, 10)]
    samples[0].gt_instances = samples[0].gt_instances[:0]
    samples[0].set_metainfo(dict(no_target=True))
    samples[1].set_metainfo(dict(no_target=0))
    RefDataPreprocessor.pad_ref_gt(samples, (6, 10))
    assert [bool(ds.gt_no_target) for ds in samples] == [True, False]
    bad = _sample(6, 10)
    bad.set_metainfo(dict(no_target=True, img_path='two.jpg', text='nobody'))
    with pytest.raises(ValueError, match=r"two.jpg, 'nobody'\) is no_target but has 2 GT"):
        RefDataPreprocessor.pad_ref_gt([bad], (6, 10))
    odd = _sample(6, 10)
    odd.set_metainfo(dict(no_target=0.3, img_path='odd.jpg'))
    with pytest.raises(ValueError, match=r'odd.jpg\) no_target must be a boolean flag'):
        RefDataPreprocessor.pad_ref_gt([odd], (6, 10))


def test_masks_already_on_the_device_are_padded_there():
    """A sample whose masks are device tensors already (a second pass, hand-made batches): no
    read back, padded on the device beside the host pieces' upload."""
    on_device, on_host = _sample(6, 10), _sample(5, 7)
    on_device.gt_instances.masks = torch.from_numpy(
        on_device.gt_instances.masks.masks).to('meta')
    RefDataPreprocessor.pad_ref_gt([on_device, on_host], (8, 12), torch.device('meta'))
    for ds in (on_device, on_host):
        assert ds.gt_instances.masks.device.type == 'meta'
        assert ds.gt_instances.masks.shape == (2, 8, 12)
        assert ds.gt_merged_mask.data.shape == (1, 8, 12)
