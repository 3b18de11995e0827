"""Pixel decoder of InstAlign (section 3.2): mmdet's ``MSDeformAttnPixelDecoder`` with the level
sizes kept on the host.

mmdet's forward reads each level's ``(h_l, w_l)`` as a device tensor
(``torch._shape_as_tensor(feat)``) and then splits and reshapes the encoder memory by those
tensors: three device -> host reads per level on an accelerator, nine per forward with three
levels, each one stalling the CPU until the GPU has caught up. Here the sizes are the Python ints
of ``feat.shape``; the two tensors the deformable attention takes (``spatial_shapes``,
``level_start_index``) are built on the device from them (a host -> device copy, no read). The
modules, parameters, state-dict keys and arithmetic are mmdet's (the output is equal bitwise).

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
from typing import List, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.layers import MSDeformAttnPixelDecoder
from torch import Tensor

from mmrefer.registry import MODELS

__all__ = ['HostShapeMSDeformAttnPixelDecoder']


@MODELS.register_module()
class HostShapeMSDeformAttnPixelDecoder(MSDeformAttnPixelDecoder):
    """``MSDeformAttnPixelDecoder`` (same arguments and weights) without host reads in
    ``forward`` (see the module docstring)."""

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
            valid_ratios=reference_points.new_ones((B, self.num_encoder_levels, 2)))
        memory = memory.permute(0, 2, 1)  # [B, C, Q]
        outs = [m.reshape(B, -1, h, w)
                for m, (h, w) in zip(memory.split(counts, dim=-1), sizes)]
        # FPN over the finer levels the encoder did not see, coarse -> fine; convs[j] were built
        # for the j-th of them (mmdet indexes them by the input level instead: see the docstring)
        first = self.num_input_levels - self.num_encoder_levels - 1
        for j, i in enumerate(range(first, -1, -1)):
            lateral = self.lateral_convs[j](feats[i])
            y = lateral + F.interpolate(outs[-1], size=lateral.shape[-2:], mode='bilinear',
                                        align_corners=False)
            outs.append(self.output_convs[j](y))
        return self.mask_feature(outs[-1]), outs[:self.num_outs]
