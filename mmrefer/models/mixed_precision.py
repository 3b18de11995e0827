"""fp32 islands inside mixed-precision (bf16 / fp16 autocast) training and inference.

Under ``torch.autocast`` matrix products run in the low-precision dtype. A few computations of
both methods are numerically sensitive and run in fp32 instead: :func:`fp32_island` wraps a
function so that, when autocast is on, its floating tensor arguments are cast to fp32 and
autocast is off inside (outside autocast it is a plain call). Where it is applied and why:

==============================================  =================================================
computation                                     why fp32
==============================================  =================================================
visual concept injector (similarities, patch    cosine similarities of 768-d vectors and two
softmax, column-normalised assignment)          softmaxes; bf16's 8-bit mantissa flattens them
Gumbel-softmax subject selection                logits divided by a temperature of 0.07
contrastive losses (cosine logits / tau)        logits scaled by 1 / 0.07 before a softmax
mask BCE + Dice (both heads), merged mask       sums over 480 x 480 pixels
matching costs (Hungarian assignment)           ties decided by small cost differences
adaptive aggregation ``sum_i p_i PReLU(s_i)``   a sum over N = 100 queries before the sigmoid
no-target logits                                the decision threshold sits on one logit
==============================================  =================================================

mmcv's multi-scale deformable attention (InstAlign's pixel decoder) samples in fp32: its CUDA
kernel takes no bf16 (the sampling alone in ``HostShapeMultiScaleDeformableAttention``; a plain
mmcv module whole, through :func:`fp32_submodules`).

BEiT-3 already runs its GELU in fp32 (as torchscale does); softmax, layer norm and
``binary_cross_entropy_with_logits`` are fp32 under autocast by torch's own policy.
"""
import contextlib
import functools
from typing import Callable

import torch

__all__ = ['fp32_island', 'fp32_submodules', 'autocast_enabled']


def autocast_enabled() -> bool:
    """Whether any autocast (CPU or CUDA) is on in this thread."""
    return torch.is_autocast_enabled('cpu') or torch.is_autocast_enabled('cuda')


def _to_fp32(x):
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float32:
        return x.float()
    if isinstance(x, (list, tuple)):
        return type(x)(_to_fp32(v) for v in x)
    return x


def fp32_island(fn: Callable) -> Callable:
    """Run ``fn`` in fp32 when autocast is on: floating tensor arguments (also inside lists and
    tuples) are cast to fp32 and autocast is off for its duration."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        cpu, cuda = torch.is_autocast_enabled('cpu'), torch.is_autocast_enabled('cuda')
        if not (cpu or cuda):
            return fn(*args, **kwargs)
        # plain ``with`` statements, which torch.compile traces (autocast entered through a
        # contextlib.ExitStack broke the graph at every island)
        with (torch.autocast('cpu', enabled=False) if cpu else contextlib.nullcontext()), \
                (torch.autocast('cuda', enabled=False) if cuda else contextlib.nullcontext()):
            return fn(*_to_fp32(args), **{k: _to_fp32(v) for k, v in kwargs.items()})

    return wrapper


def fp32_submodules(root: torch.nn.Module, module_type: type, exclude: tuple = ()) -> int:
    """Make every ``module_type`` submodule of ``root`` that is not an ``exclude`` an fp32
    island (its ``forward`` wrapped with :func:`fp32_island`); returns how many. For
    third-party modules whose kernels take no bf16, e.g. mmcv's ``MultiScaleDeformableAttention``
    (its CUDA op accepts fp32 / fp64 / fp16 only)."""
    count = 0
    for module in root.modules():
        if isinstance(module, module_type) and not isinstance(module, exclude):
            module.forward = fp32_island(module.forward)
            count += 1
    return count
