"""Train a referring model with an MMEngine runner.

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--compile] [--resume [CKPT]]
        [--cfg-options k=v]
    mim train mmrefer CONFIG [-l pytorch -G N]
    tools/dist_train.sh CONFIG N          # torchrun; NNODES / NODE_RANK / MASTER_ADDR / PORT
    tools/slurm_train.sh PARTITION JOB CONFIG WORK_DIR   # srun, --launcher slurm (CUDA)
"""
import argparse
import glob
import logging
import os.path as osp

from mmengine.runner import Runner

from mmrefer.engine import plain_param_groups
from mmrefer.utils import runner_checkpoint_loading
from mmrefer.utils.setup_env import AMP_DTYPES, add_runner_args, load_run_config


def parse_args():
    parser = argparse.ArgumentParser(description='Train an mmrefer model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='directory for logs and checkpoints')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the model forward (cfg.compile=True; a dict in the '
                        "config, e.g. compile=dict(backend=..., target='train_step'), is kept)")
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CKPT, or from the latest checkpoint in work_dir if no '
                        'path is given')
    add_runner_args(parser, 'mixed precision: bf16 autocast (CUDA and CPU) with the models\' '
                    'fp32 islands; --amp-dtype fp16 on CUDA adds dynamic loss scaling')
    return parser.parse_args()


def apply_amp(cfg, dtype: str = 'bf16'):
    """Mixed precision for training and the validation loop. On CUDA: mmengine's
    AmpOptimWrapper in bf16 (no loss scaling needed: bf16 has fp32's exponent range) or fp16
    (dynamic loss scaling); elsewhere mmrefer's AutocastOptimWrapper (bf16 autocast; fp16
    without CUDA is refused earlier, by ``check_amp_args`` in ``load_run_config``). The
    validation loop becomes AmpValLoop with the same dtype."""
    import torch
    name = AMP_DTYPES[dtype]
    if cfg.optim_wrapper.get('type', 'OptimWrapper') not in ('AmpOptimWrapper',
                                                              'AutocastOptimWrapper'):
        if torch.cuda.is_available():
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('dtype', name)
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic' if dtype == 'fp16' else 1.0)
        else:
            cfg.optim_wrapper.type = 'AutocastOptimWrapper'
            cfg.optim_wrapper.setdefault('dtype', 'bfloat16')
    if cfg.get('val_cfg') is not None:
        cfg.val_cfg = dict(type='AmpValLoop', dtype=name)


COMPILE_TARGETS = ('forward', 'train_step')


def compile_options(cfg):
    """``(target, torch.compile kwargs)`` of ``cfg.compile`` (``True`` or a dict with an
    optional ``target``), or ``None`` when compilation is off; an unknown target raises
    ``ValueError`` naming it."""
    compile_cfg = cfg.get('compile')
    if not compile_cfg:
        return None
    kwargs = {} if compile_cfg is True else dict(compile_cfg)
    target = kwargs.pop('target', 'forward')
    if target not in COMPILE_TARGETS:
        raise ValueError(f'compile.target must be one of {COMPILE_TARGETS} '
                         f"('forward' or 'train_step'), got {target!r}")
    return target, kwargs


class CompileReadyRunner(Runner):
    """mmengine's Runner with mmrefer's ``torch.compile`` choice.

    ``cfg.compile`` is ``True`` or a dict of ``torch.compile`` options plus an optional
    ``target``: ``'forward'`` (default) compiles the model's ``forward`` (the loss forward in
    training, ``predict`` in the val loop; data preprocessor, backward and optimizer step stay
    eager), ``'train_step'`` compiles the whole ``model.train_step`` as mmengine's own Runner
    does. On CPU the forward target measured faster for both tiny models, the whole step slower
    than eager (docs/benchmarks.md, "torch.compile"; under ``paramwise_cfg`` mmengine builds one
    param group per parameter and dynamo recompiles the optimizer step for each group, unless the
    config uses ``MergedGroupsOptimWrapperConstructor`` as the paper schedules do). Either way
    the optimizer's param groups are made plain dicts (:func:`plain_param_groups`).
    """

    def build_optim_wrapper(self, optim_wrapper):
        optim_wrapper = super().build_optim_wrapper(optim_wrapper)
        if self.cfg.get('compile'):
            plain_param_groups(optim_wrapper)
        return optim_wrapper

    def _maybe_compile(self, target: str) -> None:
        import torch
        from mmengine.model import is_model_wrapper
        options = compile_options(self.cfg)
        if options is None:
            return
        what, kwargs = options
        if what == 'train_step':
            setattr(self.model, target, torch.compile(getattr(self.model, target), **kwargs))
        else:
            model = self.model.module if is_model_wrapper(self.model) else self.model
            model.forward = torch.compile(model.forward, **kwargs)
        self.logger.info(f'torch.compile of the model\'s {what} (options {kwargs}); the first '
                         'iterations compile it and are slow')


def warn_about_work_dir(work_dir: str, resume) -> None:
    """Say it plainly when ``--resume`` finds nothing to resume (mmengine then starts from
    scratch, e.g. after a typo in ``--work-dir``) and when a fresh run is about to overwrite
    the checkpoints of an earlier one in the same work dir."""
    from mmengine.logging import print_log
    has_last = osp.isfile(osp.join(work_dir, 'last_checkpoint'))
    if resume == 'auto' and not has_last:
        print_log(f'--resume: {work_dir} has no last_checkpoint, so nothing is resumed and '
                  'training starts from scratch (check --work-dir, or give --resume CKPT)',
                  logger='current', level=logging.WARNING)
    elif resume is None:
        old = sorted(osp.basename(p) for p in glob.glob(osp.join(work_dir, '*.pth')))
        if old:
            print_log(f'{work_dir} holds the checkpoints of an earlier run ({", ".join(old[:4])}'
                      f'{" ..." if len(old) > 4 else ""}); this run starts from scratch and '
                      'overwrites those of the same name: use --resume to continue that run, '
                      'or another --work-dir to keep them', logger='current',
                      level=logging.WARNING)


def main():
    args = parse_args()
    cfg = load_run_config(args, 'tools/dist_train.sh')
    if args.amp:
        apply_amp(cfg, args.amp_dtype)
    if args.compile and not isinstance(cfg.get('compile'), dict):
        cfg.compile = True  # CompileReadyRunner compiles the model's forward
    try:
        compile_options(cfg)
    except ValueError as e:
        raise SystemExit(f'{args.config}: {e}') from None
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    warn_about_work_dir(cfg.work_dir, args.resume)
    runner = (CompileReadyRunner if cfg.get('compile') else Runner).from_cfg(cfg)
    # weights_only checkpoint loading for mmengine checkpoints, for this run only
    with runner_checkpoint_loading(cfg.get('load_from')):
        runner.train()


if __name__ == '__main__':
    main()
