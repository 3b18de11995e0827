"""`mim train mmrefer` + `mim test mmrefer -C` of both quick-start configs on a small SynthRef,
through the installed wheel (what README command 1 does, shortened)."""
import glob
import json
import os.path as osp
import sysconfig

import pytest

from e2e_helpers import mim_bin, run, run_together, short_config


def _installed_matches_tree():
    """mim runs <site-packages>/mmrefer/.mim/tools/train.py: the wheel must be installed."""
    purelib = sysconfig.get_paths()['purelib']
    return osp.isfile(osp.join(purelib, 'mmrefer', '.mim', 'tools', 'train.py'))


def _rela_summary(rows):
    """cIoU, gIoU, N-acc, T-acc, Pr@0.7-0.9 from per-sample rows, as ReLA's loop sums them: a
    no-target sample scores IoU 1 when flagged (TP), 0 otherwise (FN); the rest their I / U."""
    n = {o: sum(r['outcome'] == o for r in rows) for o in ('TP', 'FN', 'FP', 'TN')}
    ious = []
    for r in rows:
        assert r['outcome'] == {(True, True): 'TP', (True, False): 'FN', (False, True): 'FP',
                                (False, False): 'TN'}[(r['gt_no_target'], r['pred_no_target'])]
        if r['gt_no_target']:
            ious.append(1.0 if r['pred_no_target'] else 0.0)
        else:
            ious.append(r['I'] / r['U'] if r['U'] else 0.0)
    targeted = [iou for iou, r in zip(ious, rows) if not r['gt_no_target']]
    pct = lambda a, b: 100.0 * a / b if b else float('nan')  # noqa: E731
    out = {'cIoU': pct(sum(r['I'] for r in rows), sum(r['U'] for r in rows)),
           'gIoU': 100.0 * sum(ious) / len(rows),
           'N-acc': pct(n['TP'], n['TP'] + n['FN']) if n['TP'] + n['FN'] else 0.0,
           'T-acc': pct(n['TN'], n['TN'] + n['FP']) if n['TP'] + n['FN'] else 0.0}
    out.update({f'Pr@{t}': pct(sum(i >= t for i in targeted), len(targeted))
                for t in (0.7, 0.8, 0.9)})
    return out


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
    dump = str(tmp_path / f'{method}_per_sample.json')
    # the same checkpoint on the RefCOCO-format refs too (RIS + REC metrics): both tests at once
    ris_cfg = short_config(method, synthref_root, str(tmp_path / f'{method}_ris.py'),
                           num_test_samples=6, variant='_ris-eval')
    ris_dir = str(tmp_path / f'{method}_test_ris')
    out, _ = run_together(
        [[mim_bin(), 'test', 'mmrefer', cfg, '-C', ckpt, '--work-dir', test_dir,
          '--cfg-options', f'test_evaluator.dump_per_sample={dump}'],
         [mim_bin(), 'test', 'mmrefer', ris_cfg, '-C', ckpt, '--work-dir', ris_dir]],
        use_source_tree=False)
    metrics_files = glob.glob(osp.join(test_dir, '*', '*.json'))
    assert metrics_files, out[-3000:]
    metrics = json.load(open(sorted(metrics_files)[-1]))
    # the printed summary is ReLA's arithmetic over the 6 test samples mim test dumped
    rows = json.load(open(dump))['samples']
    assert len(rows) == 6 and len({r['sent_id'] for r in rows}) == 6
    gres = {k: v for k, v in metrics.items() if k.startswith('gres/')}  # besides time keys
    assert gres == pytest.approx({f'gres/{k}': v for k, v in _rela_summary(rows).items()},
                                 rel=1e-9, nan_ok=True)
    metrics = json.load(open(sorted(glob.glob(osp.join(ris_dir, '*', '*.json')))[-1]))
    for key in ('ris/mIoU', 'ris/oIoU', 'ris/Pr@0.5', 'rec/Acc@0.5'):
        assert key in metrics and 0.0 <= metrics[key] <= 100.0, (key, metrics)
