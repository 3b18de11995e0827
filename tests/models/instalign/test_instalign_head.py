"""InstAlignHead on mmdet's Mask2Former skeleton: per-layer outputs, the loss keys each switch
writes, and no host synchronisation in ``forward`` / ``loss`` outside the Hungarian assignment."""
import copy
import traceback

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from mmrefer.utils.setup_env import register_all_modules

register_all_modules()

from mmrefer.models import RefDataPreprocessor  # noqa: E402
from mmrefer.registry import MODELS  # noqa: E402

from test_instalign import make_sample, tiny_model_cfg  # noqa: E402

K = 3  # POT blocks of the tiny model: layers d0 (before the first block), d1, d2, final
MERGED = ('loss_merged_bce', 'loss_merged_dice')
INST = ('loss_score', 'loss_mask', 'loss_dice', 'loss_phrase')


def _head(**overrides):
    cfg = tiny_model_cfg()
    head = dict(cfg['head'], text_channels=16, train_cfg=cfg['train_cfg'],
                test_cfg=cfg['test_cfg'])
    head.update(overrides)
    torch.manual_seed(0)
    return MODELS.build(head)


def _x(b=2):
    g = torch.Generator().manual_seed(1)
    feats = tuple(torch.randn(b, c, 32 // s, 32 // s, generator=g)
                  for c, s in ((16, 4), (32, 8), (64, 16), (128, 32)))
    mask = torch.tensor([[1] * 5 + [0] * 3, [1] * 8])[:b]
    return dict(img_feats=feats, word_feats=torch.randn(b, 8, 16, generator=g), word_mask=mask)


def _samples(padded=True):
    """Two samples at img_shape 20 x 24 in a 32 x 32 batch; ``padded``: as
    ``RefDataPreprocessor`` hands them to the loss (GT padded to the batch shape)."""
    samples = [make_sample('the red circle', [(4, 12, 8, 20), (12, 20, 0, 4)], img_shape=(20, 24)),
               make_sample('blue thing left', [], img_shape=(20, 24))]
    return RefDataPreprocessor.pad_ref_gt(samples, (32, 32)) if padded else samples


def test_forward_returns_per_layer_lists():
    head = _head()
    outs = head(_x())
    assert len(outs) == 6
    scores, masks, merged, phrase, relevance, nt = outs
    for per_layer in outs[:5]:
        assert isinstance(per_layer, list) and len(per_layer) == K + 1
    assert scores[0].shape == (2, 5) and masks[0].shape == (2, 5, 8, 8)
    assert merged[0].shape == (2, 8, 8) and phrase[0].shape == (2, 5)
    assert relevance[-1].shape == (2, 5, 8) and nt.shape == (2, )
    # the relevance R is a softmax over the valid words only (sample 0 has 5)
    assert torch.allclose(relevance[-1].sum(-1), torch.ones(2, 5))
    assert relevance[-1][0, :, 5:].abs().max() == 0


def _keys(layers):
    """{'d0': MERGED + INST, '': MERGED, ...} -> the flat key set (+ loss_no_target)."""
    out = {'loss_no_target'}
    for layer, names in layers.items():
        out |= {(f'{layer}.' if layer else '') + n for n in names}
    return out


NO_PHRASE = INST[:3]


@pytest.mark.parametrize('overrides,expected', [
    (dict(), {'d0': MERGED + INST, 'd1': MERGED + INST, 'd2': MERGED + INST, '': MERGED + INST}),
    (dict(instance_supervision=False), {'d0': MERGED, 'd1': MERGED, 'd2': MERGED, '': MERGED}),
    (dict(phrase_alignment=False),
     {'d0': MERGED + NO_PHRASE, 'd1': MERGED + NO_PHRASE, 'd2': MERGED + NO_PHRASE,
      '': MERGED + NO_PHRASE}),
    (dict(deep_supervision=False), {'': MERGED + INST}),
    (dict(deep_supervision=False, instance_supervision=False), {'': MERGED}),
    (dict(supervise_initial_instances=False),
     {'d0': MERGED, 'd1': MERGED + INST, 'd2': MERGED + INST, '': MERGED + INST}),
    (dict(supervise_intermediate_instances=False),
     {'d0': MERGED + INST, 'd1': MERGED, 'd2': MERGED, '': MERGED + INST}),
], ids=['default', 'no-inst', 'no-phrase', 'no-deep', 'no-deep-no-inst', 'no-initial',
        'no-intermediate'])
def test_loss_by_feat_writes_each_key_once(overrides, expected):
    head = _head(**overrides)
    outs = head(_x())
    losses = head.loss_by_feat(*outs, _samples())
    assert set(losses) == _keys(expected)
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    # d{i} is layer i: its merged loss is computed from that layer's merged logits
    if 'd1' in expected:
        other = list(outs)
        other[2] = [m + 3.0 if i == 1 else m for i, m in enumerate(outs[2])]
        changed = head.loss_by_feat(*other, _samples())
        assert changed['d1.loss_merged_bce'] != losses['d1.loss_merged_bce']
        assert changed['d0.loss_merged_bce'] == losses['d0.loss_merged_bce']
        assert changed['loss_merged_bce'] == losses['loss_merged_bce']


class _HostAccess(TorchFunctionMode):
    """Records every tensor -> host access (``item``, ``tolist``, ``bool(t)``, ``nonzero``, ...)
    outside the paused regions, with the calling frames."""
    FUNCS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.cpu, torch.Tensor.numpy,
             torch.Tensor.__bool__, torch.Tensor.__float__, torch.Tensor.__int__,
             torch.Tensor.__index__, torch.Tensor.nonzero, torch.nonzero,
             torch.Tensor.masked_select, torch.masked_select}

    def __init__(self):
        super().__init__()
        self.hits, self.paused = [], 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.FUNCS and not self.paused:
            where = [f'{f.filename}:{f.lineno}' for f in traceback.extract_stack(limit=6)[:-1]]
            self.hits.append((func.__name__, where))
        return func(*args, **(kwargs or {}))


class _DataDependentOps(TorchDispatchMode):
    """Records aten ops whose output size or value needs the device's data on the host."""

    def __init__(self, owner):
        super().__init__()
        self.owner = owner

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        bool_index = name.startswith('aten.index.Tensor') and any(
            i is not None and i.dtype == torch.bool for i in args[1])
        if not self.owner.paused and (bool_index or any(
                k in name for k in ('nonzero', '_local_scalar_dense', 'masked_select'))):
            self.owner.hits.append((name, []))
        return func(*args, **(kwargs or {}))


def _pause_in(rec, module):
    module.register_forward_pre_hook(lambda *a: setattr(rec, 'paused', rec.paused + 1))
    module.register_forward_hook(lambda *a: setattr(rec, 'paused', rec.paused - 1))


def test_forward_and_loss_stay_on_the_device(tmp_path):
    """The detector's ``loss`` on a RefDataPreprocessor batch reads nothing back to the host,
    except in the Hungarian assignment (scipy) and in third-party modules (HF text encoder,
    mmcv deformable attention), which are paused here."""
    from tokenizers import ByteLevelBPETokenizer
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(['the red circle', 'blue thing left'], vocab_size=300,
                            min_frequency=1,
                            special_tokens=['<s>', '<pad>', '</s>', '<unk>', '<mask>'])
    bpe.save_model(str(tmp_path))
    cfg = tiny_model_cfg(str(tmp_path))
    cfg['data_preprocessor']['type'] = 'RefDataPreprocessor'
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    data = model.data_preprocessor(dict(inputs=[torch.zeros(3, 20, 24, dtype=torch.uint8)] * 2,
                                        data_samples=_samples(padded=False)), training=True)
    assert isinstance(data['data_samples'][0].gt_instances.masks, torch.Tensor)
    rec = _HostAccess()
    for m in (model.text_encoder, model.head.pixel_decoder):
        _pause_in(rec, m)
    match = model.head.instance_loss.match

    def paused_match(*args, **kwargs):  # scipy's Hungarian solver needs the costs on the host
        rec.paused += 1
        try:
            return match(*args, **kwargs)
        finally:
            rec.paused -= 1

    model.head.instance_loss.match = paused_match
    with rec, _DataDependentOps(rec):
        torch.ones(1).item()  # positive control: the recorder sees a host read
        assert len(rec.hits) == 2
        rec.hits.clear()
        losses = model.loss(data['inputs'], copy.deepcopy(data['data_samples']))
    assert 'loss_score' in losses and 'd2.loss_phrase' in losses
    assert not rec.hits, rec.hits


def test_predict_by_feat_extras():
    head = _head().eval()
    outs = head(_x())
    words = [['', 'the', 'red', 'circle', '', '', '', ''],
             ['', 'blue', 'thing', 'left', '', 'x', 'y', '']]
    samples = head.predict_by_feat(*outs, _samples(), words=words)
    scores = outs[0][-1].sigmoid()
    for b, s in enumerate(samples):
        ex = s.pred_extras
        top = scores[b].argsort(descending=True)[:3]
        assert torch.allclose(ex['inst_scores'], scores[b, top])
        assert ex['inst_masks'].shape == (3, 20, 24)
        # each kept query's aligned words: the highest-R non-empty words, best first
        rel = outs[4][-1][b, top]
        for q, got in enumerate(ex['aligned_words']):
            ranked = [words[b][j] for j in rel[q].argsort(descending=True).tolist()
                      if words[b][j]]
            assert got == ranked[:2]
        assert ex['no_target_score'] == pytest.approx(float(outs[-1][b].sigmoid()))
    with pytest.raises(ValueError, match='positions'):
        head.predict_by_feat(*outs, _samples(), words=[w[:4] for w in words])


def test_loss_all_no_target_batch_keeps_the_graph():
    head = _head()
    outs = head(_x())
    samples = RefDataPreprocessor.pad_ref_gt(
        [make_sample('blue thing left', [], img_shape=(20, 24)) for _ in range(2)], (32, 32))
    losses = head.loss_by_feat(*outs, samples)
    assert losses['loss_mask'] == 0 and losses['loss_dice'] == 0 and losses['loss_phrase'] == 0
    sum(losses.values()).backward()
    assert head.mask_embed.layers[0].weight.grad is not None


def test_bad_targets_are_named():
    head = _head()
    outs = head(_x())
    bad = _samples(padded=False)
    bad[1].set_metainfo(dict(no_target=True))
    bad[0].set_metainfo(dict(no_target=True))
    with pytest.raises(ValueError, match='data sample 0 .* is no_target but has 2 GT instances'):
        RefDataPreprocessor.pad_ref_gt(bad, (32, 32))
    missing = _samples(padded=False)
    del missing[0].gt_instances.masks
    missing = RefDataPreprocessor.pad_ref_gt(missing, (32, 32))
    with pytest.raises(KeyError, match='gt_instances.masks'):
        head.loss_by_feat(*outs, missing)
    # GT that did not come through RefDataPreprocessor: refused, naming the sample and the fix
    for field in ('gt_instances.masks', 'gt_merged_mask', 'gt_no_target'):
        raw = _samples(padded=False)
        done = _samples()
        for ds, ok in zip(raw, done):   # only `field` left as the dataset made it
            if field != 'gt_instances.masks':
                ds.gt_instances.masks = ok.gt_instances.masks
            if field != 'gt_merged_mask':
                ds.gt_merged_mask = ok.gt_merged_mask
            if field != 'gt_no_target':
                ds.gt_no_target = ok.gt_no_target
        with pytest.raises(ValueError, match=f'data sample 0 .*{field}.*RefDataPreprocessor'):
            head.loss_by_feat(*outs, raw)
