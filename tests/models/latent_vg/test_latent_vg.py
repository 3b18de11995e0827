"""LatentVG detector: building without files, encoder sequence layout, loss/predict contract,
and a tiny end-to-end train + test through mmengine's Runner on SynthRef."""
import copy
import os.path as osp

import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import PixelData

from mmrefer.models.language_models import tokenize_samples
from mmrefer.registry import MODELS
from mmrefer.utils import register_all_modules

register_all_modules()

TINY = dict(
    type='LatentVG',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3,
                           bgr_to_rgb=True),
    # samples carry input_ids (as from TokenizeText), so the sentencepiece file is never read
    tokenizer=dict(type='BEiT3Tokenizer', spm_path=None, max_length=8),
    backbone=dict(type='BEiT3', arch=dict(embed_dims=32, num_layers=2, num_heads=4, ffn_ratio=2),
                  img_size=64, patch_size=16, vocab_size=100, max_text_len=64,
                  num_latent_groups=2),
    latent_init=dict(type='LatentExpressionInitializer', embed_dims=32, attr_lengths=(2, 3),
                     drop_probs=(0.2, 0.15)),
    subject_distributor=dict(type='SubjectDistributor'),
    concept_injector=dict(type='VisualConceptInjector', embed_dims=32, num_concepts=6),
    head=dict(type='LatentVGHead', in_channels=32, num_class_tokens=3, feat_channels=8,
              embed_dims=8, num_decoder_layers=1, decoder_heads=4, decoder_ffn_dims=32,
              mlp_hidden_dims=16))


def _samples(B=2, size=64):
    out = []
    for i in range(B):
        ids = torch.tensor([0, 5 + i, 7, 9, 2, 1, 1, 1])  # 5 tokens, padded to max_length=8
        gt = torch.zeros(1, size, size, dtype=torch.uint8)
        gt[0, 8:30, 10:40] = 1
        ds = DetDataSample(metainfo=dict(text='x', input_ids=ids, img_shape=(size, size),
                                         batch_input_shape=(size, size), no_target=False))
        ds.gt_merged_mask = PixelData(data=gt)
        out.append(ds)
    return out


def test_sequence_layout_and_hook():
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(TINY)).eval()
    calls = []
    orig = model.subject_distributor.forward

    def spy(x, layout):
        calls.append(list(layout.group_sizes))
        y = orig(x, layout)
        assert torch.equal(y[:, 1 + 16 + 8 + 1], y[:, 0])  # Z^1 subject slot = visual slot
        return y
    model.subject_distributor.forward = spy
    feats = model.extract_feat(torch.randn(2, 3, 64, 64), _samples())
    assert calls == [[17, 8, 4, 5]] * 2  # after each of the 2 layers
    assert feats['memory'].shape == (2, 17 + 8 + 9, 32)
    assert feats['patch_feats'].shape == (2, 32, 4, 4)
    # class tokens: text <s> at 17, Z^1 cls at 25, Z^2 cls at 29
    torch.testing.assert_close(feats['class_tokens'], feats['memory'][:, [17, 25, 29]])
    pad = feats['memory_mask']
    assert pad[:, 17 + 5:25].all() and not pad[:, :22].any() and not pad[:, 25:].any()
    assert feats['subject_index'].min() >= 1 and feats['subject_index'].max() <= 4  # </s> at 4 is a candidate


def test_subject_replaces_visual_cls():
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(TINY)).eval()
    seen = {}

    def grab(x, sizes, padding_mask=None, layer_hook=None):
        seen['x'] = x
        return torch.zeros_like(x)
    model.backbone.forward_layers = grab
    samples = _samples()
    feats = model.extract_feat(torch.randn(2, 3, 64, 64), samples)
    ids = tokenize_samples(model.tokenizer, samples)['input_ids']
    word = model.backbone.embed_text_tokens(ids)
    idx = feats['subject_index']
    torch.testing.assert_close(seen['x'][:, 0], word[torch.arange(2), idx])


def test_loss_backward_and_predict_contract():
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(TINY))
    model.init_weights()
    model.train()
    data = dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)] * 2,
                data_samples=_samples())
    data = model.data_preprocessor(data, True)
    losses = model(**data, mode='loss')
    assert set(losses) == {'loss_mask', 'loss_dice', 'loss_contrastive'}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    for name in ('latent_init.subject_selector.weight', 'latent_init.log_temperature',
                 'concept_injector.concepts', 'latent_init.length_transforms.1.weight',
                 'head.token_mlps.2.0.weight'):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    model.eval()
    data = model.data_preprocessor(dict(inputs=[torch.zeros(3, 64, 64, dtype=torch.uint8)],
                                        data_samples=_samples(B=1)), False)
    with torch.no_grad():
        ds = model(**data, mode='predict')[0]
    assert ds.pred_mask.shape == (64, 64) and ds.pred_mask.dtype == torch.bool
    assert ds.pred_box.shape == (4, ) and ds.pred_no_target is False
    assert isinstance(ds.pred_score, float)
    assert ds.pred_extras['expr_maps'].shape == (3, 64, 64)
    assert 1 <= ds.pred_extras['subject_index'] <= 4


def test_config_errors_and_missing_files(tmp_path):
    bad = copy.deepcopy(TINY)
    bad['backbone']['num_latent_groups'] = 1
    with pytest.raises(ValueError, match='num_latent_groups'):
        MODELS.build(bad)
    bad = copy.deepcopy(TINY)
    bad['head']['num_class_tokens'] = 2
    with pytest.raises(ValueError, match='num_class_tokens'):
        MODELS.build(bad)
    cfg = copy.deepcopy(TINY)
    cfg['pretrained'] = str(tmp_path / 'missing_beit3.pth')
    model = MODELS.build(cfg)  # building never reads the file
    with pytest.raises(FileNotFoundError, match='missing_beit3.pth'):
        model.init_weights()
    samples = _samples()
    long = samples[0]
    long.set_metainfo(dict(input_ids=torch.arange(12)))
    with pytest.raises(ValueError, match='has 12 input_ids but the model reads 8'):
        model.extract_feat(torch.randn(2, 3, 64, 64), samples)


def test_no_latent_baseline_and_text_tokenizer(synthref_beit3_spm):
    cfg = copy.deepcopy(TINY)
    cfg.update(latent_init=None, subject_distributor=None, concept_injector=None,
               tokenizer=dict(type='BEiT3Tokenizer', spm_path=synthref_beit3_spm, max_length=8))
    cfg['backbone']['num_latent_groups'] = 0
    cfg['head']['num_class_tokens'] = 1
    model = MODELS.build(cfg).eval()
    samples = _samples()
    for ds, text in zip(samples, ['the red circle', 'all green squares on the left']):
        ds.set_metainfo(dict(text=text))
        del ds.input_ids
    text = tokenize_samples(model.tokenizer, samples)
    ids = text['input_ids']
    assert ids.shape == (2, 8) and ids[:, 0].eq(0).all()
    assert torch.equal(text['attention_mask'] == 0, ids.eq(1))
    feats = model.extract_feat(torch.randn(2, 3, 64, 64), samples)
    assert feats['memory'].shape == (2, 17 + 8, 32) and feats['subject_index'] is None


@pytest.mark.slow
def test_runner_train_and_test_on_synthref(synthref_root, tmp_path):
    """A few iterations of the quick-start config through mmengine's Runner, then a test run."""
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = Config.fromfile(osp.join(osp.dirname(__file__), '../../../configs/quickstart/'
                                   'latentvg_tiny_synthref.py'))
    root = str(synthref_root) + '/'
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = root
        cfg[key].num_workers = 0
        cfg[key].persistent_workers = False
    cfg.model.tokenizer.spm_path = str(synthref_root / 'tokenizers' / 'beit3.spm')
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=4, val_interval=100)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=4, by_epoch=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.log_processor = dict(type='LogProcessor', window_size=1, by_epoch=False)
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert osp.isfile(osp.join(str(tmp_path), 'iter_4.pth'))
    metrics = runner.test()
    assert any('gIoU' in k for k in metrics), metrics
    assert all(0 <= v <= 100 for k, v in metrics.items() if 'IoU' in k)


def test_a_tokenizer_larger_than_the_text_embedding_is_named(synthref_beit3_spm):
    """backbone.vocab_size below the tokenizer's ids: a ValueError naming both at the first
    batch, not an IndexError inside torch.embedding."""
    cfg = dict(copy.deepcopy(TINY), tokenizer=dict(type='BEiT3Tokenizer',
                                                  spm_path=synthref_beit3_spm, max_length=8))
    cfg['backbone']['vocab_size'] = 16
    model = MODELS.build(cfg)
    with pytest.raises(ValueError, match=r"tokenizer '.*beit3\.spm' uses \d+ ids but the "
                                         r'backbone embeds 16 \(model\.backbone\.vocab_size\)'):
        model.extract_feat(torch.randn(2, 3, 64, 64), _samples())


def test_inference_writes_the_latent_slots_in_place_with_the_same_result():
    """With autograd off the subject distributor and the concept injector write into each
    layer's output instead of copying the whole [B, T, C] sequence (two copies per layer); the
    encoder's output is bitwise the one of the copying path (autograd on)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Clones(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.shapes = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.clone.default:
                self.shapes.append(tuple(args[0].shape))
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(TINY))
    model.init_weights()
    model.eval()
    data = model.data_preprocessor(dict(inputs=[torch.randint(0, 255, (3, 64, 64),
                                                              dtype=torch.uint8)] * 2,
                                        data_samples=_samples()), False)
    seq = (2, model.layout.length, 32)
    with torch.enable_grad():
        log_grad = Clones()
        with log_grad:
            ref = model.extract_feat(data['inputs'], data['data_samples'])
    with torch.no_grad():
        log = Clones()
        with log:
            out = model.extract_feat(data['inputs'], data['data_samples'])
    assert log_grad.shapes.count(seq) == 2 * 2  # two modules x two layers copy with autograd
    assert seq not in log.shapes
    for k in ('patch_feats', 'class_tokens', 'memory'):
        assert torch.equal(out[k], ref[k].detach()), k
