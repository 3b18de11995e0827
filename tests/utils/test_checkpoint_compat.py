"""The weights_only allow-list shim: mmengine checkpoints load, anything else is refused."""
import os
import os.path as osp
from collections import OrderedDict

import numpy as np
import pytest
import torch

import mmrefer  # noqa: F401  (installs the shim)
from mmrefer.utils import safe_torch_load
from mmrefer.utils.checkpoint_compat import UnsafeCheckpointError


def _marker_writer(path):
    """Would run at unpickling time if the loader were unsafe."""
    with open(path, 'w') as f:
        f.write('pwned')
    return {}


class _Evil:

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (_marker_writer, (self.marker, ))


def _mmengine_like_checkpoint():
    from mmengine.logging import HistoryBuffer
    buf = HistoryBuffer()
    buf.update(0.5)
    buf.update(0.25)
    return {
        'meta': {
            'epoch': 1,
            'iter': 10,
            'seed': np.int64(3),
            'hist': np.arange(4, dtype=np.float32),
        },
        'state_dict': OrderedDict(w=torch.ones(2, 2)),
        'message_hub': {
            'log_scalars': {'train/loss': buf},
            'runtime_info': {'iter': 10, 'dataset_meta': {'dataset_name': 'x'}},
        },
    }


def test_mmengine_checkpoint_loads_through_mmengine(tmp_path):
    from mmengine.runner.checkpoint import _load_checkpoint
    path = str(tmp_path / 'ckpt.pth')
    torch.save(_mmengine_like_checkpoint(), path)
    ckpt = _load_checkpoint(path, map_location='cpu')
    assert torch.equal(ckpt['state_dict']['w'], torch.ones(2, 2))
    np.testing.assert_array_equal(ckpt['meta']['hist'], np.arange(4, dtype=np.float32))
    buf = ckpt['message_hub']['log_scalars']['train/loss']
    assert buf.mean() == pytest.approx(0.375)


def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path):
    from mmengine.runner.checkpoint import _load_checkpoint
    marker = str(tmp_path / 'marker.txt')
    path = str(tmp_path / 'evil.pth')
    torch.save({'state_dict': {}, 'payload': _Evil(marker)}, path)
    with pytest.raises(UnsafeCheckpointError) as err:
        _load_checkpoint(path, map_location='cpu')
    assert 'evil.pth' in str(err.value)
    assert not osp.exists(marker)
    with pytest.raises(UnsafeCheckpointError):
        safe_torch_load(path)
    assert not osp.exists(marker)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        safe_torch_load(os.fspath(tmp_path / 'nope.pth'))
