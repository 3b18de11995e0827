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
``binary_cross_entropy_with_logits`` are fp32 under autocast by torch's own policy. Two helpers
save copies without changing what is computed in fp32: :func:`autocast_input` casts a tensor
that several matrix products share once (autocast would cast it for each), and
:func:`low_precision_layer_norm` normalises a tensor that is already bf16 / fp16 without
autocast's round trip through fp32 (the kernel computes its statistics in fp32 anyway).
"""
import contextlib
import functools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ['fp32_island', 'fp32_submodules', 'autocast_enabled', 'autocast_input',
           'low_precision_layer_norm']

_LOW = (torch.bfloat16, torch.float16)


def autocast_enabled() -> bool:
    """Whether any autocast (CPU or CUDA) is on in this thread."""
    return torch.is_autocast_enabled('cpu') or torch.is_autocast_enabled('cuda')


def autocast_input(x: Tensor) -> Tensor:
    """``x`` cast to the autocast dtype of its device when autocast is on there and ``x`` is
    fp32 (else ``x``): the cast each autocast matrix product would make, made once for a tensor
    that several of them take (BEiT-3's q / k / v projections)."""
    dev = x.device.type
    if x.dtype == torch.float32 and torch.is_autocast_enabled(dev):
        return x.to(torch.get_autocast_dtype(dev))
    return x


def low_precision_layer_norm(norm: nn.LayerNorm, x: Tensor) -> Tensor:
    """``norm(x)`` that keeps a bf16 / fp16 ``x`` in its dtype under autocast.

    Autocast runs layer norm in fp32: it copies ``x`` to fp32 and returns fp32, which the next
    bf16 matrix product copies back. Here the statistics are still computed in fp32 (torch's
    kernels accumulate low-precision inputs in fp32) and the output is rounded once; the
    weight and bias, and so their gradients, are rounded to ``x``'s dtype (the parameters
    stay fp32). For BEiT-3's FFN sub-LN, whose input (the
    4C-wide GELU output) is already bf16 and whose output goes to ``fc2``. Outside autocast, or
    for an fp32 ``x``, it is ``norm(x)``."""
    dev = x.device.type
    if x.dtype not in _LOW or not torch.is_autocast_enabled(dev):
        return norm(x)
    w = None if norm.weight is None else norm.weight.to(x.dtype)
    b = None if norm.bias is None else norm.bias.to(x.dtype)
    with torch.autocast(dev, enabled=False):
        return F.layer_norm(x, norm.normalized_shape, w, b, norm.eps)


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
