"""mask_to_original / box_to_original against hand-computed values."""
import pytest
import torch

from mmrefer.structures import box_to_input, box_to_original, mask_to_original

PLAIN = dict(ori_shape=(4, 6), img_shape=(8, 12), scale_factor=(2.0, 2.0), letterbox=None)
# 6x4 image letterboxed into 12x12: s = 2, content 12x8 at pad (left=0, top=2)
LETTER = dict(ori_shape=(4, 6), img_shape=(12, 12), scale_factor=(2.0, 2.0),
              letterbox=dict(pad=(0, 2), scale=2.0))


def test_plain_mask():
    m = torch.zeros(8, 12, dtype=torch.bool)
    m[2:6, 4:10] = True  # rows 1..2, cols 2..4 at the original size
    exp = torch.zeros(4, 6, dtype=torch.bool)
    exp[1:3, 2:5] = True
    assert torch.equal(mask_to_original(m, PLAIN), exp)


def test_letterbox_mask_crops_padding():
    m = torch.zeros(12, 12, dtype=torch.bool)
    m[0:2] = True  # padding only: must vanish
    m[4:6, 0:4] = True  # rows (4-2)/2 = 1, cols 0..1
    exp = torch.zeros(4, 6, dtype=torch.bool)
    exp[1, 0:2] = True
    assert torch.equal(mask_to_original(m, LETTER), exp)


def test_non_uniform_scale():
    meta = dict(ori_shape=(3, 5), img_shape=(6, 15), scale_factor=(3.0, 2.0), letterbox=None)
    m = torch.zeros(6, 15, dtype=torch.bool)
    m[:, 3:6] = True  # original column 1
    out = mask_to_original(m, meta)
    assert out.shape == (3, 5) and out[:, 1].all() and out.sum() == 3


def test_boxes():
    b = torch.tensor([2., 4., 10., 8.])
    torch.testing.assert_close(box_to_original(b, PLAIN), torch.tensor([1., 2., 5., 4.]))
    torch.testing.assert_close(box_to_original(b, LETTER), torch.tensor([1., 1., 5., 3.]))
    # clipped to the original image
    torch.testing.assert_close(box_to_original(torch.tensor([-4., 0., 30., 30.]), PLAIN),
                               torch.tensor([0., 0., 6., 4.]))
    many = torch.tensor([[0., 2., 12., 10.], [2., 4., 10., 8.]])
    assert box_to_original(many, LETTER).shape == (2, 4)
    for meta in (PLAIN, LETTER):
        x = torch.tensor([0.5, 1., 3., 2.5])
        torch.testing.assert_close(box_to_original(box_to_input(x, meta), meta), x)


def test_errors():
    with pytest.raises(KeyError, match='ori_shape'):
        mask_to_original(torch.zeros(8, 12, dtype=torch.bool), dict(img_shape=(8, 12)))
    with pytest.raises(ValueError, match=r'\(5, 5\) does not match img_shape \(8, 12\)'):
        mask_to_original(torch.zeros(5, 5, dtype=torch.bool), PLAIN)
