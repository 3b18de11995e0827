"""Pixel decoder of InstAlign (section 3.2): mmdet's ``MSDeformAttnPixelDecoder`` with the level
sizes kept on the host, down to its deformable attention.

mmdet's forward reads each level's ``(h_l, w_l)`` as a device tensor
(``torch._shape_as_tensor(feat)``) and then splits and reshapes the encoder memory by those
tensors: three device -> host reads per level on an accelerator, nine per forward with three
levels, each one stalling the CPU until the GPU has caught up. Here the sizes are the Python ints
of ``feat.shape``; the two tensors the deformable attention takes (``spatial_shapes``,
``level_start_index``) are built on the device from them (a host -> device copy, no read). The
modules, parameters, state-dict keys and arithmetic are mmdet's; the output equals mmdet's to
float rounding (bitwise with mmcv's CUDA op; the PyTorch sampling adds in another order, below).

The encoder's attention, :class:`HostShapeMultiScaleDeformableAttention`, is mmcv's
``MultiScaleDeformableAttention`` (same arguments and weights) given those ints too
(``spatial_sizes``). mmcv's reads the sizes back once per layer for a shape check and, on its
pure-PyTorch path (the CPU, or a GPU without the compiled ops), nine more times with three levels
to split and reshape the memory: 60 waits per step of the paper config on an H200
(docs/benchmarks.md), and 11 logged graph breaks of ``torch.compile`` in the tiny config's
loss. Without mmcv's CUDA op its sampling (``sum_l sum_k A_lqk * V_l(p_q + Delta p_lqk)``) is
:func:`multi_scale_deformable_sampling`, mmcv's ``grid_sample`` path summed level by level
instead of over one stack of all samples (1.9 GB per layer in the paper config at batch 32).
Under autocast only the sampling is an fp32 island, the CUDA op having no bf16 kernel; the
value / offset / weight / output projections follow autocast.

One difference, where mmdet cannot run: mmdet builds ``lateral_convs`` / ``output_convs`` from
the coarsest FPN level down but indexes them by the input level, so with more than one level
below the encoder (e.g. five backbone levels, three in the encoder) it pairs each level with
another level's convolutions (a channel-mismatch error, or silently swapped weights when the
channels agree). Here entry ``j`` serves the level it was built for. The InstAlign configs have
one such level (the 1/4 features), where both agree.

Shapes (``L`` encoder levels, coarsest first; ``Q = sum_l h_l w_l``)::

    feats                 list of [B, C_i, H_i, W_i], finest first (the backbone's order)
    encoder query / pos   [B, Q, C]; reference points [B, Q, L, 2] in [0, 1]
    spatial_shapes        [L, 2] long (h_l, w_l); level_start_index [L] long
    returns               mask_feature [B, C_out, H_0, W_0],
                          multi_scale_features: list of num_outs [B, C, h, w], coarse -> fine
"""
from itertools import accumulate
from typing import List, Optional, Sequence, Tuple

import mmcv.ops.multi_scale_deform_attn as mmcv_msda
import torch
import torch.nn.functional as F
from mmcv.ops import MultiScaleDeformableAttention
from mmdet.models.layers import MSDeformAttnPixelDecoder
from torch import Tensor

from mmrefer.registry import MODELS
from ..mixed_precision import fp32_island
from ..utils import resize_bilinear

__all__ = ['HostShapeMSDeformAttnPixelDecoder', 'HostShapeMultiScaleDeformableAttention',
           'multi_scale_deformable_sampling']


def multi_scale_deformable_sampling(value: Tensor, sizes: Sequence[Tuple[int, int]],
                                    locations: Tensor, weights: Tensor) -> Tensor:
    """The deformable sampling in PyTorch, ``out_q = sum_l sum_k A_lqk V_l(p_lqk)``, one level at
    a time: mmcv's ``multi_scale_deformable_attn_pytorch`` (the same ``grid_sample`` of each
    level, zero padding, ``align_corners=False``) without its stack of all samples.

    mmcv samples every level, stacks the ``L`` results into one ``[B M, D, Q, L K]`` tensor and
    weights and sums that. Here each level's samples ``[B M, D, Q, K]`` are weighted and summed
    over ``K`` at once and the level sums added: the same products, no ``L K``-wide copy. In
    InstAlign's paper config at batch 32 that stack is 1.9 GB per encoder layer (``Q = 4725``
    queries, ``M D = 256``, ``L K = 12``, fp32). The sums run in another order than mmcv's
    (within float rounding of it). With autograd off the products are formed in place.

    Shapes: value ``[B, V, M, D]`` (``V = sum_l h_l w_l``, levels in ``sizes`` order),
    ``sizes`` ``L`` host pairs ``(h_l, w_l)``, locations ``[B, Q, M, L, K, 2]`` as ``(x, y)`` in
    ``[0, 1]``, weights ``[B, Q, M, L, K]``; returns ``[B, Q, M D]``.
    """
    B, _, M, D = value.shape
    Q, K = locations.shape[1], locations.shape[4]
    grids = 2 * locations - 1
    in_place = not torch.is_grad_enabled()
    out = None
    for level, (v, (h, w)) in enumerate(zip(value.split([h * w for h, w in sizes], dim=1),
                                            sizes)):
        v = v.flatten(2).transpose(1, 2).reshape(B * M, D, h, w)
        grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # [B M, Q, K, 2]
        samples = F.grid_sample(v, grid, mode='bilinear', padding_mode='zeros',
                                align_corners=False)  # [B M, D, Q, K]
        a = weights[:, :, :, level].transpose(1, 2).reshape(B * M, 1, Q, K)
        part = (samples.mul_(a) if in_place else samples * a).sum(-1)  # [B M, D, Q]
        out = part if out is None else (out.add_(part) if in_place else out + part)
    return out.view(B, M * D, Q).transpose(1, 2).contiguous()


@fp32_island
def _deformable_sampling(value: Tensor, spatial_shapes: Tensor, sizes: Sequence[Tuple[int, int]],
                         level_start_index: Tensor, locations: Tensor, weights: Tensor,
                         im2col_step: int) -> Tensor:
    """mmcv's CUDA (or MLU) op where mmcv would take it, else
    :func:`multi_scale_deformable_sampling` given the host sizes. mmcv's availability flags are
    looked up in its module at each call, as mmcv's own forward does."""
    if ((mmcv_msda.IS_CUDA_AVAILABLE and value.is_cuda)
            or (mmcv_msda.IS_MLU_AVAILABLE and value.is_mlu)):
        return mmcv_msda.MultiScaleDeformableAttnFunction.apply(
            value, spatial_shapes, level_start_index, locations, weights, im2col_step)
    return multi_scale_deformable_sampling(value, sizes, locations, weights)


@MODELS.register_module()
class HostShapeMultiScaleDeformableAttention(MultiScaleDeformableAttention):
    """mmcv's ``MultiScaleDeformableAttention`` (same arguments, weights and arithmetic) that
    takes the level sizes as host ints as well: ``spatial_sizes``, a list of ``(h_l, w_l)``.

    Shapes (``batch_first``; ``Q`` queries, ``V = sum_l h_l w_l`` values, ``M`` heads, ``L``
    levels, ``K`` points): query ``[B, Q, C]``, value ``[B, V, C]``, reference points
    ``[B, Q, L, 2]`` (or ``4``: boxes), ``spatial_shapes`` ``[L, 2]`` long on the device;
    sampling locations ``[B, Q, M, L, K, 2]``, weights ``[B, Q, M, L, K]`` (softmax over
    ``L K``); returns ``[B, Q, C]``. Without ``spatial_sizes`` the sizes are read back once.
    """

    def forward(self, query: Tensor, key: Optional[Tensor] = None,
                value: Optional[Tensor] = None, identity: Optional[Tensor] = None,
                query_pos: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None,
                reference_points: Optional[Tensor] = None,
                spatial_shapes: Optional[Tensor] = None,
                level_start_index: Optional[Tensor] = None,
                spatial_sizes: Optional[Sequence[Tuple[int, int]]] = None,
                **kwargs) -> Tensor:
        if spatial_sizes is None:
            spatial_sizes = [tuple(s) for s in spatial_shapes.tolist()]
        value = query if value is None else value
        identity = query if identity is None else identity
        if query_pos is not None:
            query = query + query_pos
        if not self.batch_first:
            query, value = query.permute(1, 0, 2), value.permute(1, 0, 2)
        B, Q, _ = query.shape
        V = value.shape[1]
        if sum(h * w for h, w in spatial_sizes) != V:
            raise ValueError(f'{type(self).__name__}: spatial_sizes {list(spatial_sizes)} '
                             f'cover {sum(h * w for h, w in spatial_sizes)} values, the value '
                             f'tensor has {V}')
        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(B, V, self.num_heads, -1)
        M, L, K = self.num_heads, self.num_levels, self.num_points
        offsets = self.sampling_offsets(query).view(B, Q, M, L, K, 2)
        weights = self.attention_weights(query).view(B, Q, M, L * K).softmax(-1)
        weights = weights.view(B, Q, M, L, K)
        if reference_points.shape[-1] == 2:
            normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)
            locations = (reference_points[:, :, None, :, None, :]
                         + offsets / normalizer[None, None, None, :, None, :])
        elif reference_points.shape[-1] == 4:
            locations = (reference_points[:, :, None, :, None, :2]
                         + offsets / K * reference_points[:, :, None, :, None, 2:] * 0.5)
        else:
            raise ValueError(f'{type(self).__name__}: reference_points must end in 2 or 4, '
                             f'got shape {tuple(reference_points.shape)}')
        output = _deformable_sampling(value, spatial_shapes, spatial_sizes, level_start_index,
                                      locations, weights, self.im2col_step)
        output = self.output_proj(output)
        if not self.batch_first:
            output = output.permute(1, 0, 2)
        return self.dropout(output) + identity


@MODELS.register_module()
class HostShapeMSDeformAttnPixelDecoder(MSDeformAttnPixelDecoder):
    """``MSDeformAttnPixelDecoder`` (same arguments and weights) without host reads in
    ``forward``; its encoder layers' attention is :class:`HostShapeMultiScaleDeformableAttention`
    (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for layer in self.encoder.layers:
            old = layer.self_attn
            if type(old) is MultiScaleDeformableAttention:
                # same weights, and the random stream the rest of the model is built from
                # stays the one mmdet's class leaves
                with torch.random.fork_rng(devices=[]):
                    new = HostShapeMultiScaleDeformableAttention(**layer.self_attn_cfg)
                new.load_state_dict(old.state_dict())
                layer.self_attn = new

    def forward(self, feats: List[Tensor]) -> Tuple[Tensor, List[Tensor]]:
        B, device = feats[0].shape[0], feats[0].device
        queries, pos_embeds, masks, refs, sizes = [], [], [], [], []
        for i in range(self.num_encoder_levels):
            level = self.num_input_levels - i - 1
            feat = feats[level]
            h, w = (int(s) for s in feat.shape[-2:])
            no_pad = feat.new_zeros((B, h, w), dtype=torch.bool)
            pos = self.level_encoding.weight[i].view(1, -1, 1, 1) + self.postional_encoding(no_pad)
            ref = self.point_generator.single_level_grid_priors((h, w), level, device=device)
            stride = self.strides[level]
            ref = torch.stack([ref[:, 0] / (w * stride), ref[:, 1] / (h * stride)], dim=-1)
            queries.append(self.input_convs[i](feat).flatten(2).permute(0, 2, 1))
            pos_embeds.append(pos.flatten(2).permute(0, 2, 1))
            masks.append(no_pad.flatten(1))
            refs.append(ref)
            sizes.append((h, w))
        counts = [h * w for h, w in sizes]
        # host -> device without waiting for the stream (a blocking copy would)
        spatial_shapes = torch.tensor(sizes, dtype=torch.long).to(device, non_blocking=True)
        level_start_index = torch.tensor([0] + list(accumulate(counts))[:-1],
                                         dtype=torch.long).to(device, non_blocking=True)
        reference_points = torch.cat(refs)[None, :, None].repeat(B, 1, self.num_encoder_levels,
                                                                 1)
        memory = self.encoder(
            query=torch.cat(queries, dim=1),
            query_pos=torch.cat(pos_embeds, dim=1),
            key_padding_mask=torch.cat(masks, dim=1),
            spatial_shapes=spatial_shapes,
            reference_points=reference_points,
            level_start_index=level_start_index,
            valid_ratios=reference_points.new_ones((B, self.num_encoder_levels, 2)),
            spatial_sizes=sizes)
        memory = memory.permute(0, 2, 1)  # [B, C, Q]
        outs = [m.reshape(B, -1, h, w)
                for m, (h, w) in zip(memory.split(counts, dim=-1), sizes)]
        # FPN over the finer levels the encoder did not see, coarse -> fine; convs[j] were built
        # for the j-th of them (mmdet indexes them by the input level instead: see the docstring)
        first = self.num_input_levels - self.num_encoder_levels - 1
        for j, i in enumerate(range(first, -1, -1)):
            lateral = self.lateral_convs[j](feats[i])
            y = lateral + resize_bilinear(outs[-1], lateral.shape[-2:])
            outs.append(self.output_convs[j](y))
        return self.mask_feature(outs[-1]), outs[:self.num_outs]
