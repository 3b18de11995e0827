"""HostShapeMSDeformAttnPixelDecoder: mmdet's MSDeformAttnPixelDecoder (same keys, the same
output to float rounding) without the device -> host reads of mmdet's forward (the level sizes
stay Python ints), down to its deformable attention (HostShapeMultiScaleDeformableAttention
against mmcv's) and its sampling (multi_scale_deformable_sampling against mmcv's PyTorch one)."""
import copy

import pytest
import torch
from mmdet.models.layers import MSDeformAttnPixelDecoder
from mmengine.config import ConfigDict
from model_helpers import LargestOutput
from torch.utils._python_dispatch import TorchDispatchMode

from mmcv.ops import MultiScaleDeformableAttention
from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch

from mmrefer.models import (HostShapeMSDeformAttnPixelDecoder,
                            HostShapeMultiScaleDeformableAttention)
from mmrefer.models.instalign.pixel_decoder import multi_scale_deformable_sampling
from mmrefer.registry import MODELS

CFG = dict(in_channels=[8, 16, 24, 32], strides=[4, 8, 16, 32], feat_channels=32,
           out_channels=32, num_outs=3, norm_cfg=dict(type='GN', num_groups=8),
           act_cfg=dict(type='ReLU'),
           encoder=dict(num_layers=2, layer_cfg=dict(
               self_attn_cfg=dict(embed_dims=32, num_heads=4, num_levels=3, num_points=2,
                                  dropout=0.0, batch_first=True),
               ffn_cfg=dict(embed_dims=32, feedforward_channels=64, num_fcs=2, ffn_drop=0.0))),
           positional_encoding=dict(num_feats=16, normalize=True))


def assert_float_close(a, b):
    """Equal up to fp32 rounding: the sampling adds its terms in another order than mmcv's."""
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class ScalarReads(TorchDispatchMode):
    """Tensor -> Python number conversions (each a device -> host read on an accelerator)."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += '_local_scalar_dense' in str(func)
        return func(*args, **(kwargs or {}))


def _feats(B, h, w):
    """Four levels from ``(h, w)`` at stride 4, each next one ceil-halved (as a backbone
    with padding gives them)."""
    feats = []
    for c in (8, 16, 24, 32):
        feats.append(torch.randn(B, c, h, w))
        h, w = -(-h // 2), -(-w // 2)
    return feats


@pytest.mark.parametrize('size', [(16, 16), (15, 21)])  # odd, non-square levels too
def test_equals_mmdet_and_reads_nothing_back(size):
    torch.manual_seed(0)
    ours = MODELS.build(ConfigDict(type='HostShapeMSDeformAttnPixelDecoder', **copy.deepcopy(CFG)))
    ours.init_weights()
    ref = MSDeformAttnPixelDecoder(**ConfigDict(copy.deepcopy(CFG)))  # mmdet reads attributes
    assert isinstance(ours, HostShapeMSDeformAttnPixelDecoder)
    ref.load_state_dict(ours.state_dict(), strict=True)  # the same keys
    ours.eval(), ref.eval()
    feats = _feats(2, *size)
    with torch.no_grad():
        with ScalarReads() as mm:
            ref_mask, ref_outs = ref(feats)
        with ScalarReads() as host:
            mask, outs = ours(feats)
    assert_float_close(mask, ref_mask)
    assert len(outs) == len(ref_outs) == 3
    for a, b in zip(outs, ref_outs):
        assert_float_close(a, b)
    # mmdet reads 3 per level (split size + reshape h, w); mmcv's deformable attention reads
    # its shape assert (1 per layer) and, on the CPU path taken here, the level sizes again
    # (3 levels: 3 split sizes + 6 reshape sizes); ours reads nothing
    layers = ours.encoder.num_layers
    assert all(type(layer.self_attn) is HostShapeMultiScaleDeformableAttention
               for layer in ours.encoder.layers)
    assert (mm.n, host.n) == (9 + 10 * layers, 0), (mm.n, host.n)


def test_two_fpn_levels_use_the_convolutions_built_for_them():
    """Five backbone levels, three in the encoder: two FPN levels below it. mmdet builds
    lateral/output convs coarse -> fine but indexes them by the input level: with different
    channels it fails; with equal channels it runs each level through the other level's convs.
    Ours gives each level the convs built for it, so it equals mmdet with the two swapped."""
    torch.manual_seed(0)
    for fine_channels in (8, 4):
        cfg = copy.deepcopy(CFG)
        cfg.update(in_channels=[fine_channels, 8, 16, 24, 32], strides=[2, 4, 8, 16, 32])
        ours = MODELS.build(ConfigDict(type='HostShapeMSDeformAttnPixelDecoder', **cfg)).eval()
        assert [c.conv.in_channels for c in ours.lateral_convs] == [8, fine_channels]
        ref = MSDeformAttnPixelDecoder(**ConfigDict(copy.deepcopy(cfg))).eval()
        feats = [torch.randn(1, fine_channels, 32, 24)] + _feats(1, 16, 12)
        swap = {'lateral_convs.0': 'lateral_convs.1', 'lateral_convs.1': 'lateral_convs.0',
                'output_convs.0': 'output_convs.1', 'output_convs.1': 'output_convs.0'}
        state = {}
        for k, v in ours.state_dict().items():
            prefix = '.'.join(k.split('.')[:2])
            state[k.replace(prefix, swap[prefix], 1) if prefix in swap else k] = v
        with torch.no_grad():
            mask, outs = ours(feats)
            assert mask.shape == (1, 32, 32, 24)
            if fine_channels == 4:
                with pytest.raises(RuntimeError):  # level 1 (8 ch) meets the conv built for 4
                    ref.load_state_dict(ours.state_dict(), strict=True)
                    ref(feats)
                continue
            ref.load_state_dict(state, strict=True)
            ref_mask, ref_outs = ref(feats)
            assert_float_close(mask, ref_mask)
            for a, b in zip(outs, ref_outs):
                assert_float_close(a, b)
            # unswapped, mmdet's result differs: the convs matter
            ref.load_state_dict(ours.state_dict(), strict=True)
            assert not torch.allclose(ref(feats)[0], mask)


ATTN = dict(embed_dims=32, num_heads=4, num_levels=3, num_points=2, dropout=0.0)


def _attn_inputs(B, sizes, Q=7, box=False, batch_first=True):
    V = sum(h * w for h, w in sizes)
    query, value = torch.randn(B, Q, 32), torch.randn(B, V, 32)
    if not batch_first:
        query, value = query.transpose(0, 1), value.transpose(0, 1)
    ref = torch.rand(B, Q, len(sizes), 4 if box else 2)
    shapes = torch.tensor(sizes)
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    mask = torch.zeros(B, V, dtype=torch.bool)
    mask[0, -3:] = True
    return dict(query=query, value=value, query_pos=torch.randn_like(query),
                key_padding_mask=mask, reference_points=ref, spatial_shapes=shapes,
                level_start_index=starts)


@pytest.mark.parametrize('batch_first,box', [(True, False), (False, False), (True, True)])
def test_attention_equals_mmcv_and_reads_nothing_back(batch_first, box):
    """Same keys and output as mmcv's module (both reference-point forms, either layout, a
    padding mask), no read back with the host sizes, one (the sizes) without them."""
    torch.manual_seed(0)
    sizes = [(5, 7), (3, 4), (2, 2)]
    ref = MultiScaleDeformableAttention(**ATTN, batch_first=batch_first).eval()
    ref.init_weights()
    with torch.no_grad():  # away from mmcv's zero / grid start, so the sampling moves
        ref.sampling_offsets.weight.normal_(0, 0.5)
    ours = HostShapeMultiScaleDeformableAttention(**ATTN, batch_first=batch_first).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    inputs = _attn_inputs(2, sizes, box=box, batch_first=batch_first)
    with torch.no_grad():
        expected = ref(**inputs)
        with ScalarReads() as host:
            out = ours(**inputs, spatial_sizes=sizes)
        with ScalarReads() as no_sizes:
            out2 = ours(**inputs)
    assert torch.equal(out, out2)
    assert_float_close(out, expected)
    assert host.n == 0 and no_sizes.n <= 1, (host.n, no_sizes.n)


def test_attention_names_sizes_that_do_not_fit_the_value():
    attn = HostShapeMultiScaleDeformableAttention(**ATTN, batch_first=True)
    inputs = _attn_inputs(1, [(5, 7), (3, 4), (2, 2)])
    with pytest.raises(ValueError, match=r'spatial_sizes \[\(5, 7\), \(3, 4\), \(2, 3\)\] '
                                         r'cover 53 values, the value tensor has 51'):
        attn(**inputs, spatial_sizes=[(5, 7), (3, 4), (2, 3)])


def test_attention_samples_in_fp32_and_projects_in_bf16_under_autocast():
    """mmcv's CUDA sampling op takes no bf16: under autocast the sampling gets fp32 value,
    locations and weights, while the four projections run in bf16; the output stays within
    bf16 rounding of the fp32 output."""
    import mmrefer.models.instalign.pixel_decoder as pd
    torch.manual_seed(0)
    sizes = [(5, 7), (3, 4), (2, 2)]
    attn = HostShapeMultiScaleDeformableAttention(**ATTN, batch_first=True).eval()
    attn.init_weights()
    inputs = _attn_inputs(2, sizes)
    seen, proj = [], []
    orig = pd.multi_scale_deformable_sampling

    def spy(value, shapes, loc, w):
        seen.append((value.dtype, loc.dtype, w.dtype, shapes))
        return orig(value, shapes, loc, w)

    for name in ('value_proj', 'sampling_offsets', 'attention_weights', 'output_proj'):
        getattr(attn, name).register_forward_hook(
            lambda m, a, out, name=name: proj.append((name, out.dtype)))
    with torch.no_grad():
        fp32 = attn(**inputs, spatial_sizes=sizes)
        proj.clear()
        pd.multi_scale_deformable_sampling = spy
        try:
            with torch.autocast('cpu', dtype=torch.bfloat16):
                bf16 = attn(**inputs, spatial_sizes=sizes)
        finally:
            pd.multi_scale_deformable_sampling = orig
    assert seen == [(torch.float32, torch.float32, torch.float32, sizes)]
    assert dict(proj) == dict.fromkeys(
        ('value_proj', 'sampling_offsets', 'attention_weights', 'output_proj'), torch.bfloat16)
    err = (bf16.float() - fp32).abs().max() / fp32.abs().max()
    assert err < 0.02, err


def _sampling_inputs(B, sizes, Q, M=4, D=8, K=3, dtype=torch.float64):
    """Random value / locations / weights; locations reach past [0, 1] (zero padding)."""
    g = torch.Generator().manual_seed(0)
    V, L = sum(h * w for h, w in sizes), len(sizes)
    value = torch.randn(B, V, M, D, generator=g, dtype=dtype)
    locations = torch.rand(B, Q, M, L, K, 2, generator=g, dtype=dtype) * 1.2 - 0.1
    weights = torch.rand(B, Q, M, L, K, generator=g, dtype=dtype)
    weights = weights / weights.sum((-1, -2), keepdim=True)
    return value, locations, weights


@pytest.mark.parametrize('sizes', [[(5, 7), (3, 4), (2, 2)], [(6, 3)], [(1, 1), (4, 9)]])
def test_sampling_equals_mmcv_pytorch_in_values_and_gradients(sizes):
    """Level-by-level sums give mmcv's stacked sum (float64: to 1e-12) and its gradients with
    respect to the value, the locations and the weights."""
    inputs = _sampling_inputs(2, sizes, Q=6)
    grads = []
    for fn in (multi_scale_deformable_sampling, multi_scale_deformable_attn_pytorch):
        leaves = [t.clone().requires_grad_() for t in inputs]
        out = fn(leaves[0], sizes, leaves[1], leaves[2])
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append((out.detach(), *(t.grad for t in leaves)))
    assert grads[0][0].shape == (2, 6, 4 * 8)
    for ours, mmcv in zip(*grads):
        torch.testing.assert_close(ours, mmcv, rtol=1e-12, atol=1e-12)
    assert grads[0][2].abs().sum() > 0  # the locations do move the result


def test_sampling_without_autograd_writes_in_place_with_the_same_result():
    """With autograd off the products are formed in the samples' own buffer: bitwise the same
    output, the inputs untouched."""
    sizes = [(5, 7), (3, 4), (2, 2)]
    inputs = _sampling_inputs(2, sizes, Q=9, dtype=torch.float32)
    kept = [t.clone() for t in inputs]
    with_grad = multi_scale_deformable_sampling(inputs[0], sizes, inputs[1], inputs[2])
    with torch.no_grad():
        without = multi_scale_deformable_sampling(inputs[0], sizes, inputs[1], inputs[2])
    assert torch.equal(with_grad, without)
    assert all(torch.equal(a, b) for a, b in zip(inputs, kept))


@pytest.mark.parametrize('grad', [False, True])
def test_sampling_holds_one_level_of_samples_not_all_levels_stacked(grad):
    """mmcv's PyTorch path stacks all ``L K`` samples per query into one ``[B M, D, Q, L K]``
    tensor (1.9 GB per encoder layer in InstAlign's paper config at batch 32); ours never
    makes a tensor larger than one level's samples ``[B M, D, Q, K]``."""
    sizes = [(6, 6), (3, 3), (2, 2)]
    B, Q, M, D, K = 2, 20, 4, 8, 3
    inputs = [t.requires_grad_(grad) for t in _sampling_inputs(B, sizes, Q, M, D, K,
                                                               torch.float32)]
    sizes_numel = {}
    for fn in (multi_scale_deformable_sampling, multi_scale_deformable_attn_pytorch):
        with torch.set_grad_enabled(grad), LargestOutput() as seen:
            out = fn(inputs[0], sizes, inputs[1], inputs[2])
            if grad:
                out.sum().backward()
        sizes_numel[fn.__name__] = seen.numel
    one_level = B * M * D * Q * K
    assert sizes_numel['multi_scale_deformable_sampling'] == one_level
    assert sizes_numel['multi_scale_deformable_attn_pytorch'] == one_level * len(sizes)
