"""`mim train mmrefer` + `mim test mmrefer -C` of both quick-start configs on a small SynthRef,
through the installed wheel (what README command 1 does, shortened)."""
import glob
import json
import os.path as osp
import sysconfig

import pytest

from e2e_helpers import mim_bin, run, short_config


def _installed_matches_tree():
    """mim runs <site-packages>/mmrefer/.mim/tools/train.py: the wheel must be installed."""
    purelib = sysconfig.get_paths()['purelib']
    return osp.isfile(osp.join(purelib, 'mmrefer', '.mim', 'tools', 'train.py'))


@pytest.mark.slow
@pytest.mark.parametrize('method', ['latentvg', 'instalign'])
def test_mim_train_then_test(method, synthref_root, tmp_path):
    assert _installed_matches_tree(), (
        'mmrefer must be installed as a regular wheel for mim (run `make install`)')
    cfg = short_config(method, synthref_root, str(tmp_path / f'{method}_short.py'), iters=3,
                       num_test_samples=6)
    work = str(tmp_path / method)
    out = run([mim_bin(), 'train', 'mmrefer', cfg, '--work-dir', work], use_source_tree=False)
    assert 'Saving checkpoint at 3 iterations' in out
    ckpt = open(osp.join(work, 'last_checkpoint')).read().strip()
    assert osp.isfile(ckpt)

    test_dir = str(tmp_path / f'{method}_test')
    out = run([mim_bin(), 'test', 'mmrefer', cfg, '-C', ckpt, '--work-dir', test_dir],
              use_source_tree=False)
    metrics_files = glob.glob(osp.join(test_dir, '*', '*.json'))
    assert metrics_files, out[-3000:]
    metrics = json.load(open(sorted(metrics_files)[-1]))
    for key in ('cIoU', 'gIoU', 'N-acc', 'T-acc'):
        found = [k for k in metrics if k.endswith(key)]
        assert found, f'{key} missing from {metrics}'
        value = metrics[found[0]]
        assert 0.0 <= value <= 100.0

    # the same checkpoint on the RefCOCO-format refs: RIS + REC metrics
    ris_cfg = short_config(method, synthref_root, str(tmp_path / f'{method}_ris.py'),
                           num_test_samples=6, variant='_ris-eval')
    ris_dir = str(tmp_path / f'{method}_test_ris')
    run([mim_bin(), 'test', 'mmrefer', ris_cfg, '-C', ckpt, '--work-dir', ris_dir],
        use_source_tree=False)
    metrics = json.load(open(sorted(glob.glob(osp.join(ris_dir, '*', '*.json')))[-1]))
    for key in ('ris/mIoU', 'ris/oIoU', 'ris/Pr@0.5', 'rec/Acc@0.5'):
        assert key in metrics and 0.0 <= metrics[key] <= 100.0, (key, metrics)

