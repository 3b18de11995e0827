"""An optimizer constructor that gives the optimizer one parameter group per set of options.

mmengine's ``DefaultOptimWrapperConstructor`` turns a ``paramwise_cfg`` into one parameter group
per parameter (783 for Latent-VG at paper size). PyTorch's ``foreach`` AdamW then launches its
kernels once per group, so on a GPU the optimizer step ran as ~10 launches x 783 groups: on an
H200 its range spanned 294.7 ms of a 439.9 ms Latent-VG training step, 23.3 ms with the groups
merged (docs/benchmarks.md, "GPU figures").

:class:`MergedGroupsOptimWrapperConstructor` builds the same groups, then merges those whose
options (``lr``, ``weight_decay``, ... everything but ``params``) are equal, in the order of their
first parameter. Every parameter keeps exactly the options the default constructor gives it, and
AdamW updates each parameter on its own, so the updates are the same (bitwise; gradient clipping
adds the parameters' norms in group order, so a clipped step can differ in the last bits).
The groups it hands to the optimizer are plain ``dict`` (:func:`plain_param_groups`).
"""
from typing import Dict, List, Optional, Union

import torch
import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor

from mmrefer.registry import OPTIM_WRAPPER_CONSTRUCTORS


def merge_param_groups(groups: List[dict]) -> List[dict]:
    """Merge parameter groups with equal options (all keys but ``params``), keeping the order of
    first appearance and, inside a merged group, the order of the parameters."""
    merged: Dict[tuple, dict] = {}
    for group in groups:
        options = {k: v for k, v in group.items() if k != 'params'}
        key = tuple(sorted((k, repr(v)) for k, v in options.items()))
        if key not in merged:
            merged[key] = dict(options, params=[])
        params = group['params']
        merged[key]['params'].extend(params if isinstance(params, (list, tuple)) else [params])
    return list(merged.values())


def plain_param_groups(optim_wrapper) -> None:
    """Make every optimizer param group a plain ``dict`` (in place).

    mmengine builds the optimizer through its registry, which turns the param groups of a
    ``paramwise_cfg`` into ``ConfigDict`` (a ``dict`` subclass with a Python ``__getitem__``).
    AdamW reads its group options for every parameter on every step: at paper size that was
    about 2,240 ``ConfigDict`` lookups per Latent-VG training step, host time on the step's
    critical path. And dynamo (torch 2.13) cannot trace ``optimizer.step`` over them
    (``InternalTorchDynamoError: 'UserDefinedDictVariable' object has no attribute 'items'``).
    Same entries, same parameters; call it before the param schedulers are built.
    """
    wrappers = getattr(optim_wrapper, 'optim_wrappers', None)  # OptimWrapperDict
    for wrapper in (wrappers.values() if wrappers is not None else [optim_wrapper]):
        opt = wrapper.optimizer
        opt.param_groups = [g if type(g) is dict else dict(g) for g in opt.param_groups]


def check_fused_devices(model: nn.Module, optimizer_type=None) -> None:
    """Refuse ``optimizer.fused=True`` for parameters on a device this torch has no fused
    kernel for (the CPU before torch 2.4; ``meta``), naming the config field and the way out.
    PyTorch 2.13 finds this only at the first ``step()``, inside the training loop, and its
    message names neither."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # a torch without the list: it checks by itself
        return
    supported = set(_get_fused_kernels_supported_devices())
    bad = sorted({p.device.type for p in model.parameters()
                  if p.requires_grad and p.device.type not in supported})
    if bad:
        raise ValueError(
            f'optim_wrapper.optimizer.fused=True ({optimizer_type}): torch {torch.__version__} '
            f'has fused optimizer kernels for {sorted(supported)}, not for parameters on '
            f'{", ".join(bad)}. Set --cfg-options optim_wrapper.optimizer.fused=False (the '
            'fused CPU kernels need torch >= 2.4)')


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class MergedGroupsOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` (same ``optim_wrapper_cfg`` and ``paramwise_cfg``)
    whose parameter groups are merged by :func:`merge_param_groups`: one group per distinct set
    of options instead of one per parameter.

    Use: ``optim_wrapper = dict(..., constructor='MergedGroupsOptimWrapperConstructor')``. An
    optimizer state saved by the default constructor has another group layout: resuming such a
    checkpoint with this constructor (or the reverse) is refused by PyTorch's
    ``Optimizer.load_state_dict`` ("loaded state dict has a different number of parameter
    groups"); loading the weights alone (``load_from``) is not affected.
    """

    def __call__(self, model: nn.Module):
        if self.optimizer_cfg.get('fused'):
            check_fused_devices(model, self.optimizer_cfg.get('type'))
        optim_wrapper = super().__call__(model)
        plain_param_groups(optim_wrapper)
        return optim_wrapper

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module: Optional[Union[int, float]] = None) -> None:
        # the default walks the module tree through self.add_params: merge once, at the top
        if prefix:
            return super().add_params(params, module, prefix, is_dcn_module)
        per_param: List[dict] = []
        super().add_params(per_param, module, prefix, is_dcn_module)
        params.extend(merge_param_groups(per_param))
