import os
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
QUICKSTART = {
    'latentvg': osp.join(ROOT, 'configs', 'quickstart', 'latentvg_tiny_synthref.py'),
    'instalign': osp.join(ROOT, 'configs', 'quickstart', 'instalign_tiny_synthref.py'),
}


def short_run_options(data_root, iters=4, batch_size=2, extra=()):
    """--cfg-options that point a quick-start config at ``data_root`` and shorten it."""
    root = data_root.rstrip('/') + '/'
    opts = [
        f'train_dataloader.dataset.data_root={root}',
        f'val_dataloader.dataset.data_root={root}',
        f'test_dataloader.dataset.data_root={root}',
        f'train_dataloader.batch_size={batch_size}',
        'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'val_dataloader.num_workers=0',
        'val_dataloader.persistent_workers=False',
        'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False',
        f'train_cfg.max_iters={iters}',
        f'train_cfg.val_interval={iters}',
        f'default_hooks.checkpoint.interval={iters}',
        'default_hooks.logger.interval=1',
        'param_scheduler=[]',
    ]
    return opts + list(extra)


def run(cmd, cwd=ROOT, timeout=900, env=None):
    full_env = dict(os.environ)
    full_env.setdefault('OMP_NUM_THREADS', '1')
    full_env.update(env or {})
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f'command failed ({proc.returncode}): {" ".join(cmd)}\n'
                             f'--- stdout ---\n{proc.stdout[-6000:]}\n'
                             f'--- stderr ---\n{proc.stderr[-6000:]}')
    return proc.stdout + proc.stderr


def mim_bin():
    return osp.join(osp.dirname(sys.executable), 'mim')
