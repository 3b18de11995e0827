from contextlib import contextmanager

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper

from mmrefer.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class AutocastOptimWrapper(OptimWrapper):
    """Mixed precision without loss scaling, for devices mmengine's ``AmpOptimWrapper`` refuses
    (it asserts a GPU/NPU/MLU). ``tools/train.py --amp`` picks it on machines without CUDA.

    The forward pass of each ``train_step`` runs under ``torch.autocast(device_type, dtype)``;
    bf16 keeps fp32's exponent range, so gradients need no scaling.

    Args:
        device_type (str): autocast device, ``'cpu'`` by default.
        dtype (str): ``'bfloat16'`` (default) or ``'float16'``.
    """

    def __init__(self, *args, device_type: str = 'cpu', dtype: str = 'bfloat16', **kwargs):
        super().__init__(*args, **kwargs)
        if dtype not in ('bfloat16', 'float16'):
            raise ValueError(f'AutocastOptimWrapper: dtype must be bfloat16 or float16, got {dtype!r}')
        self.device_type = device_type
        self.cast_dtype = getattr(torch, dtype)

    @contextmanager
    def optim_context(self, model: nn.Module):
        with super().optim_context(model), torch.autocast(
                device_type=self.device_type, dtype=self.cast_dtype):
            yield
