"""Numerical guards: losses and their gradients stay finite on degenerate batches, for both
quick-start models (configs/quickstart/{latentvg,instalign}_tiny_synthref.py):

* ``empty_masks``: targeted samples whose GT masks are all zero (a target that vanished when
  resized, or a zero-area annotation that slipped through);
* ``no_target_only``: a batch of gRefCOCO no-target samples only (no GT instance at all);
* ``all_pad_text``: every text token masked out (``attention_mask`` all 0 / ``input_ids`` all
  ``<pad>``).

Inference on the all-padding batch must give finite scores too. The metric side (U = 0,
all-no-target splits) is covered in tests/evaluation/test_eval_functional_masks.py
(``test_ris_all_unions_empty_and_errors``, ``test_gres_all_no_target_split``,
``test_gres_targeted_union_zero_scores_zero``, ``test_refzom_edge_groups``) and
tests/evaluation/test_eval_rec_metrics.py (``test_rec_degenerate_and_errors``); the one case
they lack, the metric *class* fed an all-no-target split, is checked here.
"""
import copy
import os.path as osp

import numpy as np
import pytest
import torch

from mmrefer.utils import register_all_modules

register_all_modules()

ROOT = osp.join(osp.dirname(__file__), '..', '..')
CONFIGS = {m: osp.join(ROOT, 'configs', 'quickstart', f'{m}_tiny_synthref.py')
           for m in ('latentvg', 'instalign')}
BATCH = 3


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _cfg(method, synthref_root, spm, roberta_dir):
    from mmengine.config import Config
    cfg = Config.fromfile(CONFIGS[method])
    if method == 'latentvg':
        cfg.model.tokenizer.spm_path = spm
    else:
        cfg.model.text_encoder.tokenizer_dir = roberta_dir
    cfg.train_dataloader.dataset.data_root = str(synthref_root) + '/'
    cfg.train_dataloader.dataset.split = 'val'
    return cfg


@pytest.fixture(scope='module', params=sorted(CONFIGS))
def setup(request, synthref_root, synthref_beit3_spm, synthref_roberta_dir):
    """(method, model, dataset) with the model in train mode."""
    from mmrefer.registry import DATASETS, MODELS
    method = request.param
    cfg = _cfg(method, synthref_root, synthref_beit3_spm, synthref_roberta_dir)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    ds = DATASETS.build(cfg.train_dataloader.dataset)
    return method, model, ds


def _batch(model, ds, want_no_target):
    """``BATCH`` packed samples (targeted or no-target), through the model's preprocessor."""
    idx = [i for i in range(len(ds)) if ds.get_data_info(i)['no_target'] == want_no_target]
    assert len(idx) >= BATCH, 'SynthRef val lacks such samples'
    data = [ds[i] for i in idx[:BATCH]]
    data = dict(inputs=[d['inputs'] for d in data], data_samples=[d['data_samples'] for d in data])
    out = model.data_preprocessor(data, training=True)
    return out['inputs'], out['data_samples']


def _empty_masks(samples):
    for s in samples:
        masks = s.gt_instances.masks  # a device tensor after RefDataPreprocessor
        assert len(masks) > 0 and not s.metainfo['no_target']
        s.gt_instances.masks = torch.zeros_like(masks)
        s.gt_merged_mask.data = torch.zeros_like(s.gt_merged_mask.data)
    return samples


def _all_pad_text(samples, model):
    if hasattr(model, 'text_encoder'):  # InstAlign: RoBERTa ids
        n, pad = model.text_encoder.max_length, model.text_encoder.model.config.pad_token_id
    else:  # Latent-VG: BEiT-3 ids
        n, pad = model.tokenizer.max_length, model.tokenizer.pad_token_id
    for s in samples:
        s.set_metainfo(dict(input_ids=np.full(n, pad, np.int64),
                            attention_mask=np.zeros(n, np.int64)))
    return samples


def _check_finite_loss_and_grads(model, inputs, samples):
    model.train()
    model.zero_grad(set_to_none=True)
    losses = model.loss(inputs, samples)
    parsed, log_vars = model.parse_losses(losses)
    assert torch.isfinite(parsed), log_vars
    for k, v in losses.items():
        vals = v if isinstance(v, (list, tuple)) else [v]
        assert all(torch.isfinite(x).all() for x in vals), (k, v)
    parsed.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads, 'no gradient reached any parameter'
    bad = [n for n, g in grads.items() if not torch.isfinite(g).all()]
    assert not bad, f'non-finite gradients in {bad[:5]}'
    return losses


@pytest.mark.parametrize('case', ['empty_masks', 'no_target_only', 'all_pad_text'])
def test_losses_and_gradients_stay_finite(case, setup):
    method, model, ds = setup
    inputs, samples = _batch(model, ds, want_no_target=(case == 'no_target_only'))
    if case == 'empty_masks':
        samples = _empty_masks(samples)
    elif case == 'all_pad_text':
        samples = _all_pad_text(samples, model)
    else:
        assert all(len(s.gt_instances) == 0 and s.gt_merged_mask.data.sum() == 0 for s in samples)
    losses = _check_finite_loss_and_grads(model, inputs, samples)
    assert len(losses) > 0


def test_predict_with_all_pad_text_is_finite(setup):
    method, model, ds = setup
    inputs, samples = _batch(model, ds, want_no_target=False)
    samples = _all_pad_text(samples, model)
    model.eval()
    with torch.no_grad():
        out = model.predict(inputs, copy.deepcopy(samples))
    for s in out:
        assert isinstance(s.pred_no_target, bool)
        assert np.isfinite(float(s.pred_score))
        assert torch.isfinite(torch.as_tensor(s.pred_box, dtype=torch.float)).all()
        assert s.pred_mask.dtype == torch.bool


def test_metric_class_on_an_all_no_target_split():
    """GRESMetric (the class, through process/evaluate) over a split without any targeted
    sample. Hand count: 3 no-target samples, 2 flagged no-target with an empty mask (IoU 1 each
    for gIoU), 1 missed with a 4-pixel false positive (I = 0, U = 4). cIoU = 0/4 = 0,
    gIoU = N-acc = 2/3; T-acc and Pr@x have no targeted sample: NaN (undefined, as in
    tests/evaluation/test_eval_functional_masks.py::test_gres_all_no_target_split)."""
    import math

    from mmdet.structures import DetDataSample
    from mmengine.structures import PixelData

    from mmrefer.registry import METRICS
    metric = METRICS.build(dict(type='GRESMetric'))
    metric.dataset_meta = dict(dataset_name='synthref')
    samples = []
    for i, flag in enumerate([True, True, False]):
        s = DetDataSample(metainfo=dict(img_id=i, ref_id=i, sent_id=0, no_target=True,
                                        source='grefcoco', img_shape=(4, 4), ori_shape=(4, 4)))
        s.gt_merged_mask = PixelData(data=torch.zeros(1, 4, 4, dtype=torch.uint8))
        s.pred_mask = torch.zeros(4, 4, dtype=torch.bool) if flag else torch.eye(4).bool()
        s.pred_no_target = flag
        samples.append(s.to_dict())
    metric.process({}, samples)
    vals = {k.split('/')[-1]: v for k, v in metric.evaluate(len(samples)).items()}
    assert vals['cIoU'] == 0.0
    assert vals['gIoU'] == pytest.approx(200 / 3)
    assert vals['N-acc'] == pytest.approx(200 / 3)
    for k in ('T-acc', 'Pr@0.7', 'Pr@0.8', 'Pr@0.9'):
        assert math.isnan(vals[k]), (k, vals)
