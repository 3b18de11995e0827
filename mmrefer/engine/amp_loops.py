"""Validation / test loops under mixed precision of a chosen dtype (``tools/test.py --amp``).

mmengine's loops only know ``fp16=True`` (fp16 on CUDA, bf16 on CPU). :class:`AmpValLoop` and
:class:`AmpTestLoop` run every iteration under ``torch.autocast(device, dtype)`` with
``dtype='bfloat16'`` (the default, as in training) or ``'float16'``; the models' fp32 islands
(:mod:`mmrefer.models.mixed_precision`) stay fp32 inside.
"""
from typing import Sequence

import torch
from mmengine.runner.loops import TestLoop, ValLoop, _update_losses

from mmrefer.registry import LOOPS

__all__ = ['AmpValLoop', 'AmpTestLoop']

_DTYPES = dict(bfloat16=torch.bfloat16, float16=torch.float16)


def _autocast(runner, dtype: torch.dtype):
    device = next(runner.model.parameters()).device.type
    if device == 'cpu' and dtype != torch.bfloat16:
        raise ValueError('mixed precision on CPU is bfloat16 only; use dtype="bfloat16"')
    return torch.autocast(device_type=device, dtype=dtype)


def _dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ValueError(f'amp dtype must be one of {sorted(_DTYPES)}, got {name!r}')
    return _DTYPES[name]


@LOOPS.register_module()
class AmpValLoop(ValLoop):
    """``ValLoop`` under ``torch.autocast(dtype)``. Args: as ``ValLoop``, plus ``dtype``
    (``'bfloat16'`` or ``'float16'``)."""

    def __init__(self, runner, dataloader, evaluator, dtype: str = 'bfloat16'):
        super().__init__(runner, dataloader, evaluator, fp16=False)
        self.dtype = _dtype(dtype)

    @torch.no_grad()
    def run_iter(self, idx, data_batch: Sequence[dict]):
        self.runner.call_hook('before_val_iter', batch_idx=idx, data_batch=data_batch)
        with _autocast(self.runner, self.dtype):
            outputs = self.runner.model.val_step(data_batch)
        outputs, self.val_loss = _update_losses(outputs, self.val_loss)
        self.evaluator.process(data_samples=outputs, data_batch=data_batch)
        self.runner.call_hook('after_val_iter', batch_idx=idx, data_batch=data_batch,
                              outputs=outputs)


@LOOPS.register_module()
class AmpTestLoop(TestLoop):
    """``TestLoop`` under ``torch.autocast(dtype)``. Args: as ``TestLoop``, plus ``dtype``
    (``'bfloat16'`` or ``'float16'``)."""

    def __init__(self, runner, dataloader, evaluator, dtype: str = 'bfloat16'):
        super().__init__(runner, dataloader, evaluator, fp16=False)
        self.dtype = _dtype(dtype)

    @torch.no_grad()
    def run_iter(self, idx, data_batch: Sequence[dict]) -> None:
        self.runner.call_hook('before_test_iter', batch_idx=idx, data_batch=data_batch)
        with _autocast(self.runner, self.dtype):
            outputs = self.runner.model.test_step(data_batch)
        outputs, self.test_loss = _update_losses(outputs, self.test_loss)
        self.evaluator.process(data_samples=outputs, data_batch=data_batch)
        self.runner.call_hook('after_test_iter', batch_idx=idx, data_batch=data_batch,
                              outputs=outputs)
