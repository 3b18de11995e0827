"""BaseRefHead: a new head needs only the four hooks (the way a third method would plug in), and
both paper heads are built on it."""
import pytest
import torch
import torch.nn.functional as F
from mmdet.structures import DetDataSample
from mmengine.structures import PixelData

from mmrefer.models import BaseRefHead, InstAlignHead, LatentVGHead, RefDataPreprocessor


class ToyHead(BaseRefHead):
    """One 1x1 conv to a mask logit at the feature size; no no-target predictor."""
    OLD_KEYS = (('conv_old.', 'conv.'), )
    TEST_CFG = dict(mask_thr=0.5, nt_thr=0.5, tag='toy')

    def __init__(self, test_cfg=None):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 1, 1)
        self.init_test_cfg(test_cfg)

    def forward(self, x, batch_data_samples=None):
        return (self.conv(x['feats'])[:, 0], )

    def loss_by_feat(self, logits, batch_data_samples):
        from mmrefer.models.utils import batch_shape, stack_merged_gt
        gt = stack_merged_gt(batch_data_samples, batch_shape(batch_data_samples), logits.device)
        return dict(loss_mask=F.binary_cross_entropy_with_logits(logits, gt))

    def predict_maps(self, logits, pad_shape, scale=1.0):
        return dict(prob=(logits * scale).sigmoid())

    @staticmethod
    def fill_predictions(post_processor, test_cfg, batch_data_samples, maps, words=None):
        return post_processor(batch_data_samples, maps['prob'],
                              extras=[dict(tag=test_cfg['tag'], words=words)] *
                              len(batch_data_samples))

    def predict_inputs(self, x):
        return dict(scale=x.get('scale', 1.0))


def _samples(shapes, pad=(6, 8)):
    out = []
    for h, w in shapes:
        ds = DetDataSample(metainfo=dict(img_shape=(h, w), batch_input_shape=pad,
                                         no_target=False))
        gt = torch.zeros(1, h, w, dtype=torch.uint8)
        gt[0, :2] = 1
        ds.gt_merged_mask = PixelData(data=gt)
        out.append(ds)
    return out


def test_a_head_with_the_four_hooks_trains_and_predicts():
    head = ToyHead(test_cfg=dict(mask_thr=0.6))
    assert head.test_cfg == dict(mask_thr=0.6, nt_thr=0.5, tag='toy')
    torch.manual_seed(0)
    x = dict(feats=torch.randn(2, 4, 6, 8), scale=2.0)
    samples = RefDataPreprocessor.pad_ref_gt(_samples([(6, 8), (4, 5)]), (6, 8))
    loss = head.loss(x, samples)['loss_mask']
    gt = torch.stack([ds.gt_merged_mask.data[0] for ds in samples]).float()
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(
        head.conv(x['feats'])[:, 0], gt))
    preds = head.predict(x, _samples([(6, 8), (4, 5)]))
    prob = (2.0 * head.conv(x['feats'])[:, 0]).sigmoid().detach()   # predict_inputs' scale
    for b, (ds, (h, w)) in enumerate(zip(preds, [(6, 8), (4, 5)])):
        assert torch.equal(ds.pred_mask, prob[b, :h, :w] > 0.6)     # cropped to img_shape
        assert ds.pred_extras['tag'] == 'toy' and ds.pred_extras['words'] is None
        assert ds.pred_no_target is False
    # predict_by_feat passes words to fill_predictions and the rest to predict_maps
    (ds, ) = head.predict_by_feat(head(x)[0][:1], _samples([(6, 8)]), words=[['a']],
                                  scale=2.0)
    assert ds.pred_extras['words'] == [['a']]


def test_old_keys_are_renamed_on_load():
    head = ToyHead()
    state = {k.replace('conv.', 'conv_old.'): torch.full_like(v, 0.5)
             for k, v in head.state_dict().items()}
    head.load_state_dict(state)
    assert torch.all(head.conv.weight == 0.5)


def test_a_head_without_the_hooks_cannot_be_built():
    class NoHooks(BaseRefHead):
        pass

    with pytest.raises(TypeError, match='abstract'):
        NoHooks()


@pytest.mark.parametrize('head', [LatentVGHead, InstAlignHead])
def test_both_paper_heads_use_the_shared_flow(head):
    assert issubclass(head, BaseRefHead)
    for name in ('loss', 'predict', 'predict_by_feat', '_load_from_state_dict'):
        assert name not in vars(head), f'{head.__name__} redefines {name}'
    for name in ('forward', 'loss_by_feat', 'predict_maps', 'fill_predictions'):
        assert name in vars(head), f'{head.__name__} lacks the hook {name}'
