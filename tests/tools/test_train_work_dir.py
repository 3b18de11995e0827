"""tools/train.py says so when --resume finds nothing to resume and when a fresh run is about to
overwrite the checkpoints of an earlier one, and refuses --cfg-options on config variables (all
three would otherwise pass silently)."""
import logging
import os
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config
from e2e_helpers import run_together
from reliability_helpers import captured_log

from mmrefer.utils.setup_env import check_cfg_options

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools'))
import train  # noqa: E402


def _warnings(work_dir, resume):
    with captured_log() as log:
        train.warn_about_work_dir(str(work_dir), resume)
    return [m for lvl, m in log if lvl == logging.WARNING]


def test_resume_without_a_checkpoint_and_a_reused_work_dir_are_named(tmp_path):
    empty = tmp_path / 'typo_work_dir'
    (msg, ) = _warnings(empty, 'auto')
    assert f'{empty} has no last_checkpoint' in msg and 'from scratch' in msg
    assert _warnings(empty, None) == []          # a fresh run in a fresh folder: nothing to say
    done = tmp_path / 'earlier'
    done.mkdir()
    for name in ('epoch_1.pth', 'epoch_2.pth'):
        (done / name).write_bytes(b'')
    (done / 'last_checkpoint').write_text(str(done / 'epoch_2.pth'))
    (msg, ) = _warnings(done, None)
    assert 'epoch_1.pth, epoch_2.pth' in msg and 'overwrites' in msg and '--resume' in msg
    assert _warnings(done, 'auto') == []          # resuming it: as asked
    assert _warnings(done, str(done / 'epoch_1.pth')) == []


def test_cfg_options_on_a_config_variable_are_refused_naming_the_fields(tmp_path):
    """`--cfg-options max_epochs=1` would be merged and dumped but change no field (the file
    copied the variable into train_cfg.max_epochs when it was read): refused before any work,
    naming the field to set; runner keys and dotted fields pass."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    cfg = osp.join(ROOT, 'configs', 'quickstart', 'latentvg_tiny_synthref.py')
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), cfg,
                           '--work-dir', str(tmp_path / 'w'), '--cfg-options', 'max_epochs=1'],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0
    assert ("--cfg-options max_epochs: 'max_epochs' is a variable of" in proc.stderr
            and 'train_cfg.max_epochs' in proc.stderr), proc.stderr[-2000:]
    assert not (tmp_path / 'w').exists()
    c = Config.fromfile(cfg)
    check_cfg_options(c, {'train_cfg.max_epochs': 1, 'randomness.seed': 3, 'load_from': None},
                      cfg)
    with pytest.raises(ValueError, match=r"'img_scale' is a variable .* "
                                         r'train_dataloader\.dataset\.pipeline\.\d+\.scale'):
        check_cfg_options(c, {'img_scale': (64, 64)}, cfg)


def test_bad_command_line_items_are_named(tmp_path):
    """Items mmengine's DictAction cannot parse, a batch size that is not a positive integer,
    and test.py's --out in a folder that cannot be made: named before any model or data is
    built (exit 2 / a one-line error)."""
    cfg = osp.join(ROOT, 'configs', 'quickstart', 'latentvg_tiny_synthref.py')
    (tmp_path / 'afile').write_text('x')
    cases = [
        ('train.py', ['--cfg-options', 'train_dataloader.batch_size'],
         "'train_dataloader.batch_size' is not KEY=VALUE"),
        ('train.py', ['--cfg-options', 'model.backbone.init_cfg=dict(type=Pretrained)'],
         'dict(...) values are not parsed; set each field'),
        ('train.py', ['--cfg-options', 'train_dataloader.batch_size=0'],
         'train_dataloader.batch_size must be a positive integer, got 0'),
        ('test.py', ['x.pth', '--out', str(tmp_path / 'preds.txt')], 'must end with .pkl'),
        ('test.py', ['x.pth', '--out', str(tmp_path / 'afile' / 'preds.pkl')],
         'cannot create its folder'),
    ]
    argvs = [[sys.executable, osp.join(ROOT, 'tools', tool), cfg] + extra +
             (['--work-dir', str(tmp_path / 'w')] if tool == 'train.py' else [])
             for tool, extra, _ in cases]
    results = run_together(argvs, timeout=300, check=False)  # the five at once
    for (_, extra, words), (returncode, _, stderr) in zip(cases, results):
        assert returncode != 0 and words in stderr, (extra, stderr[-1500:])
        assert 'Traceback' not in stderr, stderr[-1500:]
