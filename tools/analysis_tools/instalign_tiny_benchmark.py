"""Train + evaluate the tiny InstAlign on SynthRef and its no-instance-supervision ablation.

    python tools/analysis_tools/instalign_tiny_benchmark.py [--data-root data/synthref]
        [--variants full no-inst-sup] [--threads 2] [--work-dir work_dirs/instalign_bench]
        [--out work_dirs/instalign_bench/result.json] [--cfg-options k=v ...]

For each variant: builds SynthRef (default sizes, seed 0) under ``--data-root`` if absent, trains
``configs/quickstart/instalign_tiny_synthref.py`` (``no-inst-sup`` sets
``model.head.instance_supervision=False``, nothing else changes) with mmengine's Runner, times the
training (wall and CPU seconds of this process; data loading runs in it, one torch thread by
default), then predicts the whole val split and reports, at the network input resolution (the
default of GRESMetric) with GRESMetric itself:

* all val samples: cIoU, gIoU, N-acc, T-acc;
* the multi-target subset (>= 2 GT instances): cIoU, gIoU.

Results are printed as a table and written as JSON. The README / docs/instalign.md figures come
from this script.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

import numpy as np
import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

CONFIG = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs',
                  'quickstart', 'instalign_tiny_synthref.py')
VARIANTS = {
    'full': {},
    'no-inst-sup': {'model.head.instance_supervision': False},
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='tiny InstAlign quality benchmark on SynthRef')
    p.add_argument('--config', default=CONFIG)
    p.add_argument('--data-root', default='data/synthref')
    p.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument('--threads', type=int, default=1, help='torch.set_num_threads')
    p.add_argument('--work-dir', default='work_dirs/instalign_bench')
    p.add_argument('--out', default=None, help='JSON file (default WORK_DIR/result.json)')
    p.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                   help='extra overrides, e.g. max_epochs=2 (python literals)')
    return p.parse_args(argv)


def _literal(v):
    import ast
    try:
        return ast.literal_eval(v)
    except (ValueError, SyntaxError):
        return v


def build_cfg(config, data_root, work_dir, overrides):
    from mmengine.config import Config

    from mmrefer.datasets.synthetic import point_config_at_synthref
    cfg = Config.fromfile(config)
    point_config_at_synthref(cfg, data_root)
    for split in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        # data loading in the main process, so that its CPU time is counted
        cfg[split].num_workers = 0
        cfg[split].persistent_workers = False
    cfg.work_dir = work_dir
    # evaluation is done below on the same predictions; no validation during training
    cfg.train_cfg.val_interval = 10**6
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    if overrides:
        cfg.merge_from_dict(overrides)
    if 'max_epochs' in overrides:  # keep the loop and the lr decay consistent
        cfg.train_cfg.max_epochs = overrides['max_epochs']
        cfg.param_scheduler[-1].end = overrides['max_epochs']
    return cfg


@torch.no_grad()
def evaluate(model, dataloader):
    """GRES metrics over ``dataloader`` and over its multi-target samples (>= 2 GT instances),
    counted by :class:`GRESMetric` itself."""
    from mmrefer.evaluation.metrics import GRESMetric
    model.eval()
    metric, n_tgt = GRESMetric(), []
    for data in dataloader:
        samples = model.test_step(data)
        n_tgt += [len(ds.gt_instances) for ds in samples]
        metric.process(data, samples)
    multi = np.array(n_tgt) >= 2
    res = dict(all=GRESMetric.metrics_of(metric.results), num_samples=len(metric.results),
               num_multi=int(multi.sum()))
    if multi.any():
        res['multi'] = GRESMetric.metrics_of(metric.results, multi)
    return res


def run_variant(name, args):
    from mmengine.runner import Runner
    overrides = {k: _literal(v) for k, v in (o.split('=', 1) for o in args.cfg_options)}
    overrides.update(VARIANTS[name])
    cfg = build_cfg(args.config, args.data_root, osp.join(args.work_dir, name), overrides)
    runner = Runner.from_cfg(cfg)
    t0, c0 = time.time(), time.process_time()
    runner.train()
    train_s, train_cpu = time.time() - t0, time.process_time() - c0
    t0 = time.time()
    res = evaluate(runner.model, runner.test_dataloader)
    res.update(train_seconds=round(train_s, 1), train_cpu_seconds=round(train_cpu, 1),
               eval_seconds=round(time.time() - t0, 1), iters=runner.iter, epochs=runner.epoch,
               threads=torch.get_num_threads())
    return res


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from mmrefer.utils.setup_env import register_all_modules
    register_all_modules()
    if not osp.isfile(osp.join(args.data_root, 'grefcoco', 'grefs(unc).json')):
        from mmrefer.datasets.synthetic import make_synthref
        make_synthref(args.data_root, seed=0)
    results = {}
    for name in args.variants:
        results[name] = run_variant(name, args)
    keys = ('cIoU', 'gIoU', 'N-acc', 'T-acc')
    print('\nvariant      train_cpu_s  ' + '  '.join(f'{k:>7}' for k in keys) +
          '  multi_cIoU  multi_gIoU')
    for name, r in results.items():
        a, m = r['all'], r.get('multi', {})
        print(f'{name:12s} {r["train_cpu_seconds"]:11.1f}  ' +
              '  '.join(f'{a.get(k, float("nan")):7.2f}' for k in keys) +
              f'  {m.get("cIoU", float("nan")):10.2f}  {m.get("gIoU", float("nan")):10.2f}')
    out = args.out or osp.join(args.work_dir, 'result.json')
    os.makedirs(osp.dirname(out) or '.', exist_ok=True)
    with open(out, 'w') as f:
        json.dump(results, f, indent=1)
    print(f'written {out}')
    return results


if __name__ == '__main__':
    main()
