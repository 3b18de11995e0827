"""Safe checkpoint loading for torch>=2.6 (``weights_only=True``) with mmengine 0.10.7, installed
explicitly where mmrefer loads checkpoints; importing mmrefer changes nothing in torch or mmengine.

mmengine calls ``torch.load(filename, map_location=...)`` bare, which torch 2.13 runs with
``weights_only=True``; mmengine checkpoints hold a few non-tensor globals in ``meta`` and
``message_hub`` (numpy arrays, ``HistoryBuffer``, ...). :func:`safe_checkpoint_loading` is a
context manager that, for its duration only,

1. allow-lists exactly those globals (``torch.serialization.safe_globals``), so mmengine's own
   loader (``load_from``, ``resume``, ``mim test -C``) reads mmengine checkpoints with
   ``weights_only=True``, and
2. makes ``HistoryBuffer`` pickle as plain data (its default pickle stores bound statistics
   methods through ``builtins.getattr``, which is not allow-listed), so checkpoints saved inside
   the block load anywhere with ``weights_only=True``.

``tools/train.py`` and ``tools/test.py`` run the runner inside it, ``RefInferencer`` and
``BEiT3.load_checkpoint`` load through :func:`safe_torch_load`. A checkpoint needing any other
global is refused (:class:`UnsafeCheckpointError` names the file); it is never loaded with full
pickle.
"""
import os.path as osp
import pickle
from contextlib import contextmanager
from typing import Optional

import numpy as np
import torch


def _numpy_globals():
    out = [np.ndarray, np.dtype]
    try:
        from numpy.core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy without the numpy.core alias
        from numpy._core.multiarray import _reconstruct, scalar
    out += [_reconstruct, scalar]
    try:  # numpy>=2 pickles numpy._core.multiarray
        from numpy._core.multiarray import _reconstruct as r2
        from numpy._core.multiarray import scalar as s2
        out += [r2, s2]
    except ImportError:
        pass
    # dtype classes (numpy>=1.25): Float64DType, Int64DType, ...
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]
    return out


def _mmengine_globals():
    from mmengine.logging.history_buffer import HistoryBuffer
    out = [HistoryBuffer]
    try:
        from mmengine.config.config import ConfigDict
        out.append(ConfigDict)
    except ImportError:
        pass
    return out


def checkpoint_safe_globals():
    """The explicit allow-list: numpy array reconstruction, numpy dtypes and scalars, and the
    mmengine classes a runner writes into a checkpoint's ``message_hub``."""
    import collections
    return _numpy_globals() + _mmengine_globals() + [collections.OrderedDict, collections.defaultdict]


CHECKPOINT_SAFE_GLOBALS = checkpoint_safe_globals


class UnsafeCheckpointError(RuntimeError):
    """Raised when a checkpoint needs a global outside the allow-list."""


def safe_torch_load(filename, map_location=None, mmap: bool = False):
    """``torch.load`` with ``weights_only=True`` (inside :func:`safe_checkpoint_loading`) and a
    clear error naming the file.

    Args:
        filename (str): path of the checkpoint.
        map_location: as for :func:`torch.load`.
        mmap (bool): as for :func:`torch.load` (zip files only): the tensors' data is read when
            it is used, e.g. not at all when only keys and shapes are needed.
    """
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file not found: {filename}')
    with runner_checkpoint_loading(filename):  # its errors name the file (load_error)
        return torch.load(filename, map_location=map_location, weights_only=True, mmap=mmap)


def load_error(name: str, error: Exception, path: Optional[str] = None) -> Optional[Exception]:
    """What to raise for ``torch.load``'s ``error`` on the checkpoint ``name`` (the file
    ``path`` when it is known): :func:`refused` for a global outside the allow-list,
    :func:`not_a_checkpoint` for a file torch cannot read at all; ``None`` for any other error
    (re-raise it as it is)."""
    if isinstance(error, pickle.UnpicklingError) and 'Unsupported global' in str(error):
        return refused(name, error)
    unreadable = (isinstance(error, (pickle.UnpicklingError, EOFError))
                  or 'PytorchStreamReader' in str(error))
    if not unreadable:
        return None
    if path is not None:
        return not_a_checkpoint(path, error)
    if isinstance(error, pickle.UnpicklingError):
        return ValueError(f'{name} is not a PyTorch checkpoint: {error}')
    return None


def not_a_checkpoint(filename, error: Exception) -> ValueError:
    """The error for a file torch cannot read at all: truncated, or not a checkpoint."""
    with open(filename, 'rb') as f:
        head = f.read(16)
    zipped = head.startswith(b'PK')
    what = 'truncated or corrupt' if zipped else 'not a PyTorch checkpoint'
    text = str(error)
    if 'WeightsUnpickler error:' in text:  # skip torch's advice to load with full pickle
        text = text.split('WeightsUnpickler error:', 1)[1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = lines[0] if lines else type(error).__name__
    return ValueError(f'checkpoint {filename!r} is {what} ({osp.getsize(filename)} bytes, '
                      f'first bytes {head!r}): torch said: {first[:200]}')


def _reduce_history_buffer(buf):
    """Pickle a HistoryBuffer as ``HistoryBuffer(log_history, count_history, max_length)``:
    arrays and an int only, no bound methods."""
    return (type(buf), (buf._log_history, buf._count_history, buf.max_length))


@contextmanager
def safe_checkpoint_loading():
    """Within the block, ``torch.load`` (mmengine's bare calls included) accepts the allow-listed
    globals of mmengine checkpoints and ``HistoryBuffer`` pickles as plain data; both are undone
    on exit."""
    import copyreg

    from mmengine.logging.history_buffer import HistoryBuffer
    previous = copyreg.dispatch_table.get(HistoryBuffer)
    copyreg.pickle(HistoryBuffer, _reduce_history_buffer)
    try:
        with torch.serialization.safe_globals(checkpoint_safe_globals()):
            yield
    finally:
        if previous is None:
            copyreg.dispatch_table.pop(HistoryBuffer, None)
        else:
            copyreg.dispatch_table[HistoryBuffer] = previous


def refused(filename: str, err: Exception) -> 'UnsafeCheckpointError':
    """The error for a checkpoint torch refused under ``weights_only``, naming the file."""
    first = str(err).splitlines()[0] if str(err) else repr(err)
    return UnsafeCheckpointError(
        f'refused to load checkpoint {filename!r}: it needs a Python global outside mmrefer\'s '
        f'allow-list, so it is not loaded with full pickle. torch said: {first}. If you trust '
        'the file, convert it with tools/model_converters/ to a plain state dict.')


@contextmanager
def runner_checkpoint_loading(load_from=None):
    """:func:`safe_checkpoint_loading` around a runner's ``train()`` / ``test()`` (what
    ``tools/train.py`` and ``tools/test.py`` do) or one ``torch.load`` (:func:`safe_torch_load`):
    a checkpoint torch refuses or cannot read becomes the error :func:`load_error` gives, naming
    ``load_from`` (or the work dir's latest checkpoint)."""
    name = load_from or "the work dir's latest checkpoint"
    path = load_from if isinstance(load_from, str) and osp.isfile(load_from) else None
    with safe_checkpoint_loading():
        try:
            yield
        except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
            err = load_error(name, e, path)
            if err is None:
                raise
            raise err from e
