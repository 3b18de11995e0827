"""ONNX export of the tiny quick-start models, checked by onnxruntime against PyTorch, and the
onnxruntime predictor against RefInferencer (tools/deployment/pytorch2onnx.py,
mmrefer.models.deployment, mmrefer.apis.ORTRefPredictor).

Variants: the tiny Latent-VG GRES config (empty-token no-target head), the same model as a
RIS/REC model (``model.head.no_target_predictor=None``) and the tiny InstAlign. Each is
exported once per module from a saved random-init checkpoint at an example batch of 2; the graph
is then run at batch 1 and 3 (dynamic batch axis) on SynthRef val images with their own
sentences.
"""
import json
import os.path as osp
import sys

import numpy as np
import onnxruntime  # noqa: F401  (the tests / deploy extra: missing is an error, not a skip)
import pytest
import torch
from mmengine.runner import save_checkpoint


ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'deployment'))
import pytorch2onnx  # noqa: E402

from mmrefer.apis import ORTRefPredictor, RefInferencer  # noqa: E402
from mmrefer.apis.onnx_predictor import load_sidecar  # noqa: E402
from mmrefer.models.deployment import INPUT_NAMES, RefExportModel, compare_outputs  # noqa: E402

pytestmark = pytest.mark.usefixtures('one_torch_thread')

VARIANTS = {
    'latentvg_gres': ('latentvg_tiny_synthref', {}),
    'latentvg_ris': ('latentvg_tiny_synthref', {'model.head.no_target_predictor': None}),
    'instalign': ('instalign_tiny_synthref', {}),
}


def tokenizer_options(name, root):
    if name.startswith('latentvg'):
        return {'model.tokenizer.spm_path': f'{root}/tokenizers/beit3.spm'}
    return {'model.text_encoder.tokenizer_dir': f'{root}/tokenizers/roberta'}


def val_pairs(root, n_images=3, per_image=2):
    """(image path, sentence) of the first SynthRef gRefCOCO val images, their own sentences
    (no-target sentences included)."""
    refs = json.load(open(osp.join(root, 'grefcoco', 'grefs(unc).json')))
    by_image = {}
    for ref in refs:
        if ref['split'] == 'val':
            by_image.setdefault(ref['file_name'], []).extend(s['sent'] for s in ref['sentences'])
    pairs = []
    for fn in sorted(by_image)[:n_images]:
        path = osp.join(root, 'images', 'train2014', fn)
        pairs += [(path, s) for s in by_image[fn][:per_image]]
    return pairs


@pytest.fixture(scope='module', params=sorted(VARIANTS))
def exported(request, synthref_root, tmp_path_factory):
    """(variant, inferencer with the saved weights, onnx path, export meta)."""
    variant = request.param
    name, extra = VARIANTS[variant]
    root = str(synthref_root)
    opts = dict(tokenizer_options(name, root), **extra)
    tmp = tmp_path_factory.mktemp(f'onnx_{variant}')
    torch.manual_seed(0)
    model = RefInferencer(name, device='cpu', cfg_options=opts).model
    ckpt = str(tmp / 'weights.pth')
    save_checkpoint(dict(state_dict=model.state_dict()), ckpt)
    inferencer = RefInferencer(name, weights=ckpt, device='cpu', batch_size=4, cfg_options=opts)
    onnx = str(tmp / f'{variant}.onnx')
    pairs = val_pairs(root)
    meta = pytorch2onnx.export(name, onnx, weights=ckpt, batch_size=2, cfg_options=opts,
                               images=[p for p, _ in pairs[:2]],
                               sentences=[s for _, s in pairs[:2]], verbose=False)
    return variant, inferencer, onnx, meta


def test_export_writes_graph_and_sidecar(exported):
    variant, inferencer, onnx, meta = exported
    import onnx as onnx_lib
    model = onnx_lib.load(onnx)
    onnx_lib.checker.check_model(model)
    assert [i.name for i in model.graph.input] == list(INPUT_NAMES)
    assert model.opset_import[0].version == 17
    # the batch axis is symbolic, the rest fixed by the config
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in model.graph.input]
    L = 16 if variant.startswith('latentvg') else 20
    assert dims == [['batch', 3, 128, 128], ['batch', L], ['batch', L]]
    side = load_sidecar(onnx)
    assert side == json.load(open(onnx[:-5] + '.json'))
    assert side['input_size'] == [128, 128] and side['text_length'] == L
    assert side['has_no_target'] == (variant != 'latentvg_ris')
    dp = inferencer.cfg.model.data_preprocessor
    assert side['mean'] == pytest.approx(list(dp['mean'])) and side['bgr_to_rgb'] is True
    assert side['std'] == pytest.approx(list(dp['std']))
    expected = (['prob', 'nt_prob', 'expr_maps', 'subject_index'] if variant.startswith('latentvg')
                else ['prob', 'nt_prob', 'inst_masks', 'inst_scores', 'inst_relevance'])
    assert side['output_names'] == [o.name for o in model.graph.output] == expected
    c = meta['check']
    assert c['max_abs_prob_diff'] <= 1e-3 and c['identical_mask_pixels'] >= 0.999


@pytest.mark.parametrize('batch_size', [1, 3])
def test_onnxruntime_matches_pytorch_at_other_batch_sizes(exported, synthref_root, batch_size):
    """Exported at batch 2, run at 1 and 3 on real SynthRef images and sentences."""
    from mmrefer.apis.onnx_predictor import ort_session
    variant, inferencer, onnx, meta = exported
    pairs = val_pairs(str(synthref_root))[-batch_size:]
    inputs = pytorch2onnx.example_batch(inferencer, [p for p, _ in pairs], [s for _, s in pairs])
    assert inputs[0].shape[0] == batch_size
    wrapper = RefExportModel(inferencer.model)
    with torch.no_grad():
        ref = {k: v.numpy() for k, v in zip(wrapper.output_names, wrapper(*inputs))}
    sess = ort_session(onnx, 'cpu', num_threads=1)
    out = dict(zip(wrapper.output_names,
                   sess.run(None, {k: v.numpy() for k, v in zip(INPUT_NAMES, inputs)})))
    c = compare_outputs(ref, out, meta['mask_thr'])
    assert c['max_abs_prob_diff'] <= 1e-3, c
    assert c['identical_mask_pixels'] >= 0.999, c
    assert c['identical_int_outputs'] == 1.0, c
    assert out['prob'].shape == (batch_size, 128, 128)
    if variant == 'latentvg_ris':
        assert not out['nt_prob'].any()  # no no-target head: zeros, ignored by the predictor


def test_ort_predictor_answers_equal_ref_inferencer(exported, synthref_root):
    variant, inferencer, onnx, meta = exported
    predictor = ORTRefPredictor(onnx, batch_size=2, num_threads=1)
    pairs = val_pairs(str(synthref_root))
    ref = inferencer.predict_pairs(pairs)
    got = predictor.predict_pairs(pairs)
    assert len(got) == len(ref) == len(pairs)
    for a, b in zip(ref, got):
        assert b['text'] == a['text'] and b['mask'].shape == a['mask'].shape
        assert (a['mask'] == b['mask']).mean() >= 0.999
        assert a['no_target'] == b['no_target']
        assert np.abs(np.subtract(a['box'], b['box'])).max() <= 1.0
        assert abs(a['score'] - b['score']) <= 1e-3
        assert sorted(a['extras']) == sorted(b['extras'])
        if variant.startswith('latentvg'):
            assert b['extras']['subject_index'] == a['extras']['subject_index']
            assert np.abs(a['extras']['expr_maps'] - b['extras']['expr_maps']).max() <= 1e-3
        else:
            assert b['extras']['aligned_words'] == a['extras']['aligned_words']
            assert np.abs(a['extras']['inst_scores'] - b['extras']['inst_scores']).max() <= 1e-3
        assert ('no_target_score' in b['extras']) == (variant != 'latentvg_ris')
    # the one-image call of RefInferencer, array input in RGB
    path, _ = pairs[0]
    import cv2
    rgb = cv2.imread(path)[..., ::-1]
    sentences = [s for p, s in pairs if p == path]
    for a, b in zip(inferencer(rgb, sentences, channel_order='rgb'),
                    predictor(rgb, sentences, channel_order='rgb')):
        assert (a['mask'] == b['mask']).mean() >= 0.999 and a['no_target'] == b['no_target']


def test_export_cli(synthref_root, tmp_path, capsys, monkeypatch):
    root = str(synthref_root)
    out = str(tmp_path / 'la.onnx')
    opts = [f'model.tokenizer.spm_path={root}/tokenizers/beit3.spm']
    torch.manual_seed(0)
    assert pytorch2onnx.main(['latentvg_tiny_synthref', '--out', out, '--batch-size', '1',
                              '--cfg-options'] + opts) == 0
    printed = capsys.readouterr().out
    assert 'max abs prob diff' in printed and 'identical mask pixels' in printed
    assert osp.isfile(out) and osp.isfile(str(tmp_path / 'la.json'))
    # usage errors: exit status 2, naming the problem
    assert pytorch2onnx.main(['latentvg_tiny_synthref', '--out', out, '--weights',
                              str(tmp_path / 'nope.pth')]) == 2
    assert 'nope.pth' in capsys.readouterr().err
    assert pytorch2onnx.main(['latentvg_tiny_synthref', '--out', str(tmp_path / 'x.bin'),
                              '--cfg-options'] + opts) == 2
    assert '.onnx' in capsys.readouterr().err
    # a failed check leaves the earlier good export in place (the failed one beside it)
    good = open(out, 'rb').read(), open(str(tmp_path / 'la.json')).read()
    monkeypatch.setattr(pytorch2onnx, 'run_check', lambda *a, **k: dict(
        max_abs_prob_diff=0.5, identical_mask_pixels=0.5, identical_int_outputs=1.0))
    assert pytorch2onnx.main(['latentvg_tiny_synthref', '--out', out, '--batch-size', '1',
                              '--cfg-options'] + opts) == 1
    err = capsys.readouterr().err
    assert 'check FAILED' in err and f'{out} is left as it was' in err
    assert osp.isfile(str(tmp_path / 'la.tmp.onnx'))
    assert (open(out, 'rb').read(), open(str(tmp_path / 'la.json')).read()) == good
    assert pytorch2onnx.main(['latentvg_tiny_synthref', '--out', out, '--atol', '-1']) == 2
    assert '--atol must be >= 0' in capsys.readouterr().err


@pytest.mark.parametrize('exported', ['latentvg_gres'], indirect=True)
def test_predictor_errors(exported, tmp_path, monkeypatch):
    from mmengine.config import Config
    variant, inferencer, onnx, meta = exported
    with pytest.raises(FileNotFoundError, match='nope.onnx'):
        ORTRefPredictor(str(tmp_path / 'nope.onnx'))
    lonely = tmp_path / 'lonely.onnx'
    lonely.write_bytes(open(onnx, 'rb').read())
    with pytest.raises(FileNotFoundError, match='lonely.json'):
        ORTRefPredictor(str(lonely))
    # a config whose pipeline resizes to another size than the graph's
    cfg = Config.fromstring(load_sidecar(onnx)['config_text'], '.py')
    for step in cfg.test_dataloader.dataset.pipeline:
        if step['type'] == 'RefResize':
            step['scale'] = (96, 96)
    predictor = ORTRefPredictor(onnx, config=cfg)
    image = np.zeros((60, 80, 3), np.uint8)
    with pytest.raises(ValueError, match=r'\[96, 96\].*\[128, 128\].*input_size'):
        predictor(image, 'the red circle')
    # onnxruntime missing: the message says how to install it
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)
    with pytest.raises(ImportError, match=r'mmrefer\[deploy\]'):
        ORTRefPredictor(onnx)
