import os
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
QUICKSTART = {
    'latentvg': osp.join(ROOT, 'configs', 'quickstart', 'latentvg_tiny_synthref.py'),
    'instalign': osp.join(ROOT, 'configs', 'quickstart', 'instalign_tiny_synthref.py'),
}


def short_config(method, data_root, out_path, iters=3, batch_size=2, num_test_samples=None,
                 variant='', **overrides):
    """Write a shortened copy of a quick-start config (``variant='_ris-eval'`` for its RIS
    evaluation child): ``iters`` iterations on ``data_root``, checkpoint at the end, constant LR,
    no worker processes. Returns the config path."""
    from mmengine.config import Config
    cfg = Config.fromfile(QUICKSTART[method].replace('.py', f'{variant}.py'))
    root = str(data_root).rstrip('/') + '/'
    # the model's tokenizer files live under the quick-start data root too
    cfg.model = _repoint(cfg.model, 'data/synthref/', root)
    for split in ('train', 'val', 'test'):
        loader = cfg[f'{split}_dataloader']
        loader.dataset.data_root = root
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.batch_size = batch_size
    if num_test_samples is not None:
        cfg.val_dataloader.dataset.indices = num_test_samples
        cfg.test_dataloader.dataset.indices = num_test_samples
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=iters, by_epoch=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.log_processor = dict(type='LogProcessor', window_size=1, by_epoch=False)
    cfg.merge_from_dict(overrides)
    cfg.dump(out_path)
    return out_path


def _repoint(node, old_prefix, new_prefix):
    """Replace ``old_prefix`` at the start of every string inside a nested config."""
    if isinstance(node, str):
        return new_prefix + node[len(old_prefix):] if node.startswith(old_prefix) else node
    if isinstance(node, dict):
        return type(node)({k: _repoint(v, old_prefix, new_prefix) for k, v in node.items()})
    if isinstance(node, (list, tuple)):
        return type(node)(_repoint(v, old_prefix, new_prefix) for v in node)
    return node


def run(cmd, cwd=ROOT, timeout=900, env=None, use_source_tree=True):
    """Run a command, raising with its output on failure. ``use_source_tree`` puts the
    repository first on PYTHONPATH (scripts then import this tree's mmrefer, not the installed
    wheel); mim runs pass False so that they exercise the installed package."""
    full_env = dict(os.environ)
    full_env.setdefault('OMP_NUM_THREADS', '1')
    if use_source_tree:
        full_env['PYTHONPATH'] = os.pathsep.join(
            [ROOT] + [p for p in [full_env.get('PYTHONPATH')] if p])
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
