"""Metric classes through mmengine's Evaluator (data samples -> dicts), their records and dumps,
against the independent loop references of the published scripts (refer_eval_reference.py)."""
import json
import pickle

import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.evaluator import Evaluator
from mmengine.structures import PixelData

from refer_eval_reference import (_iu, assert_same, dmmi_reference, lavt_reference,
                                  rela_per_sample, rela_reference)

from mmrefer.evaluation.functional import rec_metrics
from mmrefer.evaluation.metrics import GRESMetric, RECMetric, RefZOMMetric, RISMetric
from mmrefer.registry import METRICS


def make_sample(idx, pred, gt, pred_nt=False, gt_nt=False, source='grefcoco', pred_box=None,
                gt_box=None, **meta):
    pred = torch.as_tensor(np.asarray(pred)).bool()
    h, w = pred.shape
    metainfo = dict(sample_idx=idx, img_id=1000 + idx, ref_id=2000 + idx, sent_id=3000 + idx,
                    text=f'sentence {idx}', source=source, no_target=bool(gt_nt),
                    img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0), letterbox=None)
    metainfo.update(meta)
    ds = DetDataSample(metainfo=metainfo)
    ds.pred_mask = pred
    ds.pred_no_target = bool(pred_nt)
    ds.gt_merged_mask = PixelData(data=torch.as_tensor(np.asarray(gt), dtype=torch.uint8)[None])
    ds.pred_box = torch.as_tensor(pred_box if pred_box is not None else [0., 0., 1., 1.])
    ds.gt_ref_bbox = torch.as_tensor(gt_box if gt_box is not None else [0., 0., 1., 1.])
    return ds


def random_samples(seed, n=30):
    rng = np.random.default_rng(seed)
    samples, preds, gts, pnt, gnt = [], [], [], [], []
    for i in range(n):
        h, w = rng.integers(2, 7, size=2)
        gt_nt = bool(rng.random() < 0.3)
        pred_nt = bool(rng.random() < 0.3)
        gt = (rng.random((h, w)) < 0.5) & (not gt_nt)
        pred = rng.random((h, w)) < rng.random()
        if pred_nt and rng.random() < 0.5:
            pred[:] = False
        samples.append(make_sample(i, pred, gt, pred_nt, gt_nt,
                                   source='zero' if gt_nt else 'one'))
        preds.append(pred), gts.append(gt), pnt.append(pred_nt), gnt.append(gt_nt)
    return samples, preds, gts, pnt, gnt


def evaluate(metric, samples, batch=4):
    evaluator = Evaluator([metric])
    for i in range(0, len(samples), batch):
        evaluator.process(data_samples=samples[i:i + batch], data_batch=None)
    return evaluator.evaluate(len(samples))


def strip(results, prefix):
    assert all(k.startswith(prefix + '/') for k in results), results
    return {k[len(prefix) + 1:]: v for k, v in results.items()}


def same(a, b):
    assert set(a) == set(b)
    for k in a:
        assert (np.isnan(a[k]) and np.isnan(b[k])) or a[k] == b[k], (k, a[k], b[k])


@pytest.mark.parametrize('seed', [0, 1])
def test_class_path_equals_the_reference_scripts(seed):
    samples, preds, gts, pnt, gnt = random_samples(seed)
    assert_same(strip(evaluate(GRESMetric(), samples), 'gres'),
                rela_reference(preds, gts, pnt, gnt))
    assert_same(strip(evaluate(RISMetric(), samples), 'ris'), lavt_reference(preds, gts))
    assert_same(strip(evaluate(RefZOMMetric(), samples), 'refzom'),
                dmmi_reference(preds, gts, gnt))


def test_registry_and_prefix_and_bad_args():
    metric = METRICS.build(dict(type='GRESMetric', prefix='val_gres'))
    assert isinstance(metric, GRESMetric) and metric.prefix == 'val_gres'
    for name in ('RISMetric', 'RECMetric', 'RefZOMMetric'):
        assert METRICS.get(name) is not None
    with pytest.raises(ValueError, match='eval_resolution'):
        RISMetric(eval_resolution='480')
    with pytest.raises(ValueError, match='dump_per_sample'):
        GRESMetric(dump_per_sample='out.csv')


def test_results_hold_counts_not_masks():
    metric = GRESMetric()
    metric.process(None, [make_sample(0, [[1, 1], [0, 0]], [[1, 0], [0, 0]]).to_dict()])
    rec = metric.results[0]
    assert rec['inter'] == 1 and rec['union'] == 2 and rec['pred_area'] == 2
    assert rec['ids'] == dict(sample_idx=0, img_id=1000, ref_id=2000, sent_id=3000,
                              source='grefcoco', text='sentence 0')
    assert not any(isinstance(v, torch.Tensor) for v in rec.values())


def collect(metric, samples):
    """``metric.results`` after processing ``samples`` (what tools read)."""
    metric.process(None, [s.to_dict() for s in samples])
    return metric.results


def test_metrics_of_subsets_equal_the_reference_on_the_subset():
    """Public API over records: a subset (bool mask or indices) is scored exactly as the
    reference scores those samples alone; the whole set as compute_metrics does."""
    samples, preds, gts, pnt, gnt = random_samples(5, n=20)
    records = collect(GRESMetric(), samples)
    zero = np.array(gnt)
    sub = np.flatnonzero(~zero)
    for select in (~zero, sub):
        assert_same(GRESMetric.metrics_of(records, select),
                    rela_reference([preds[i] for i in sub], [gts[i] for i in sub],
                                   [pnt[i] for i in sub], [False] * len(sub)))
    same(GRESMetric.metrics_of(records), strip(evaluate(GRESMetric(), samples), 'gres'))
    ris = collect(RISMetric(), samples)
    assert_same(RISMetric.metrics_of(ris, [0, 3, 4]),
                lavt_reference([preds[i] for i in (0, 3, 4)], [gts[i] for i in (0, 3, 4)]))
    cols = GRESMetric.columns(records, sub)
    assert list(cols) == ['inter', 'union', 'pred_nt', 'gt_nt']
    assert cols['inter'].tolist() == [_iu(preds[i], gts[i])[0] for i in sub]
    per = rela_per_sample(preds, gts, pnt, gnt)
    rows = GRESMetric.per_sample_of(records)
    assert [r['IoU'] for r in rows] == [r['IoU'] for r in per]
    assert [r['outcome'] for r in rows] == [r['outcome'] for r in per]
    assert [r['sent_id'] for r in rows] == [3000 + i for i in range(20)]
    with pytest.raises(ValueError, match=r'select mask has shape \(3,\)'):
        GRESMetric.metrics_of(records, np.ones(3, bool))
    with pytest.raises(KeyError, match="lack \\['pred_nt', 'gt_nt'\\].*GRESMetric.process"):
        GRESMetric.metrics_of(ris)
    with pytest.raises(ValueError, match='no per-sample records'):
        RISMetric.metrics_of([])


def test_gres_flagged_sample_union_uses_ungated_mask():
    """ReLA keeps the segmentation of a targeted sample wrongly flagged no-target: I = 0 and
    U = |pred U gt|. Heads clear pred_mask and keep pred_mask_ungated, which the metric counts."""
    gt = np.zeros((4, 5), bool)
    gt[0, :3] = True                                          # |gt| = 3
    seg = np.zeros((4, 5), bool)
    seg[0, 2:] = True                                         # |seg U gt| = 5
    fp = make_sample(0, np.zeros((4, 5), bool), gt, pred_nt=True)
    fp.pred_mask_ungated = torch.as_tensor(seg)
    tn = make_sample(1, gt, gt)                               # I = U = 3
    res = strip(evaluate(GRESMetric(), [fp, tn]), 'gres')
    assert res['cIoU'] == pytest.approx(100 * 3 / (5 + 3))
    assert res['gIoU'] == pytest.approx(50.0) and res['T-acc'] == 0.0
    rela = rela_reference([seg, gt], [gt, gt], [True, False], [False, False])
    assert res == pytest.approx(rela, nan_ok=True)
    # no ungated mask (a model that never clears): the flagged pred_mask itself is counted
    fp2 = make_sample(0, seg, gt, pred_nt=True)
    assert strip(evaluate(GRESMetric(), [fp2, tn]), 'gres') == pytest.approx(rela, nan_ok=True)


def test_refzom_zero_samples():
    """DMMI: a zero sample is right when pred_mask is empty, whatever the flag says; without the
    no_target metainfo the zero group comes from source == 'zero'."""
    z = np.zeros((2, 2), bool)
    one = np.array([[1, 0], [0, 0]], bool)
    samples = [make_sample(0, one, z, pred_nt=True, gt_nt=True, source='zero'),
               make_sample(1, z, z, pred_nt=False, gt_nt=True, source='zero'),
               make_sample(2, one, one, source='one')]
    res = strip(evaluate(RefZOMMetric(), samples), 'refzom')
    assert res['Acc'] == 50.0 and res['mIoU'] == 100.0
    d = [s.to_dict() for s in samples]
    for x in d:
        del x['no_target']
    metric = RefZOMMetric()
    metric.process(None, d)
    assert [r['is_zero'] for r in metric.results] == [True, True, False]


def test_missing_fields_raise_clear_errors():
    d = make_sample(0, [[1]], [[1]]).to_dict()
    del d['pred_no_target']
    with pytest.raises(KeyError, match="pred_no_target"):
        GRESMetric().process(None, [d])
    with pytest.raises(KeyError, match='keep_ori_gt'):
        RISMetric(eval_resolution='original').process(None, [make_sample(0, [[1]], [[1]])])
    bad = make_sample(0, [[1, 0]], [[1]]).to_dict()
    with pytest.raises(ValueError, match='differs from gt mask'):
        RISMetric().process(None, [bad])


def test_original_resolution_masks():
    """Input 4x4 predictions map back to 2x2 originals (stretch) and to 2x4 (letterbox)."""
    p2 = np.array([[1, 0], [1, 1]], bool)
    g2 = np.array([[1, 1], [0, 1]], bool)
    s0 = make_sample(0, np.kron(p2, np.ones((2, 2))), np.zeros((4, 4)), ori_shape=(2, 2),
                     scale_factor=(2.0, 2.0))
    s0.ori_gt_merged_mask = PixelData(data=torch.from_numpy(g2)[None].to(torch.uint8))
    # letterbox: original 2x4 at scale 1, padded by one row on top and bottom
    p_lb = np.array([[1, 1, 0, 0], [0, 0, 0, 1]], bool)
    g_lb = np.array([[1, 0, 0, 0], [0, 0, 0, 1]], bool)
    s1 = make_sample(1, np.pad(p_lb, ((1, 1), (0, 0))), np.zeros((4, 4)), ori_shape=(2, 4),
                     letterbox=dict(pad=(0, 1), scale=1.0))
    s1.ori_gt_merged_mask = PixelData(data=torch.from_numpy(g_lb)[None])
    res = strip(evaluate(RISMetric(eval_resolution='original'), [s0, s1]), 'ris')
    assert_same(res, lavt_reference([p2, p_lb], [g2, g_lb]))
    assert res['oIoU'] == pytest.approx(100 * (2 + 2) / (4 + 3))


def prob_sample(idx, prob, gt_ori, pred_nt=False, gt_nt=False, thr=0.5, ungated=True):
    """A 1 x len(prob) input mapped back (x2 along x) to a 1 x 2len(prob) original, with the
    head's probability, its threshold and the contract's gating of pred_mask."""
    prob = torch.tensor([prob], dtype=torch.float32)
    n = prob.shape[1]
    s = make_sample(idx, prob > thr, np.zeros((1, n)), pred_nt=pred_nt, gt_nt=gt_nt,
                    ori_shape=(1, 2 * n), scale_factor=(2.0, 1.0))
    s.pred_prob, s.pred_mask_thr = prob, thr
    if pred_nt:
        if ungated:
            s.pred_mask_ungated = s.pred_mask
        s.pred_mask = torch.zeros_like(s.pred_mask)
    s.ori_gt_merged_mask = PixelData(data=torch.tensor([gt_ori], dtype=torch.uint8)[None])
    return s


def test_original_resolution_from_the_probability():
    """prob [0.45, 0.9] -> bilinear [0.45, 0.5625, 0.7875, 0.9] -> [0, 1, 1, 1] at thr 0.5; the
    binary mask [0, 1] would give [0, 0.25, 0.75, 1] -> [0, 0, 1, 1]."""
    gt = [0, 1, 1, 1]
    s = prob_sample(0, [0.45, 0.9], gt)
    assert strip(evaluate(RISMetric(eval_resolution='original'), [s]), 'ris')['mIoU'] == 100.0
    s.pred_mask_thr = 0.6  # the head's threshold is used: [0, 0, 1, 1]
    res = strip(evaluate(RISMetric(eval_resolution='original'), [s]), 'ris')
    assert res['mIoU'] == pytest.approx(100 * 2 / 3)
    old = prob_sample(0, [0.45, 0.9], gt)
    del old.pred_prob, old.pred_mask_thr  # a model without pred_prob: its bool mask
    res = strip(evaluate(RISMetric(eval_resolution='original'), [old]), 'ris')
    assert res['mIoU'] == pytest.approx(100 * 2 / 3)
    # 'input' is unchanged: pred_mask against gt_merged_mask
    s.gt_merged_mask = PixelData(data=torch.tensor([[[0, 1]]], dtype=torch.uint8))
    assert strip(evaluate(RISMetric(), [s]), 'ris')['mIoU'] == 100.0


def test_original_resolution_gating_and_fp_union():
    """A targeted sample wrongly flagged no-target: U = |ungated U gt| with the ungated mask from
    the probability (ReLA); without pred_mask_ungated the flagged pred_mask is gated (empty)."""
    gt = [1, 1, 0, 0]
    fp = prob_sample(0, [0.45, 0.9], gt, pred_nt=True)       # ungated [0, 1, 1, 1]
    metric = GRESMetric(eval_resolution='original')
    metric.process(None, [fp.to_dict()])
    r = metric.results[0]  # raw counts; the GRES arithmetic scores an FP with I = 0
    assert (r['inter'], r['union'], r['pred_area'], r['pred_nt']) == (1, 4, 3, True)
    # no pred_mask_ungated (only pred_prob): the flagged pred_mask is gated from the probability
    fp2 = prob_sample(0, [0.45, 0.9], gt, pred_nt=True, ungated=False)
    metric = GRESMetric(eval_resolution='original')
    metric.process(None, [fp2.to_dict()])
    assert (metric.results[0]['union'], metric.results[0]['pred_area']) == (2, 0)
    metric = RefZOMMetric(eval_resolution='original')
    metric.process(None, [fp2.to_dict()])
    assert metric.results[0]['pred_empty']


def test_rec_metric_input_and_original():
    s0 = make_sample(0, [[1]], [[1]], pred_box=[0., 0., 8., 8.], gt_box=[0., 0., 8., 4.],
                     img_shape=(8, 8), ori_shape=(4, 4), scale_factor=(2.0, 2.0))
    s1 = make_sample(1, [[1]], [[1]], pred_box=[0., 0., 4., 4.], gt_box=[4., 4., 8., 8.],
                     img_shape=(8, 8), ori_shape=(4, 4), scale_factor=(2.0, 2.0))
    res = strip(evaluate(RECMetric(), [s0, s1]), 'rec')
    same(res, rec_metrics([[0, 0, 8, 8], [0, 0, 4, 4]], [[0, 0, 8, 4], [4, 4, 8, 8]]))
    assert res['Acc@0.5'] == 50.0
    s0.ori_gt_ref_bbox = torch.tensor([0., 0., 4., 1.])   # pred maps to [0, 0, 4, 4] -> 0.25
    s1.ori_gt_ref_bbox = torch.tensor([0., 0., 2., 2.])   # pred maps to [0, 0, 2, 2] -> 1
    res = strip(evaluate(RECMetric(eval_resolution='original'), [s0, s1]), 'rec')
    assert res == {'Acc@0.5': 50.0, 'box_mIoU': pytest.approx(62.5)}


def test_rec_metric_original_maps_boxes_in_float64():
    """427x324 stretched to 480x480 (non-integer scales): [0, 0, 45, 480] maps back to exactly
    [0, 0, 30.375, 427], half of which the GT covers: IoU exactly 0.5 passes Acc@0.5 (>=). In
    float32 the mapped x2 is 30.375002 and the IoU falls just below 0.5."""
    pred_box = torch.tensor([0., 0., 45., 480.], dtype=torch.float64)
    s = make_sample(0, [[1]], [[1]], pred_box=pred_box, img_shape=(480, 480), ori_shape=(427, 324),
                    scale_factor=(480 / 324, 480 / 427))
    s.ori_gt_ref_bbox = torch.tensor([0., 0., 15.1875, 427.], dtype=torch.float64)
    res = strip(evaluate(RECMetric(eval_resolution='original'), [s]), 'rec')
    assert res == {'Acc@0.5': 100.0, 'box_mIoU': 50.0}
    # random geometries: the same IoU as mapping the box by hand in float64
    rng = np.random.default_rng(0)
    for i in range(20):
        h0, w0 = (int(v) for v in rng.integers(200, 641, size=2))
        x, y = rng.integers(0, 400, size=2)
        pred = np.array([x, y, x + rng.integers(20, 80), y + rng.integers(20, 80)], np.float64)
        mapped = np.minimum(pred / ([480 / w0, 480 / h0] * 2), [w0, h0] * 2)
        gt = mapped + rng.normal(scale=3, size=4)
        s = make_sample(i, [[1]], [[1]], pred_box=torch.from_numpy(pred), img_shape=(480, 480),
                        ori_shape=(h0, w0), scale_factor=(480 / w0, 480 / h0))
        s.ori_gt_ref_bbox = torch.from_numpy(gt)
        res = strip(evaluate(RECMetric(eval_resolution='original'), [s]), 'rec')
        assert res['box_mIoU'] == rec_metrics([mapped], [gt])['box_mIoU']


@pytest.mark.parametrize('flag', [0.3, 'False', np.float32(0.5), torch.tensor(2)])
def test_no_target_flag_must_be_boolean(flag):
    """A no-target score or a string is refused, naming the field; never read as "non-zero"."""
    s = make_sample(0, [[1]], [[1]])
    s.pred_no_target = flag
    with pytest.raises(ValueError, match='pred_no_target must be a boolean flag'):
        evaluate(GRESMetric(), [s])
    s = make_sample(0, [[1]], [[1]])
    s.set_metainfo(dict(no_target=flag))
    with pytest.raises(ValueError, match='^no_target must be a boolean flag'):
        evaluate(GRESMetric(), [s])
    for ok, expected in ((np.bool_(True), 0.0), (torch.tensor([1]), 0.0), (0, 100.0)):
        s = make_sample(0, [[1]], [[1]])
        s.pred_no_target = ok
        assert strip(evaluate(GRESMetric(), [s]), 'gres')['gIoU'] == expected


@pytest.mark.parametrize('ext', ['json', 'pkl'])
def test_gres_dump_per_sample(tmp_path, ext):
    samples, preds, gts, pnt, gnt = random_samples(3, n=9)
    path = tmp_path / 'sub' / f'gres.{ext}'
    res = strip(evaluate(GRESMetric(dump_per_sample=str(path)), samples), 'gres')
    if ext == 'json':
        payload = json.loads(path.read_text())
    else:
        payload = pickle.loads(path.read_bytes())
    assert payload['metric'] == 'GRESMetric' and payload['eval_resolution'] == 'input'
    same(payload['summary'], res)
    per = rela_per_sample(preds, gts, pnt, gnt)
    rows = payload['samples']
    assert [r['sample_idx'] for r in rows] == list(range(9))
    assert [r['sent_id'] for r in rows] == [3000 + i for i in range(9)]
    for key in ('I', 'U', 'IoU', 'outcome'):
        assert [r[key] for r in rows] == [r[key] for r in per], key
    assert [r['gt_no_target'] for r in rows] == gnt
    assert [r['pred_area'] for r in rows] == [int(np.count_nonzero(p)) for p in preds]
    assert [r['gt_area'] for r in rows] == [int(np.count_nonzero(g)) for g in gts]


def test_ris_refzom_rec_dump(tmp_path):
    samples, preds, gts, pnt, gnt = random_samples(4, n=5)
    iu = [_iu(p, g) for p, g in zip(preds, gts)]
    evaluate(RISMetric(dump_per_sample=str(tmp_path / 'ris.json')), samples)
    rows = json.loads((tmp_path / 'ris.json').read_text())['samples']
    assert [(r['I'], r['U']) for r in rows] == iu
    evaluate(RefZOMMetric(dump_per_sample=str(tmp_path / 'zom.json')), samples)
    rows = json.loads((tmp_path / 'zom.json').read_text())['samples']
    assert [r['is_zero'] for r in rows] == gnt
    assert [r['correct_zero'] for r in rows] == [
        z and not np.any(p) for z, p in zip(gnt, preds)]
    evaluate(RECMetric(dump_per_sample=str(tmp_path / 'rec.json')), samples)
    rows = json.loads((tmp_path / 'rec.json').read_text())['samples']
    assert rows[0]['pred_box'] == [0.0, 0.0, 1.0, 1.0] and rows[0]['IoU'] == 1.0
