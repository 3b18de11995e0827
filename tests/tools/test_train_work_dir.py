"""tools/train.py says so when --resume finds nothing to resume and when a fresh run is about to
overwrite the checkpoints of an earlier one (both would otherwise pass silently)."""
import logging
import os.path as osp
import sys

from reliability_helpers import captured_log

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
