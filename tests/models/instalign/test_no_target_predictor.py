"""No-target predictor (Eq. 10-12) and its input ablations."""
import pytest
import torch

from mmrefer.models.instalign.no_target_predictor import NoTargetPredictor


def _capture(pred):
    seen = {}

    def hook(module, args, output):
        seen['x'] = args[0]  # returns None: the output is left unchanged

    pred.mlp[0].register_forward_hook(hook)
    return seen


def test_inputs_are_the_paper_features():
    torch.manual_seed(0)
    q, p = torch.randn(2, 3, 4), torch.rand(2, 3)
    t, tm = torch.randn(2, 5, 4), torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    q_global = torch.stack([sum(p[b, i] * q[b, i] for i in range(3)) for b in range(2)])
    t_sen = torch.stack([t[0, :2].mean(0), t[1].mean(0)])
    expected = dict(qglobal_tsen=torch.cat([q_global, t_sen], -1), qglobal=q_global,
                    tsen=t_sen, qmean=q.mean(1))
    for name, x in expected.items():
        pred = NoTargetPredictor(4, inputs=name)
        seen = _capture(pred)
        out = pred(q, p, t, tm)
        assert out.shape == (2, )
        assert torch.allclose(seen['x'], x, atol=1e-6), name
        assert torch.allclose(out, pred.mlp(x).squeeze(-1))


def test_bad_inputs_name():
    with pytest.raises(ValueError, match='inputs'):
        NoTargetPredictor(4, inputs='sum')
