"""Where a model fails on SynthRef: IoU by sentence type and no-target accuracy by cue.

    python tools/analysis_tools/synthref_error_analysis.py CONFIG CHECKPOINT \
        [--data-root data/synthref] [--out errors.json]

Runs the config's test loader (SynthRef val for the quick-start configs) and prints two tables:

* targeted sentences by type (colour + shape, position, size, "X and Y", plural such as
  "all circles"): count, mean IoU, share with IoU < 0.5;
* no-target sentences by what the sentence names and whether the image holds it: e.g.
  ``colour present, shape present`` ("the red circle" with a red square and a blue circle in
  the image) can only be rejected by a model that sees shapes, ``colour absent`` ones by colour
  alone. As in GRESMetric, only the no-target flag counts: an empty mask without the flag is a
  miss, and a flagged targeted sentence scores IoU 0.

It also prints the same tables and the GRES metrics for a *colour-only rule* with perfect masks:
select every shape of the colour(s) the sentence names (every shape when it names none) and flag
no-target when nothing is selected. It shows how far colour alone can go on the split.

Shape comes from each annotation's category, colour from the mean pixel colour inside its mask
(nearest SynthRef palette entry), so the analysis needs only the released files.
"""
import argparse
import json
import os.path as osp
import re
from collections import OrderedDict, defaultdict
from functools import lru_cache, partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

TYPE_ORDER = ('colour + shape', 'position', 'size', 'X and Y', 'plural')


def sentence_type(text: str) -> str:
    """Coarse type of a targeted SynthRef sentence (first matching rule wins)."""
    text = text.lower()
    if ' and ' in text:
        return 'X and Y'
    if re.search(r'\b(all|both|two|every|shapes|circles|squares|triangles)\b', text):
        return 'plural'
    if re.search(r'\b(left|right|top|bottom)\b', text):
        return 'position'
    if re.search(r'\b(small|big)\b', text):
        return 'size'
    return 'colour + shape'


def image_shapes(coco, img_dir: str, img_id: int) -> List[dict]:
    """``[dict(colour, shape, mask)]`` of the shapes of one SynthRef image (clutter skipped);
    ``mask`` is the bool annotation mask at the original image size."""
    import mmcv

    from mmrefer.datasets.synthetic import COLORS, SHAPE_CAT
    from mmrefer.datasets.transforms import decode_ref_mask
    names = {v: k for k, v in SHAPE_CAT.items()}
    info = coco.imgs[img_id]
    img = mmcv.imread(osp.join(img_dir, info['file_name']), channel_order='bgr')
    palette = {k: np.asarray(v, np.float64) for k, v in COLORS.items()}  # BGR, as drawn
    out = []
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=img_id)):
        if ann['category_id'] not in names:
            continue
        mask = decode_ref_mask(ann['segmentation'], info['height'], info['width']).astype(bool)
        if not mask.any():
            continue
        mean = img[mask].astype(np.float64).mean(0)
        colour = min(palette, key=lambda k: np.abs(palette[k] - mean).sum())
        out.append(dict(colour=colour, shape=names[ann['category_id']], mask=mask))
    return out


def _pairs(shapes: Sequence[dict]) -> List[Tuple[str, str]]:
    return [(o['colour'], o['shape']) for o in shapes]


def image_objects(coco, img_dir: str, img_id: int) -> List[Tuple[str, str]]:
    """``[(colour, shape)]`` of the shapes of one SynthRef image (clutter skipped)."""
    return _pairs(image_shapes(coco, img_dir, img_id))


def shapes_reader(coco, img_dir: str) -> Callable[[int], List[dict]]:
    """``img_id -> image_shapes(coco, img_dir, img_id)``, reading each image once."""
    return lru_cache(maxsize=None)(partial(image_shapes, coco, img_dir))


def _words(text: str) -> set:
    return set(re.findall(r'[a-z]+', text.lower()))


def no_target_cue(text: str, objects: Sequence[Tuple[str, str]]) -> str:
    """``'colour X, shape Y'`` with X, Y in {present, absent, -} (- = not named)."""
    from mmrefer.datasets.synthetic import COLORS, PLURAL, SHAPES
    words = _words(text)
    colour = next((c for c in COLORS if c in words), None)
    shape = next((s for s in SHAPES if s in words or PLURAL[s] in words), None)

    def state(name, idx):
        if name is None:
            return '-'
        return 'present' if any(o[idx] == name for o in objects) else 'absent'
    return f'colour {state(colour, 0)}, shape {state(shape, 1)}'


def to_records(gres_records: List[dict], shapes) -> List[dict]:
    """One record ``dict(text, no_target, iou, pred_no_target[, cue])`` per GRES record (as
    :class:`GRESMetric` writes them, with ``text`` and ``img_id`` in their ids), the IoU being
    GRES's per-sample one (:meth:`GRESMetric.per_sample_of`); no-target samples get their cue
    from the image's shapes (``shapes``: a :func:`shapes_reader`)."""
    from mmrefer.evaluation import GRESMetric
    records = []
    for row in GRESMetric.per_sample_of(gres_records):
        rec = dict(text=row['text'], no_target=bool(row['gt_no_target']), iou=float(row['IoU']),
                   pred_no_target=bool(row['pred_no_target']))
        if rec['no_target']:
            rec['cue'] = no_target_cue(row['text'], _pairs(shapes(row['img_id'])))
        records.append(rec)
    return records


def summarize(records: List[dict]) -> Dict[str, OrderedDict]:
    """Records ``dict(text, no_target, iou, pred_no_target, cue)`` -> the two tables."""
    by_type, by_cue = defaultdict(list), defaultdict(list)
    for r in records:
        if r['no_target']:
            by_cue[r['cue']].append(float(r['pred_no_target']))
        else:
            by_type[sentence_type(r['text'])].append(float(r['iou']))
    targeted = OrderedDict()
    for k in TYPE_ORDER:
        if by_type.get(k):
            v = np.asarray(by_type[k])
            targeted[k] = dict(n=int(v.size), mean_iou=round(float(v.mean()) * 100, 1),
                               below_0_5=round(float((v < 0.5).mean()) * 100, 1))
    no_target = OrderedDict(
        (k, dict(n=len(v), acc=round(float(np.mean(v)) * 100, 1)))
        for k, v in sorted(by_cue.items()))
    return dict(targeted=targeted, no_target=no_target)


def collect(model, dataloader, shapes) -> List[dict]:
    """Run ``model.test_step`` over the loader; one record per sentence (:func:`to_records`).

    The per-sample counts and no-target flags are those :class:`GRESMetric` collects (input
    resolution), i.e. exactly what the GRES evaluation counts.
    """
    import torch

    from mmrefer.evaluation import GRESMetric
    metric = GRESMetric()
    model.eval()
    for batch in dataloader:
        with torch.no_grad():
            metric.process(batch, model.test_step(batch))
    return to_records(metric.results, shapes)


def colour_rule_records(dataset, shapes) -> Tuple[List[dict], Dict[str, float]]:
    """Records and GRES metrics of the colour-only rule with perfect masks on ``dataset``.

    The rule's mask is the union of the annotation masks of every shape whose colour the sentence
    names (all shapes when it names no colour); it flags no-target when that union is empty.
    Counted like the model: GRES records (``mask_stats`` of the rule's mask against the union of
    the sample's target masks, at the original size) scored by :meth:`GRESMetric.metrics_of`.
    """
    from mmrefer.datasets.synthetic import COLORS
    from mmrefer.datasets.transforms import decode_ref_mask
    from mmrefer.evaluation import GRESMetric, mask_stats
    gres_records = []
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        h, w = info['height'], info['width']
        colours = [c for c in COLORS if c in _words(info['text'])]
        pred = np.zeros((h, w), bool)
        for o in shapes(info['img_id']):
            if not colours or o['colour'] in colours:
                pred |= o['mask']
        gt = np.zeros((h, w), bool)
        for inst in info.get('instances', []):
            gt |= decode_ref_mask(inst['mask'], h, w).astype(bool)
        counts = {k: int(v[0]) for k, v in mask_stats([pred], [gt]).items()}
        gres_records.append(dict(ids=dict(text=info['text'], img_id=info['img_id']),
                                 pred_nt=not pred.any(), gt_nt=bool(info['no_target']),
                                 **counts))
    metrics = {k: round(float(v), 2) for k, v in GRESMetric.metrics_of(gres_records).items()}
    return to_records(gres_records, shapes), metrics


def format_tables(tables: Dict[str, OrderedDict]) -> str:
    lines = ['| targeted sentence type | n | mean IoU | IoU < 0.5 (%) |', '| --- | --- | --- | --- |']
    lines += [f"| {k} | {v['n']} | {v['mean_iou']} | {v['below_0_5']} |"
              for k, v in tables['targeted'].items()]
    lines += ['', '| no-target sentence (what it names / in the image) | n | accuracy (%) |',
              '| --- | --- | --- |']
    lines += [f"| {k} | {v['n']} | {v['acc']} |" for k, v in tables['no_target'].items()]
    return '\n'.join(lines)


def parse_args(argv: Optional[List[str]] = None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--data-root', default=None,
                   help='SynthRef folder (default: the config test loader data_root)')
    p.add_argument('--out', default=None, help='write the tables and records as JSON')
    p.add_argument('--work-dir', default='work_dirs/synthref_error_analysis')
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None):
    args = parse_args(argv)
    from mmengine.config import Config
    from mmengine.runner import Runner

    from mmrefer.datasets import load_coco_instances
    from mmrefer.datasets.synthetic import point_config_at_synthref
    from mmrefer.utils import register_all_modules
    register_all_modules()
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
    cfg = Config.fromfile(args.config)
    if args.data_root is not None:
        point_config_at_synthref(cfg, args.data_root)
    ds_cfg = cfg.test_dataloader.dataset
    root = ds_cfg.data_root
    ann = osp.join(root, ds_cfg.get('ann_file', 'grefcoco/instances.json'))
    if not osp.isfile(ann):
        raise FileNotFoundError(f'{ann} not found: the analysis needs a SynthRef folder '
                                '(tools/dataset_converters/make_synthref.py)')
    img_dir = osp.join(root, ds_cfg.get('data_prefix', {}).get('img_path', 'images/train2014'))
    cfg.load_from = args.checkpoint
    cfg.work_dir = args.work_dir
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    runner.load_or_resume()
    shapes = shapes_reader(load_coco_instances(ann), img_dir)
    records = collect(runner.model, runner.test_dataloader, shapes)
    tables = summarize(records)
    print(format_tables(tables))
    rule_records, rule_metrics = colour_rule_records(runner.test_dataloader.dataset, shapes)
    rule_tables = summarize(rule_records)
    print('\nReference: the colour-only rule with perfect masks '
          f'({", ".join(f"{k} {v}" for k, v in rule_metrics.items())})')
    print(format_tables(rule_tables))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(tables=tables, records=records,
                           colour_rule=dict(metrics=rule_metrics, tables=rule_tables)),
                      f, indent=1)
    return dict(tables=tables, colour_rule=dict(metrics=rule_metrics, tables=rule_tables))


if __name__ == '__main__':
    main()
