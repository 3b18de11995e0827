"""Subject distributor of Latent-VG (ICCV 2025, Sec. 3.2, inferred).

After every encoder layer ``l`` the subject slot of each latent expression is overwritten with
the subject token carried in the visual CLS slot (position 0 of the joint sequence)::

    s^i_l <- s^V_l = X_l[:, 0]          for i = 1..N

with ``X = [vis (1+P) | text (L) | Z^1 | ... | Z^N]`` and ``Z^i = [z_cls^i ; s^i ; A^i]``; the
positions come from the :class:`~.token_layout.TokenLayout`. It is a copy, so the gradient flows
back into ``s^V``. With autograd off (inference) the slots of ``x`` itself are overwritten: the
encoder hands over each layer's fresh output, and a copy of the whole ``[B, T, C]`` sequence per
layer is memory traffic for nothing.
"""
import torch
import torch.nn as nn

from mmrefer.registry import MODELS
from .token_layout import as_layout, positions_slice


@MODELS.register_module()
class SubjectDistributor(nn.Module):
    """Copy the visual-slot subject token into every latent expression's subject slot."""

    def forward(self, x: torch.Tensor, layout) -> torch.Tensor:
        """``x [B, T, C]`` joint sequence, ``layout`` its :class:`TokenLayout` (or group sizes);
        returns the same shape."""
        layout = as_layout(layout, x, 'SubjectDistributor')
        if not layout.num_latents:
            return x
        slots = [layout.subject(i) for i in range(layout.num_latents)]
        out = x.clone() if torch.is_grad_enabled() else x
        # slices, not a list index: no host -> device copy of the positions in every layer
        span = positions_slice(slots)
        for s in [span] if span is not None else [slice(p, p + 1) for p in slots]:
            out[:, s] = x[:, :1]  # broadcast over the slots of s
        return out
