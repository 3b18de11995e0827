"""Train a referring model with an MMEngine runner.

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--resume [CKPT]] [--cfg-options k=v]
    mim train mmrefer CONFIG [-l pytorch -G N]
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from mmrefer.utils import register_all_modules
from mmrefer.utils.setup_env import setup_cpu_distributed


def parse_args():
    parser = argparse.ArgumentParser(description='Train an mmrefer model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='directory for logs and checkpoints')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (fp16/bf16 on CUDA, bf16 on CPU)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CKPT, or from the latest checkpoint in work_dir if no '
                        'path is given')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value pairs')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    # torch.distributed.launch passes --local-rank (dash) since torch 2.0
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def apply_amp(cfg):
    """Mixed precision: mmengine's AmpOptimWrapper (fp16 + dynamic loss scale) on CUDA,
    mmrefer's AutocastOptimWrapper (bf16 autocast) elsewhere."""
    import torch
    if cfg.optim_wrapper.get('type', 'OptimWrapper') in ('AmpOptimWrapper',
                                                          'AutocastOptimWrapper'):
        return
    if torch.cuda.is_available():
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    else:
        cfg.optim_wrapper.type = 'AutocastOptimWrapper'
        cfg.optim_wrapper.setdefault('dtype', 'bfloat16')


def main():
    args = parse_args()
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    setup_cpu_distributed(cfg, args.launcher)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        apply_amp(cfg)
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    runner = Runner.from_cfg(cfg)
    runner.train()


if __name__ == '__main__':
    main()
