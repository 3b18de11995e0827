"""Evaluate a referring model checkpoint (RIS / REC / GRES metrics from the config's evaluator).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl] [--show-dir DIR]
    mim test mmrefer CONFIG -C CHECKPOINT [-l pytorch -G N]
    tools/dist_test.sh CONFIG CHECKPOINT N    # torchrun; NNODES / NODE_RANK / MASTER_ADDR / PORT
    tools/slurm_test.sh PARTITION JOB CONFIG CHECKPOINT   # srun, --launcher slurm (CUDA)
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.evaluator import DumpResults
from mmengine.runner import Runner

from mmrefer.utils import register_all_modules, runner_checkpoint_loading
from mmrefer.utils.setup_env import setup_cpu_distributed


def parse_args():
    parser = argparse.ArgumentParser(description='Test (evaluate) an mmrefer model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='directory for the evaluation log and metrics json')
    parser.add_argument('--out', help='dump raw predictions to this pickle file')
    parser.add_argument('--show-dir', help='draw predictions next to ground truth into '
                        'WORK_DIR/TIMESTAMP/SHOW_DIR')
    parser.add_argument('--amp', action='store_true',
                        help='mixed-precision inference (bf16 autocast by default, with the '
                        "models' fp32 islands)")
    parser.add_argument('--amp-dtype', choices=['bf16', 'fp16'], default='bf16',
                        help='autocast dtype with --amp (fp16 on CUDA only)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value pairs')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def check_launcher(launcher: str) -> None:
    """mmengine's slurm and mpi launchers call ``torch.cuda.set_device``: refuse them without
    CUDA with a message naming the CPU alternative (``--launcher pytorch``, gloo)."""
    import torch
    if launcher in ('slurm', 'mpi') and not torch.cuda.is_available():
        raise SystemExit(f'--launcher {launcher} needs CUDA (mmengine calls '
                         'torch.cuda.set_device); on CPU machines use --launcher pytorch '
                         '(tools/dist_test.sh with NNODES / NODE_RANK / MASTER_ADDR / PORT)')


def main():
    args = parse_args()
    check_launcher(args.launcher)
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    setup_cpu_distributed(cfg, args.launcher)  # after the overrides (find_unused_parameters)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    if args.amp:
        cfg.test_cfg = dict(type='AmpTestLoop',
                            dtype=dict(bf16='bfloat16', fp16='float16')[args.amp_dtype])
    if args.show_dir:
        hooks = cfg.default_hooks
        if 'visualization' not in hooks:
            hooks.visualization = dict(type='RefVisualizationHook')
        hooks.visualization.draw = True
        hooks.visualization.test_out_dir = args.show_dir
    runner = Runner.from_cfg(cfg)
    if args.out is not None:
        assert args.out.endswith(('.pkl', '.pickle')), '--out must end with .pkl'
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    # weights_only checkpoint loading for mmengine checkpoints, for this run only
    with runner_checkpoint_loading(cfg.get('load_from')):
        runner.test()


if __name__ == '__main__':
    main()
