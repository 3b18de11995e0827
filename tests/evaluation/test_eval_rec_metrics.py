"""Box metrics: aligned IoU, Acc@0.5 (>=) and box mIoU."""
import numpy as np
import pytest
import torch

from mmrefer.evaluation.functional import box_iou_aligned, rec_metrics


def _loop_iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_rec_hand_computed():
    pred = [torch.tensor([0., 0., 10., 10.]),      # same box -> 1
            np.array([0., 0., 10., 10.]),          # half overlap: 50 / 100 -> 0.5 (passes >=)
            [0., 0., 4., 4.],                      # disjoint -> 0
            torch.tensor([[0., 0., 10., 10.]])]    # [1, 4]: 25 / 100 -> 0.25
    gt = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 5.], [5., 5., 9., 9.], [0., 0., 5., 5.]])
    iou = box_iou_aligned(pred, gt)
    assert iou.dtype == np.float64
    assert iou.tolist() == [1.0, 0.5, 0.0, 0.25]
    res = rec_metrics(pred, gt)
    assert res == {'Acc@0.5': 50.0, 'box_mIoU': pytest.approx(1.75 / 4 * 100)}
    # Python floats, as docs/metrics.md says of every metric (not numpy scalars)
    assert {k: type(v) for k, v in res.items()} == {'Acc@0.5': float, 'box_mIoU': float}


def test_rec_degenerate_and_errors():
    assert box_iou_aligned([[1., 1., 1., 1.]], [[1., 1., 1., 1.]]).tolist() == [0.0]
    with pytest.raises(ValueError, match='no samples'):
        rec_metrics([], [])
    with pytest.raises(ValueError, match='2 boxes'):
        rec_metrics([[0, 0, 1, 1]] * 2, [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match=r'pred_boxes\[0\]'):
        rec_metrics([[0, 0, 1]], [[0, 0, 1, 1]])


def test_rec_matches_loop():
    rng = np.random.default_rng(0)
    xy = rng.random((200, 2)) * 50
    wh = rng.random((200, 2)) * 30 + 0.5
    pred = np.concatenate([xy, xy + wh], 1)
    gt = pred + rng.normal(scale=6, size=pred.shape)
    gt[:, 2:] = np.maximum(gt[:, 2:], gt[:, :2] + 0.1)
    ref = np.array([_loop_iou(a, b) for a, b in zip(pred, gt)])
    np.testing.assert_allclose(box_iou_aligned(torch.from_numpy(pred), gt), ref, rtol=1e-12)
    res = rec_metrics(pred, gt)
    assert res['Acc@0.5'] == pytest.approx(100 * np.mean(ref >= 0.5))
    assert res['box_mIoU'] == pytest.approx(100 * ref.mean())
