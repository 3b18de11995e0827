"""SubjectDistributor copies the visual-slot subject into every latent subject slot."""
import pytest
import torch

from mmrefer.models.latent_vg import SubjectDistributor
from mmrefer.models.latent_vg.token_layout import TokenLayout


def test_copy_and_gradient():
    layout = TokenLayout.build(num_patches=4, text_len=4, attr_lengths=(2, 4))
    assert layout.group_sizes == [5, 4, 4, 6]  # vis(1+4) | text 4 | Z^1 (k=2) | Z^2 (k=4)
    x = torch.randn(2, layout.length, 3, requires_grad=True)
    y = SubjectDistributor()(x, layout)
    expected = x.detach().clone()
    expected[:, 10] = x[:, 0].detach()  # Z^1 starts at 9: [z_cls, s, a, a]
    expected[:, 14] = x[:, 0].detach()  # Z^2 starts at 13
    assert torch.equal(y.detach(), expected)
    y[:, 10].sum().backward()
    assert torch.equal(x.grad[:, 0], torch.ones(2, 3))  # the copy passes gradient to s^V
    assert x.grad[:, 10].abs().sum() == 0
    # group sizes work as well as a layout
    assert torch.equal(SubjectDistributor()(x, [5, 4, 4, 6]), y)


def test_no_latent_groups_is_identity_and_errors():
    x = torch.randn(1, 7, 2)
    assert torch.equal(SubjectDistributor()(x, [3, 4]), x)
    with pytest.raises(ValueError, match="sequence length 7 != the layout's 6"):
        SubjectDistributor()(x, [3, 3])


@pytest.mark.parametrize('attr_lengths', [(2, 4), (2, 4, 1), (3, )])
def test_slots_written_without_an_index_tensor(attr_lengths):
    """Evenly spaced subject slots (equal latent sizes) are written through one strided slice,
    others one slice each: the result of a list-index write, with no index tensor (on a GPU a
    host -> device copy and a wait in every layer)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class OpLog(TorchDispatchMode):
        ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    layout = TokenLayout.build(num_patches=4, text_len=3, attr_lengths=attr_lengths)
    x = torch.randn(2, layout.length, 3)
    slots = [layout.subject(i) for i in range(layout.num_latents)]
    expected = x.clone()
    expected[:, slots] = x[:, :1].expand(-1, len(slots), -1)
    with OpLog() as log:
        y = SubjectDistributor()(x, layout)
    assert torch.equal(y, expected)
    assert not any('index' in op for op in log.ops), log.ops
