"""RefInferencer on the real quick-start configs (random init and a saved checkpoint)."""
import cv2
import numpy as np
import pytest
import torch
from mmengine.runner import save_checkpoint

from mmrefer.apis import RefInferencer, build_inference_pipeline

SENTENCES = ['the red circle', 'all green shapes', 'the small blue square on the left']


def tiny(name, root, weights=None, seed=0):
    root = str(root)
    opts = {'latentvg_tiny_synthref': {'model.tokenizer.spm_path': f'{root}/tokenizers/beit3.spm'},
            'instalign_tiny_synthref': {
                'model.text_encoder.tokenizer_dir': f'{root}/tokenizers/roberta'}}[name]
    torch.manual_seed(seed)
    return RefInferencer(name, weights=weights, device='cpu', batch_size=2, cfg_options=opts)


def an_image(root):
    import glob
    path = sorted(glob.glob(f'{root}/images/train2014/*.jpg'))[0]
    return path, cv2.imread(path).shape[:2]


def check_common(results, hw):
    assert [r['text'] for r in results] == SENTENCES
    for r in results:
        assert r['mask'].dtype == bool and r['mask'].shape == hw
        assert len(r['box']) == 4 and isinstance(r['no_target'], bool)
        x1, y1, x2, y2 = r['box']
        assert 0 <= x1 <= x2 <= hw[1] and 0 <= y1 <= y2 <= hw[0]
        assert isinstance(r['score'], float)
        if r['no_target']:
            assert not r['mask'].any()


@pytest.mark.parametrize('name', ['latentvg_tiny_synthref', 'instalign_tiny_synthref'])
def test_tiny_config_answers_and_checkpoint_roundtrip(name, synthref_root, tmp_path):
    torch.set_num_threads(1)
    path, hw = an_image(synthref_root)
    inf = tiny(name, synthref_root)
    steps = [s['type'] for s in build_inference_pipeline(inf.cfg)]
    assert 'LoadRefAnnotations' not in steps and steps[0] == 'mmdet.LoadImageFromNDArray'
    results = inf(path, SENTENCES)
    check_common(results, hw)
    ex = results[0]['extras']
    if name.startswith('latentvg'):
        # sentence map + N=2 latent expression maps, at the image size
        assert ex['expr_maps'].shape == (3,) + hw
        assert 0 <= int(ex['subject_index']) < 16
    else:
        q = ex['inst_masks'].shape[0]
        assert ex['inst_masks'].shape[1:] == hw and ex['inst_scores'].shape == (q, )
        assert len(ex['aligned_words']) == q
    # a sentence answered alone equals its answer inside the batch
    alone = inf(path, SENTENCES[2])[0]
    np.testing.assert_array_equal(alone['mask'], results[2]['mask'])
    assert alone['score'] == pytest.approx(results[2]['score'], abs=1e-5)

    # weights saved with mmengine and loaded through the checkpoint shim reproduce the answers
    ckpt = str(tmp_path / 'tiny.pth')
    save_checkpoint(dict(state_dict=inf.model.state_dict(), meta=dict(epoch=1)), ckpt)
    other = tiny(name, synthref_root, seed=123)  # a different random init ...
    assert any((p != q).any() for p, q in zip(other.model.state_dict().values(),
                                              inf.model.state_dict().values())
               if p.is_floating_point())
    again = tiny(name, synthref_root, weights=ckpt, seed=123)(path, SENTENCES)  # ... overwritten
    for a, b in zip(results, again):
        np.testing.assert_array_equal(a['mask'], b['mask'])
        assert a['score'] == pytest.approx(b['score'], abs=1e-5)


def test_pretrained_path_is_kept_for_init_weights(synthref_root, tmp_path):
    """mmengine's BaseInferencer drops ``model.pretrained`` before building; RefInferencer keeps
    it (``inferencer.model.init_weights()`` then loads it, as paper_size_check does), and it
    loads nothing by itself."""
    torch.manual_seed(0)
    path = str(tmp_path / 'beit3_never_read.pth')  # does not exist: building must not read it
    inf = RefInferencer('latentvg_tiny_synthref', cfg_options={
        'model.tokenizer.spm_path': f'{synthref_root}/tokenizers/beit3.spm',
        'model.pretrained': path})
    assert inf.cfg.model.pretrained == path and inf.model.pretrained == path
    assert inf.model.backbone.init_cfg == dict(type='Pretrained', checkpoint=path)
    with pytest.raises(FileNotFoundError, match='beit3_never_read.pth'):
        inf.model.init_weights()
