"""Quality benchmark of the tiny Latent-VG quick-start config on SynthRef (CPU).

    python tools/analysis_tools/benchmark_latentvg_tiny.py \
        [--config configs/quickstart/latentvg_tiny_synthref.py] [--data-root data/synthref]
        [--threads 2] [--work-dir work_dirs/benchmark_latentvg_tiny] [--budget 600]

Generates SynthRef (default sizes) when ``--data-root`` does not hold it, trains the config
with mmengine's Runner on ``--threads`` CPU threads, then evaluates on SynthRef val (the
config's test loader). Prints the training wall time and the GRES metrics as JSON; the target
is gIoU >= 90 with training inside ``--budget`` seconds (600 = 10 minutes).
"""
import argparse
import json
import os
import os.path as osp
import time


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='configs/quickstart/latentvg_tiny_synthref.py')
    parser.add_argument('--data-root', default='data/synthref')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--work-dir', default='work_dirs/benchmark_latentvg_tiny')
    parser.add_argument('--budget', type=float, default=600.0,
                        help='training time budget in seconds (reported, not enforced)')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


def main():
    args = parse_args()
    import torch
    torch.set_num_threads(args.threads)
    os.environ.setdefault('OMP_NUM_THREADS', str(args.threads))
    from mmengine.config import Config
    from mmengine.runner import Runner

    from mmrefer.utils import register_all_modules
    register_all_modules()
    from mmrefer.datasets.synthetic import make_synthref, point_config_at_synthref
    root = args.data_root.rstrip('/') + '/'
    if not osp.isfile(osp.join(root, 'grefcoco', 'grefs(unc).json')):
        print(f'generating SynthRef in {root}')
        make_synthref(root, seed=0)
    cfg = Config.fromfile(args.config)
    point_config_at_synthref(cfg, root)
    cfg.work_dir = args.work_dir
    cfg.randomness = dict(seed=args.seed)
    cfg.train_cfg.val_interval = 10**6  # evaluate once, after training
    runner = Runner.from_cfg(cfg)
    start = time.perf_counter()
    runner.train()
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    metrics = runner.test()
    test_s = time.perf_counter() - start
    result = dict(config=args.config, threads=args.threads, train_seconds=round(train_s, 1),
                  test_seconds=round(test_s, 1), within_budget=train_s <= args.budget,
                  metrics={k: round(float(v), 2) for k, v in metrics.items()})
    print(json.dumps(result, indent=1))
    with open(osp.join(args.work_dir, 'benchmark.json'), 'w') as f:
        json.dump(result, f, indent=1)


if __name__ == '__main__':
    main()
