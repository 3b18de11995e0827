"""Training k iterations, saving, resuming and training to n equals training to n straight
(same seed, deterministic mode): same logged losses, same final weights."""
import glob
import json
import os.path as osp
import sys

import pytest
import torch

from e2e_helpers import ROOT, run, run_together, short_config


def _losses(work_dir):
    files = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    out = {}
    for f in files:
        for line in open(f):
            rec = json.loads(line)
            if 'loss' in rec and 'step' in rec:
                out[rec['step']] = rec['loss']
    return out


def _train_cmd(tmp_path, work_dir, data_root, iters, resume=None):
    cfg = short_config('latentvg', data_root, str(tmp_path / f'short_{iters}.py'), iters=iters,
                       **{'randomness.seed': 0, 'randomness.deterministic': True})
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), cfg, '--work-dir', work_dir]
    if resume:
        cmd += ['--resume', resume]
    return cmd


@pytest.mark.slow
def test_resume_reproduces_straight_run(synthref_root, tmp_path):
    n, k = 4, 2
    straight = str(tmp_path / 'straight')
    split = str(tmp_path / 'split')
    # the straight run and the first part of the split one at the same time
    run_together([_train_cmd(tmp_path, straight, synthref_root, n),
                  _train_cmd(tmp_path, split, synthref_root, k)])
    run(_train_cmd(tmp_path, split, synthref_root, n, resume=osp.join(split, f'iter_{k}.pth')))

    from mmrefer.utils import safe_torch_load  # weights_only=True with mmengine's globals
    a = safe_torch_load(osp.join(straight, f'iter_{n}.pth'), map_location='cpu')
    b = safe_torch_load(osp.join(split, f'iter_{n}.pth'), map_location='cpu')
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for key, value in a['state_dict'].items():
        torch.testing.assert_close(value, b['state_dict'][key], rtol=0, atol=1e-6, msg=key)

    la, lb = _losses(straight), _losses(split)
    assert set(range(1, n + 1)) <= set(la), la
    for step in range(1, n + 1):
        assert la[step] == pytest.approx(lb[step], abs=1e-6), (step, la, lb)
