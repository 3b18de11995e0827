import argparse
import logging

from mmengine.config import DictAction
from mmengine.registry import init_default_scope as _init_default_scope


def register_all_modules(init_default_scope: bool = True) -> None:
    """Import every module that registers into mmrefer's (and mmdet's) registries.

    mmengine only triggers the lazy ``locations`` import of the registry a name is looked up in,
    never its parents', so mmdet's modules are imported here explicitly.

    Args:
        init_default_scope (bool): make ``'mmrefer'`` the current default scope.
    """
    import mmdet.datasets  # noqa: F401
    import mmdet.engine  # noqa: F401
    import mmdet.evaluation  # noqa: F401
    import mmdet.models  # noqa: F401
    import mmdet.visualization  # noqa: F401

    import mmrefer.datasets  # noqa: F401
    import mmrefer.engine  # noqa: F401
    import mmrefer.evaluation  # noqa: F401
    import mmrefer.models  # noqa: F401
    import mmrefer.visualization  # noqa: F401

    if init_default_scope:
        _init_default_scope('mmrefer')


def setup_cpu_distributed(cfg, launcher: str) -> None:
    """Initialise a gloo process group for ``--launcher pytorch`` on machines without CUDA.

    mmengine 0.10.7's pytorch launcher always calls ``torch.cuda.set_device``, which fails on a
    CPU build of torch. When CUDA is absent we create the (gloo) process group from the
    ``torchrun`` environment ourselves; the Runner then finds it initialised and skips its own
    set-up. Its default DDP wrapper pins ``device_ids=[LOCAL_RANK]`` (GPU-only), so the model
    wrapper becomes a CPU ``MMDistributedDataParallel`` (``device_ids=None``), keeping whatever
    else ``model_wrapper_cfg`` sets. With CUDA present, or with ``launcher='none'``, nothing
    happens.
    """
    import os

    import torch
    import torch.distributed as dist
    if launcher != 'pytorch' or torch.cuda.is_available() or dist.is_initialized():
        return
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    wrapper = dict(type='MMDistributedDataParallel', broadcast_buffers=False,
                   find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper.update(cfg.get('model_wrapper_cfg') or {})  # what the config sets wins,
    wrapper['device_ids'] = None  # except the GPU-only device ids
    cfg.model_wrapper_cfg = wrapper
    dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                            world_size=int(os.environ['WORLD_SIZE']))


#: ``--amp-dtype`` choice -> the dtype name the optim wrappers and AMP loops take
AMP_DTYPES = dict(bf16='bfloat16', fp16='float16')


class CfgOptions(DictAction):
    """mmengine's ``DictAction`` whose parse errors name the item (``KEY`` without ``=``;
    ``dict(...)`` values, which it cannot parse) instead of ending in a traceback."""

    def __call__(self, parser, namespace, values, option_string=None):
        for item in values:
            key, sep, value = item.partition('=')
            if not sep or not key:
                parser.error(f'{option_string} {item!r} is not KEY=VALUE')
            if value.lstrip().startswith('dict('):
                parser.error(f"{option_string} {item!r}: dict(...) values are not parsed; "
                             f"set each field, e.g. {key}.type=... {key}.checkpoint=...")
        try:
            super().__call__(parser, namespace, values, option_string)
        except (ValueError, RecursionError, argparse.ArgumentTypeError) as e:
            parser.error(f'{option_string}: cannot parse {values!r} ({e})')


def add_runner_args(parser, amp_help: str) -> None:
    """The command-line options ``tools/train.py`` and ``tools/test.py`` share."""
    parser.add_argument('--amp', action='store_true', help=amp_help)
    parser.add_argument('--amp-dtype', choices=list(AMP_DTYPES), default=None,
                        help='autocast dtype with --amp: bf16 (default) or fp16 (CUDA only: '
                        'CPU is bf16)')
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptions,
                        help='override config settings, key=value pairs')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    # torch.distributed.launch passes --local-rank (dash) since torch 2.0
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def check_launcher(launcher: str, script: str = 'tools/dist_train.sh') -> None:
    """mmengine's slurm and mpi launchers call ``torch.cuda.set_device``: refuse them without
    CUDA with a message naming the CPU alternative (``--launcher pytorch``, gloo)."""
    import torch
    if launcher in ('slurm', 'mpi') and not torch.cuda.is_available():
        raise SystemExit(f'--launcher {launcher} needs CUDA (mmengine calls '
                         'torch.cuda.set_device); on CPU machines use --launcher pytorch '
                         f'({script} with NNODES / NODE_RANK / MASTER_ADDR / PORT)')


def check_amp_args(args) -> None:
    """``--amp-dtype`` only with ``--amp`` and fp16 only on CUDA, refused before anything is
    built; fills in the default dtype (bf16)."""
    import torch
    dtype = getattr(args, 'amp_dtype', None)
    if dtype is not None and not args.amp:
        raise SystemExit(f'--amp-dtype {dtype} needs --amp (without it the run is fp32)')
    if args.amp and dtype == 'fp16' and not torch.cuda.is_available():
        raise SystemExit('--amp-dtype fp16 needs CUDA: mixed precision on CPU is bf16 '
                         '(--amp alone)')
    args.amp_dtype = dtype or 'bf16'


# the top-level config keys mmengine's Runner (and tools/train.py / test.py) read; any other
# top-level name of a config file is a variable, used while the file is parsed
RUNNER_KEYS = frozenset((
    'model', 'work_dir', 'train_dataloader', 'val_dataloader', 'test_dataloader', 'train_cfg',
    'val_cfg', 'test_cfg', 'auto_scale_lr', 'optim_wrapper', 'param_scheduler',
    'val_evaluator', 'test_evaluator', 'default_hooks', 'custom_hooks', 'data_preprocessor',
    'load_from', 'resume', 'launcher', 'env_cfg', 'log_processor', 'log_level', 'visualizer',
    'default_scope', 'randomness', 'experiment_name', 'compile', 'model_wrapper_cfg',
    'find_unused_parameters', 'activation_checkpointing', 'efficient_conv_bn_eval',
    'custom_imports', 'runner_type', 'strategy', 'tta_model', 'tta_pipeline'))


def check_cfg_options(cfg, options, config: str) -> None:
    """Refuse ``--cfg-options`` on a config file's variables (``max_epochs=1``,
    ``img_scale=...``): mmengine merges them, the dumped config shows them, yet every field the
    file computed from them keeps its value, so the run silently ignores them. The error names
    the fields holding the variable's value, to set instead."""
    from mmengine.logging import print_log
    for key in options or {}:
        top = key.split('.')[0]
        if top in RUNNER_KEYS:
            continue
        if top not in cfg:
            print_log(f'--cfg-options {key}: {top!r} is not a key the runner reads (nothing in '
                      f'{config} uses it either)', logger='current', level=logging.WARNING)
            continue
        value = cfg[top]
        same = [path for path in _paths_holding(cfg.to_dict(), value)
                if path.split('.')[0] in RUNNER_KEYS]
        # a number equal by chance is no evidence: for numbers, only fields of the same name
        uses = [p for p in same if p.rsplit('.', 1)[-1] == top] or (
            [] if isinstance(value, (int, float, bool)) else same)
        more = f' (and {len(uses) - 4} more)' if len(uses) > 4 else ''
        hint = (f'; set the fields holding its value instead: {", ".join(uses[:4])}{more}'
                if uses else '; set the fields that use it instead')
        raise ValueError(f'--cfg-options {key}: {top!r} is a variable of {config}, used while '
                         f'the file was read, so changing it now changes no field of the '
                         f'run{hint}')


def _prog() -> str:
    import os.path as osp
    import sys
    return osp.basename(sys.argv[0]) or 'mmrefer'


def check_dataloaders(cfg) -> None:
    """Each loader's ``batch_size`` must be a positive int (torch's error names no loader);
    ``persistent_workers`` is switched off for a loader with ``num_workers=0`` (torch refuses
    the pair; there are no workers to keep)."""
    from mmengine.logging import print_log
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(name)
        if not loader:
            continue
        bs = loader.get('batch_size', 1)
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            raise ValueError(f'{name}.batch_size must be a positive integer, got {bs!r}')
        if loader.get('num_workers', 0) == 0 and loader.get('persistent_workers'):
            loader.persistent_workers = False
            print_log(f'{name}: num_workers=0, so persistent_workers is set to False (torch '
                      'refuses the pair)', logger='current', level=logging.INFO)


def _paths_holding(node, value, prefix: str = ''):
    """Dotted paths of ``node`` (dicts and lists) whose value equals ``value``."""
    items = (node.items() if isinstance(node, dict)
             else enumerate(node) if isinstance(node, (list, tuple)) else ())
    for k, v in items:
        path = f'{prefix}{k}'
        try:
            same = v == value and type(v) is type(value)
        except Exception:  # noqa: BLE001  (array-like values)
            same = False
        if same:
            yield path
        elif isinstance(v, (dict, list, tuple)):
            yield from _paths_holding(v, value, path + '.')


def load_run_config(args, script: str):
    """The config ``tools/train.py`` / ``tools/test.py`` run: read, ``--cfg-options`` merged,
    the CPU process group set up after them (it reads ``find_unused_parameters``), the work dir
    (``--work-dir`` or ``./work_dirs/CONFIG_NAME``)."""
    import os
    import os.path as osp

    from mmengine.config import Config
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    check_launcher(args.launcher, script)
    check_amp_args(args)
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        try:
            check_cfg_options(cfg, args.cfg_options, args.config)
        except ValueError as e:
            raise SystemExit(f'{_prog()}: error: {e}') from None
        cfg.merge_from_dict(args.cfg_options)
    try:
        check_dataloaders(cfg)
    except ValueError as e:
        raise SystemExit(f'{_prog()}: error: {args.config}: {e}') from None
    setup_cpu_distributed(cfg, args.launcher)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg
