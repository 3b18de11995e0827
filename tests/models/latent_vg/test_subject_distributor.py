"""SubjectDistributor copies the visual-slot subject into every latent subject slot."""
import pytest
import torch

from mmrefer.models.latent_vg.subject_distributor import SubjectDistributor, group_offsets


def test_copy_and_gradient():
    sizes = [5, 4, 4, 6]  # vis(1+4) | text 4 | Z^1 (k=2) | Z^2 (k=4)
    x = torch.randn(2, sum(sizes), 3, requires_grad=True)
    y = SubjectDistributor()(x, sizes)
    assert group_offsets(sizes) == [0, 5, 9, 13]
    expected = x.detach().clone()
    expected[:, 10] = x[:, 0].detach()
    expected[:, 14] = x[:, 0].detach()
    assert torch.equal(y.detach(), expected)
    y[:, 10].sum().backward()
    assert torch.equal(x.grad[:, 0], torch.ones(2, 3))  # the copy passes gradient to s^V
    assert x.grad[:, 10].abs().sum() == 0


def test_no_latent_groups_is_identity_and_errors():
    x = torch.randn(1, 7, 2)
    assert torch.equal(SubjectDistributor()(x, [3, 4]), x)
    with pytest.raises(ValueError, match='sum'):
        SubjectDistributor()(x, [3, 3])
