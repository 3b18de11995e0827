"""Helpers of the quick start (tools/quickstart.sh).

    python tools/analysis_tools/quickstart_report.py demo --config CFG --weights CKPT \
        --data-root data/synthref --out-dir DIR
    python tools/analysis_tools/quickstart_report.py summary --out work_dirs/quickstart \
        --models latentvg instalign

``demo`` picks SynthRef gRefCOCO val sentences (one single-target, one multi-target, one
no-target) and draws the model's answers with demo/image_demo.py's code path;
``summary`` prints the metrics ``mim test`` wrote for each model as one table.
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys


def pick_demo_samples(data_root):
    """One single-, one multi- and one no-target val sentence of SynthRef's gRefCOCO split."""
    from mmrefer.datasets import GRefCOCODataset
    ds = GRefCOCODataset(
        data_root=data_root, ann_file='grefcoco/instances.json',
        split_file='grefcoco/grefs(unc).json', split='val',
        data_prefix=dict(img_path='images/train2014/'), pipeline=[], lazy_init=False)
    wanted = {'single': None, 'multi': None, 'none': None}
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        n = len(info['instances'])
        kind = 'none' if info['no_target'] else ('multi' if n > 1 else 'single')
        if wanted[kind] is None:
            wanted[kind] = (info['img_path'], info['text'])
        if all(wanted.values()):
            break
    return {k: v for k, v in wanted.items() if v is not None}


def cmd_demo(args):
    demo = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'demo',
                    'image_demo.py')
    os.makedirs(args.out_dir, exist_ok=True)
    for kind, (img, text) in pick_demo_samples(args.data_root).items():
        out = osp.join(args.out_dir, kind)
        subprocess.run([
            sys.executable, demo, img, text, args.config, '--weights', args.weights,
            '--out-dir', out, '--show-extras'
        ], check=True)
        print(f'[quickstart] {kind}-target demo: "{text}" -> {out}')


def latest_metrics(test_dir):
    files = sorted(glob.glob(osp.join(test_dir, '*', '*.json')))
    return json.load(open(files[-1])) if files else None


def cmd_summary(args):
    rows = []
    for m in args.models:
        merged = {}
        for test in ('test_gres', 'test_ris'):
            metrics = latest_metrics(osp.join(args.out, m, test))
            if metrics is None:
                print(f'[quickstart] no test metrics for {m} under {args.out}/{m}/{test}')
                continue
            # keep the metric prefix (gres/, ris/, rec/): each task's numbers stay apart
            merged.update({k: v for k, v in metrics.items()
                           if isinstance(v, (int, float)) and k not in ('time', 'data_time')})
        if merged:
            rows.append((m, merged))
    if not rows:
        sys.exit(1)
    keys = []
    for _, metrics in rows:
        keys += [k for k in metrics if k not in keys]
    width = max(len(k) for k in keys) + 2
    print('metric'.ljust(width) + ''.join(m.rjust(12) for m, _ in rows))
    for k in keys:
        print(k.ljust(width) + ''.join(
            (f'{metrics[k]:.2f}' if k in metrics else '-').rjust(12) for _, metrics in rows))
    print(f'\npictures: {args.out}/demo/*/ and {args.out}/*/test_gres/*/vis/')


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='cmd', required=True)
    d = sub.add_parser('demo')
    d.add_argument('--config', required=True)
    d.add_argument('--weights', required=True)
    d.add_argument('--data-root', required=True)
    d.add_argument('--out-dir', required=True)
    s = sub.add_parser('summary')
    s.add_argument('--out', required=True)
    s.add_argument('--models', nargs='+', required=True)
    args = parser.parse_args()
    {'demo': cmd_demo, 'summary': cmd_summary}[args.cmd](args)


if __name__ == '__main__':
    main()
