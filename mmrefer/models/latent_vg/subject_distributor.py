"""Subject distributor of Latent-VG (ICCV 2025, Sec. 3.3).

After every encoder layer ``l`` the subject slot of each latent expression is overwritten with
the subject token carried in the visual CLS slot (position 0 of the joint sequence)::

    s^i_l <- s^V_l = X_l[:, 0]          for i = 1..N

The joint sequence is ``X = [vis (1+P) | text (L) | Z^1 (k_1+2) | ... | Z^N (k_N+2)]`` with
``Z^i = [z_cls^i ; s^i ; A^i]``, so the subject slot of expression ``i`` sits at
``offset_i + 1``. It is a copy, so the gradient flows back into ``s^V``.
"""
from typing import Sequence

import torch
import torch.nn as nn

from mmrefer.registry import MODELS


def group_offsets(group_sizes: Sequence[int]):
    """Start index of every group in the joint sequence."""
    offsets, start = [], 0
    for n in group_sizes:
        offsets.append(start)
        start += int(n)
    return offsets


@MODELS.register_module()
class SubjectDistributor(nn.Module):
    """Copy the visual-slot subject token into every latent expression's subject slot.

    Args:
        subject_slot (int): index of the subject inside each latent group (1).
        num_fixed_groups (int): groups before the latent ones (vision, text) (2).
    """

    def __init__(self, subject_slot: int = 1, num_fixed_groups: int = 2):
        super().__init__()
        self.subject_slot = subject_slot
        self.num_fixed_groups = num_fixed_groups

    def forward(self, x: torch.Tensor, group_sizes: Sequence[int]) -> torch.Tensor:
        """``x``: ``[B, T, C]`` joint sequence; returns the same shape."""
        if x.size(1) != sum(group_sizes):
            raise ValueError(f'SubjectDistributor: sequence length {x.size(1)} != '
                             f'sum(group_sizes) {sum(group_sizes)} ({list(group_sizes)})')
        offsets = group_offsets(group_sizes)
        subject = x[:, :1]
        pieces, cursor = [], 0
        for off, n in zip(offsets[self.num_fixed_groups:], group_sizes[self.num_fixed_groups:]):
            if n <= self.subject_slot:
                raise ValueError(f'SubjectDistributor: latent group of size {n} has no subject '
                                 f'slot {self.subject_slot}')
            pos = off + self.subject_slot
            pieces += [x[:, cursor:pos], subject]
            cursor = pos + 1
        pieces.append(x[:, cursor:])
        return torch.cat(pieces, dim=1)
