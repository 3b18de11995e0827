"""resize_bilinear: F.interpolate (bilinear, align_corners=False) in channels-last memory on CUDA,
where PyTorch's usual-layout kernel runs one thread per output pixel for all B * C planes."""
import pytest
import torch
import torch.nn.functional as F

from mmrefer.models.utils import resize_bilinear


@pytest.mark.parametrize('shape,size', [((2, 100, 120, 120), (15, 15)),   # masked attention
                                        ((2, 256, 60, 60), (120, 120)),   # pixel decoder FPN
                                        ((1, 7, 120, 120), (480, 480)),   # maps to the input
                                        ((2, 3, 33, 47), (20, 61))])      # non-integer scales
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_channels_last_path_gives_the_interpolation_in_the_usual_layout(shape, size, dtype):
    torch.manual_seed(0)
    x = torch.randn(shape).to(dtype)
    ref = F.interpolate(x, size=size, mode='bilinear', align_corners=False)
    # what CUDA takes (forced here on the CPU); the CPU default is the plain call, bitwise
    y = resize_bilinear(x, size, channels_last=True)
    assert y.shape == ref.shape and y.dtype == dtype and y.is_contiguous()
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(y, ref, **tol)
    assert torch.equal(resize_bilinear(x, size), ref)
    # gradients flow through the layout change (the pixel decoder's FPN trains through it)
    x.requires_grad_(True)
    resize_bilinear(x, size, channels_last=True).float().square().sum().backward()
    g = x.grad.clone()
    x.grad = None
    F.interpolate(x, size=size, mode='bilinear', align_corners=False).float().square().sum(
    ).backward()
    torch.testing.assert_close(g, x.grad, **tol)
