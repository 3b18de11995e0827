"""TokenLayout: every position of Latent-VG's joint sequence, counted by hand."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mmrefer.models.latent_vg.token_layout import (TokenLayout, as_layout, positions_slice,
                                                  take_tokens)


def test_positions_of_the_paper_layout():
    # 480 px / 16 = 30 x 30 patches, L = 20, k = (4, 10)
    lay = TokenLayout.build(num_patches=900, text_len=20, attr_lengths=(4, 10))
    assert lay.group_sizes == [901, 20, 6, 12] and lay.length == 939
    assert lay.offsets == [0, 901, 921, 927]
    assert lay.patches == slice(1, 901) and lay.text_cls == 901
    assert lay.class_tokens == [901, 921, 927]
    assert [lay.subject(0), lay.subject(1)] == [922, 928]
    assert lay.attrs(0) == slice(923, 927) and lay.attrs(1) == slice(929, 939)
    assert lay.latent(1) == slice(927, 939)


def test_no_latents_and_conversion():
    lay = TokenLayout.build(num_patches=16, text_len=8)
    assert lay.group_sizes == [17, 8] and lay.class_tokens == [17] and lay.num_latents == 0
    assert as_layout([17, 8, 6]) == TokenLayout(17, 8, (6, ))
    assert as_layout(lay) is lay
    with pytest.raises(ValueError, match='no room'):
        TokenLayout(17, 8, (2, ))
    with pytest.raises(ValueError, match=r'\[1 \+ P, L'):
        as_layout([17])


class _OpLog(TorchDispatchMode):
    """Names of the aten ops run inside the mode."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


INDEX_OPS = ('aten.index.Tensor', 'aten.index_put_.default', 'aten.index_put.default',
             'aten._index_put_impl_.default')


@pytest.mark.parametrize('positions', [[3], [1, 4, 7], [2, 3, 4], [0, 5, 6], [6, 2]])
def test_take_tokens_is_a_list_index_without_an_index_tensor(positions):
    """``take_tokens`` gives ``x[:, positions]`` (values, gradient, a tensor of its own) from
    slices: no index tensor, which on a GPU is uploaded and waited for in every call."""
    x = torch.randn(2, 9, 3, requires_grad=True)
    with _OpLog() as log:
        y = take_tokens(x, positions)
    assert not set(log.ops) & set(INDEX_OPS), log.ops
    assert torch.equal(y, x[:, positions])
    assert y.data_ptr() != x.data_ptr() and y.is_contiguous()
    y.sum().backward()
    expected = torch.zeros(9)
    for p in positions:
        expected[p] += 1
    assert torch.equal(x.grad[0, :, 0], expected)
    assert positions_slice(positions) == (
        slice(3, 4) if positions == [3] else slice(1, 8, 3) if positions == [1, 4, 7]
        else slice(2, 5, 1) if positions == [2, 3, 4] else None)


def test_class_tokens_of_the_paper_layout_without_an_index_tensor():
    layout = TokenLayout.build(num_patches=900, text_len=20, attr_lengths=(4, 4))
    x = torch.randn(1, layout.length, 2)
    with _OpLog() as log:
        y = take_tokens(x, layout.class_tokens)
    assert not set(log.ops) & set(INDEX_OPS)
    assert torch.equal(y, x[:, [901, 921, 927]])
