"""Evaluation gathered from 2 gloo processes equals 1 process, with a dataset size that is not
divisible by the world size (no duplicated or dropped samples)."""
import glob
import json
import os.path as osp
import socket
import sys

import pytest
import torch

from e2e_helpers import QUICKSTART, ROOT, run, short_config


def _metrics(work_dir):
    files = sorted(glob.glob(osp.join(work_dir, '*', '*.json')))
    assert files, f'no metrics json under {work_dir}'
    return json.load(open(files[-1]))


def _free_port() -> int:
    """A TCP port nothing listens on now (a fixed one can be taken by another run)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_eval_equals_one(synthref_root, tmp_path):
    from mmengine.config import Config

    from mmrefer.registry import MODELS
    from mmrefer.utils import register_all_modules
    register_all_modules()
    cfg_path = QUICKSTART['latentvg']
    cfg = Config.fromfile(cfg_path)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    ckpt = str(tmp_path / 'random.pth')
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)

    n_samples = 7  # odd: the distributed sampler pads, collect_results must drop the padding
    results = {}
    for nproc in (1, 2):
        work = str(tmp_path / f'np{nproc}')
        dump = str(tmp_path / f'per_sample_np{nproc}.json')
        short = short_config('latentvg', synthref_root, str(tmp_path / f'short_np{nproc}.py'),
                             num_test_samples=n_samples,
                             **{'env_cfg.dist_cfg.backend': 'gloo',
                                'test_evaluator.dump_per_sample': dump})
        script = osp.join(ROOT, 'tools', 'test.py')
        if nproc == 1:
            cmd = [sys.executable, script, short, ckpt]
        else:
            cmd = [
                sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
                f'--master_port={_free_port()}', script, short, ckpt, '--launcher', 'pytorch'
            ]
        run(cmd + ['--work-dir', work])
        results[nproc] = (_metrics(work), json.load(open(dump)))

    (m1, d1), (m2, d2) = results[1], results[2]
    keys = [k for k in m1 if any(s in k for s in ('IoU', 'acc', 'Pr@'))]
    assert keys
    for k in keys:
        assert m1[k] == pytest.approx(m2[k], abs=1e-6), k
    s1 = d1['samples'] if isinstance(d1, dict) else d1
    s2 = d2['samples'] if isinstance(d2, dict) else d2
    assert len(s1) == len(s2) == n_samples
    ids1 = sorted(json.dumps(s, sort_keys=True) for s in s1)
    ids2 = sorted(json.dumps(s, sort_keys=True) for s in s2)
    assert ids1 == ids2
