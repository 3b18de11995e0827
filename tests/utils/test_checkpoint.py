"""Safe checkpoint loading: installed where mmrefer loads checkpoints, never at import. mmengine
checkpoints load with weights_only=True inside it; anything else is refused."""
import os
import os.path as osp
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch

from e2e_helpers import ROOT
from mmrefer.utils import (UnsafeCheckpointError, runner_checkpoint_loading,
                           safe_checkpoint_loading, safe_torch_load)


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


def test_mmengine_checkpoint_saved_and_loaded_through_mmengine(tmp_path):
    from mmengine.runner.checkpoint import _load_checkpoint
    path = str(tmp_path / 'ckpt.pth')
    with safe_checkpoint_loading():  # as tools/train.py runs the runner (it saves there)
        torch.save(_mmengine_like_checkpoint(), path)
        ckpt = _load_checkpoint(path, map_location='cpu')  # mmengine's own bare torch.load
    assert torch.equal(ckpt['state_dict']['w'], torch.ones(2, 2))
    np.testing.assert_array_equal(ckpt['meta']['hist'], np.arange(4, dtype=np.float32))
    buf = ckpt['message_hub']['log_scalars']['train/loss']
    assert buf.mean() == pytest.approx(0.375)
    # outside the block torch's own allow-list is back (numpy arrays are refused again)
    with pytest.raises(Exception, match='Weights only load failed'):
        torch.load(path, weights_only=True)
    assert safe_torch_load(path)['meta']['epoch'] == 1


def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path):
    from mmengine.runner.checkpoint import _load_checkpoint
    marker = str(tmp_path / 'marker.txt')
    path = str(tmp_path / 'evil.pth')
    torch.save({'state_dict': {}, 'payload': _Evil(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match='evil.pth'):
        safe_torch_load(path)
    with pytest.raises(UnsafeCheckpointError, match='evil.pth'):
        with runner_checkpoint_loading(path):  # the runner's load (tools/train.py, test.py)
            _load_checkpoint(path, map_location='cpu')
    assert not osp.exists(marker)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        safe_torch_load(os.fspath(tmp_path / 'nope.pth'))


def test_a_file_that_is_no_checkpoint_is_named_as_such(tmp_path):
    """A text file is "not a PyTorch checkpoint" (not "unsafe": there is nothing to trust), a
    cut-off one is "truncated or corrupt"; both name the file, through safe_torch_load and
    through the runner's loading."""
    from mmengine.runner.checkpoint import _load_checkpoint
    text = tmp_path / 'notes.pth'
    text.write_text('not a checkpoint')
    whole = tmp_path / 'whole.pth'
    torch.save({'state_dict': {'w': torch.zeros(1000)}}, str(whole))
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(whole.read_bytes()[:300])
    for path, words in ((text, 'is not a PyTorch checkpoint'), (cut, 'is truncated or corrupt')):
        with pytest.raises(ValueError, match=rf"{path.name}' {words} \({path.stat().st_size} "
                                             'bytes'):
            safe_torch_load(str(path))
        with pytest.raises(ValueError, match=rf'{path.name}.*{words}'):
            with runner_checkpoint_loading(str(path)):
                _load_checkpoint(str(path), map_location='cpu')


def test_importing_mmrefer_changes_nothing_in_mmengine_or_torch():
    """After `import mmrefer` (and every registry module), mmengine's load_state_dict and its
    local-file checkpoint loader are mmengine's own, torch's allow-list holds none of mmrefer's
    globals and HistoryBuffer pickles as mmengine defines it."""
    code = """
import copyreg, torch
import mmengine.runner.checkpoint as ck
from mmengine.logging import HistoryBuffer
before = (ck.load_state_dict, dict(ck.CheckpointLoader._schemes), ck.load_from_local,
          list(torch.serialization.get_safe_globals()))
import mmrefer
from mmrefer.utils import register_all_modules
register_all_modules()
import mmrefer.apis, mmrefer.models, mmrefer.evaluation, mmrefer.visualization
after = (ck.load_state_dict, dict(ck.CheckpointLoader._schemes), ck.load_from_local,
         list(torch.serialization.get_safe_globals()))
assert before[0] is after[0] and ck.load_state_dict.__module__ == 'mmengine.runner.checkpoint'
assert before[1] == after[1] and after[1][''] is ck.load_from_local
assert ck.load_from_local.__module__ == 'mmengine.runner.checkpoint'
from mmrefer.utils import checkpoint_safe_globals
added = [g for g in after[3] if g not in before[3]]  # torch's own DTensor classes may appear
assert not any(g in added for g in checkpoint_safe_globals()), added
assert HistoryBuffer not in copyreg.dispatch_table
print('ok')
"""
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith('ok'), proc.stderr[-3000:]
