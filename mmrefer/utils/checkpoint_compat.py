"""Safe checkpoint loading for torch>=2.6 (``weights_only=True``) with mmengine 0.10.7.

mmengine calls ``torch.load(filename, map_location=...)`` bare, which torch 2.13 runs with
``weights_only=True``; mmengine checkpoints hold a few non-tensor globals in ``meta`` and
``message_hub`` (numpy arrays, ``HistoryBuffer``, ...). We

1. allow-list exactly those globals with :func:`torch.serialization.add_safe_globals`,
2. make ``HistoryBuffer`` pickle as plain data (its default pickle stores bound statistics
   methods through ``builtins.getattr``, which we do not allow-list), and
3. replace mmengine's local-file scheme with :func:`safe_torch_load`, which keeps
   ``weights_only=True`` and turns a refused global into an error naming the file and the global,
4. replace ``mmengine.runner.checkpoint.load_state_dict`` (what ``load_from`` and
   ``load_checkpoint`` end in) with :func:`~mmrefer.utils.checkpoint_report.
   load_state_dict_with_report`, which reports missing/unexpected keys grouped by module and
   shape mismatches with both shapes.

A checkpoint needing anything else is refused; it is never loaded with full pickle.
"""
import os.path as osp
import pickle

import numpy as np
import torch

_INSTALLED = False


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


def safe_torch_load(filename, map_location=None):
    """``torch.load`` with ``weights_only=True`` and a clear error naming the file.

    Args:
        filename (str): path of the checkpoint.
        map_location: as for :func:`torch.load`.
    """
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file not found: {filename}')
    install_checkpoint_shim()
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f'refused to load checkpoint {filename!r}: it needs a Python global outside '
            f"mmrefer's allow-list, so it is not loaded with full pickle. torch said: "
            f'{str(e).splitlines()[0] if str(e) else e!r}. If you trust the file, convert it '
            'with tools/model_converters/ to a plain state dict.') from e


def _reduce_history_buffer(buf):
    """Pickle a HistoryBuffer as ``HistoryBuffer(log_history, count_history, max_length)``:
    arrays and an int only, no bound methods."""
    return (type(buf), (buf._log_history, buf._count_history, buf.max_length))


def install_checkpoint_shim():
    """Register the allow-list with torch and route mmengine's local loader through
    :func:`safe_torch_load`. Idempotent."""
    global _INSTALLED
    if _INSTALLED:
        return
    _INSTALLED = True
    torch.serialization.add_safe_globals(checkpoint_safe_globals())
    import copyreg

    from mmengine.logging.history_buffer import HistoryBuffer
    copyreg.pickle(HistoryBuffer, _reduce_history_buffer)
    from mmengine.runner.checkpoint import CheckpointLoader

    @CheckpointLoader.register_scheme(prefixes='', force=True)
    def load_from_local(filename, map_location):  # noqa: ANN001
        filename = osp.expanduser(filename)
        return safe_torch_load(filename, map_location=map_location)

    import mmengine.runner.checkpoint as ckpt_mod

    from .checkpoint_report import load_state_dict_with_report
    if ckpt_mod.load_state_dict is not load_state_dict_with_report:
        load_state_dict_with_report.original = ckpt_mod.load_state_dict
        ckpt_mod.load_state_dict = load_state_dict_with_report
