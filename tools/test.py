"""Evaluate a referring model checkpoint (RIS / REC / GRES metrics from the config's evaluator).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl] [--show-dir DIR]
    mim test mmrefer CONFIG -C CHECKPOINT [-l pytorch -G N]
    tools/dist_test.sh CONFIG CHECKPOINT N    # torchrun; NNODES / NODE_RANK / MASTER_ADDR / PORT
    tools/slurm_test.sh PARTITION JOB CONFIG CHECKPOINT   # srun, --launcher slurm (CUDA)
"""
import argparse
import os.path as osp

from mmengine.evaluator import DumpResults
from mmengine.runner import Runner

from mmrefer.utils import runner_checkpoint_loading
from mmrefer.utils.paths import output_folder_problem
from mmrefer.utils.setup_env import AMP_DTYPES, add_runner_args, load_run_config


def parse_args():
    parser = argparse.ArgumentParser(description='Test (evaluate) an mmrefer model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='directory for the evaluation log and metrics json')
    parser.add_argument('--out', help='dump raw predictions to this pickle file')
    parser.add_argument('--show-dir', help='draw predictions next to ground truth into '
                        'WORK_DIR/TIMESTAMP/SHOW_DIR')
    add_runner_args(parser, 'mixed-precision inference (bf16 autocast by default, with the '
                    "models' fp32 islands)")
    args = parser.parse_args()
    if args.out is not None:  # checked before the evaluation, not after it
        if not args.out.endswith(('.pkl', '.pickle')):
            parser.error(f'--out {args.out} must end with .pkl or .pickle')
        problem = output_folder_problem(osp.dirname(osp.abspath(args.out)))
        if problem:
            parser.error(f'--out {args.out}: {problem}')
    return args


def main():
    args = parse_args()
    cfg = load_run_config(args, 'tools/dist_test.sh')
    cfg.load_from = args.checkpoint
    if args.amp:
        cfg.test_cfg = dict(type='AmpTestLoop', dtype=AMP_DTYPES[args.amp_dtype])
    if args.show_dir:
        hooks = cfg.default_hooks
        if 'visualization' not in hooks:
            hooks.visualization = dict(type='RefVisualizationHook')
        hooks.visualization.draw = True
        hooks.visualization.test_out_dir = args.show_dir
    runner = Runner.from_cfg(cfg)
    if args.out is not None:
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    # weights_only checkpoint loading for mmengine checkpoints, for this run only
    with runner_checkpoint_loading(cfg.get('load_from')):
        runner.test()


if __name__ == '__main__':
    main()
