"""``tools/train.py --amp`` on CPU, as a user runs it, for both tiny quick-start models: the run
trains in bf16 autocast (mmrefer's AutocastOptimWrapper; the validation loop becomes AmpValLoop),
logs finite losses, validates with the config's metric and saves a checkpoint; ``--amp-dtype
fp16`` without CUDA, and ``--amp-dtype`` without ``--amp``, are refused by train.py and test.py
naming the option."""
import glob
import json
import math
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config

from e2e_helpers import ROOT, run, run_together, short_config

ITERS = 3


def _scalars(work_dir):
    files = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    assert files, f'no scalars.json under {work_dir}'
    return [json.loads(line) for f in files for line in open(f)]


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU (bf16 autocast) path')
@pytest.mark.parametrize('method', ['latentvg', 'instalign'])
def test_train_amp_on_cpu(method, synthref_root, tmp_path):
    cfg = short_config(method, synthref_root, str(tmp_path / 'short.py'), iters=ITERS,
                       num_test_samples=4)
    work = str(tmp_path / 'work')
    run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), cfg, '--work-dir', work, '--amp'],
        env={'OMP_NUM_THREADS': '1'})
    dumped = Config.fromfile(osp.join(work, 'short.py'))
    assert dumped.optim_wrapper.type == 'AutocastOptimWrapper'
    assert dumped.optim_wrapper.dtype == 'bfloat16'
    assert dumped.val_cfg == dict(type='AmpValLoop', dtype='bfloat16')
    records = _scalars(work)
    losses = [r['loss'] for r in records if 'loss' in r]
    assert len(losses) == ITERS and all(math.isfinite(v) for v in losses), losses
    val = [r for r in records if any(k.startswith('gres/') for k in r)]
    assert val and all(math.isfinite(v) for v in val[-1].values() if isinstance(v, float))
    assert osp.isfile(osp.join(work, f'iter_{ITERS}.pth'))


@pytest.mark.skipif(torch.cuda.is_available(), reason='fp16 is refused only without CUDA')
@pytest.mark.parametrize('tool', ['train', 'test'])
def test_amp_dtype_refused_before_anything_is_built(tool, synthref_root, tmp_path):
    """fp16 without CUDA, and --amp-dtype without --amp, end both tools at once with one line
    (no traceback, no model built, no checkpoint read: the checkpoint here does not exist)."""
    cfg = short_config('latentvg', synthref_root, str(tmp_path / 'short.py'), iters=1)
    ckpt = [str(tmp_path / 'missing.pth')] if tool == 'test' else []
    cases = ((['--amp', '--amp-dtype', 'fp16'], '--amp-dtype fp16 needs CUDA'),
             (['--amp-dtype', 'bf16'], '--amp-dtype bf16 needs --amp'))
    results = run_together([[sys.executable, osp.join(ROOT, 'tools', f'{tool}.py'), cfg, *ckpt,
                             '--work-dir', str(tmp_path / 'work'), *flags]
                            for flags, _ in cases], timeout=300, check=False)
    for (_, message), (returncode, stdout, stderr) in zip(cases, results):
        out = stderr + stdout
        assert returncode != 0 and message in out, out[-2000:]
        assert 'Traceback' not in out, out[-2000:]
