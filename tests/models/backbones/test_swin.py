"""SDPASwinTransformer: mmdet's SwinTransformer (same keys, the same output and gradients to
float rounding) with each window attention computed by scaled_dot_product_attention where that
pays (accelerators, CPU autocast), mmdet's own forward for fp32 on the CPU."""
import copy

import pytest
import torch
from mmdet.models.backbones import SwinTransformer
from mmdet.models.backbones.swin import WindowMSA
from mmengine.config import Config
from model_helpers import LargestOutput

from mmrefer.models import SDPASwinTransformer, SDPAWindowMSA
from mmrefer.registry import MODELS

# two blocks per stage: every stage has an unshifted and a shifted (masked) block
ARCH = dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], window_size=4,
            drop_path_rate=0.0, out_indices=(0, 1, 2, 3), init_cfg=None)


def _pair(fused=True, **kw):
    """(ours, mmdet's) with the same random weights (bias tables included, so that the relative
    position bias is not zero); ours forced onto the fused path unless ``fused`` says else."""
    arch = dict(ARCH, **kw)
    torch.manual_seed(0)
    ref = SwinTransformer(**arch)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if 'relative_position_bias_table' in name:
                p.copy_(torch.randn(p.shape, generator=g))
    ours = MODELS.build(dict(type='SDPASwinTransformer', fused_attention=fused, **arch))
    assert isinstance(ours, SDPASwinTransformer)
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    return ours, ref


def test_every_window_attention_is_the_sdpa_one():
    ours, _ = _pair()
    attn = [m for m in ours.modules() if isinstance(m, WindowMSA)]
    assert len(attn) == sum(ARCH['depths'])
    assert all(type(m) is SDPAWindowMSA for m in attn)
    shifted = [b.attn.shift_size for s in ours.stages for b in s.blocks]
    assert 0 in shifted and max(shifted) > 0


@pytest.mark.parametrize('size', [(64, 64), (52, 76)])  # 52 x 76: every stage pads its windows
def test_equals_mmdet_in_outputs_and_gradients(size):
    ours, ref = _pair()
    ours.train(), ref.train()
    x = torch.randn(2, 3, *size)
    outs, grads = [], []
    for model in (ours, ref):
        xi = x.clone().requires_grad_()
        feats = model(xi)
        sum((f * torch.linspace(-1, 1, f.numel()).view_as(f)).sum() for f in feats).backward()
        outs.append(feats)
        grads.append([xi.grad] + [p.grad for p in model.parameters()])
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert any(p.grad.abs().sum() > 0 for n, p in ours.named_parameters()
               if 'relative_position_bias_table' in n)


def test_fp32_on_the_cpu_is_mmdet_bitwise_and_autocast_takes_the_fused_path(monkeypatch):
    """By default the fused path runs where it pays: not for fp32 on the CPU (mmdet's forward,
    bitwise), but under CPU autocast."""
    import mmrefer.models.backbones.swin as swin
    ours, ref = _pair(fused=None)
    ours.eval(), ref.eval()
    calls = []
    sdpa = swin.F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(args[0].dtype)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(swin.F, 'scaled_dot_product_attention', spy)
    x = torch.randn(2, 3, 52, 76)
    with torch.no_grad():
        for a, b in zip(ours(x), ref(x)):
            assert torch.equal(a, b)
        assert calls == []
        with torch.autocast('cpu', dtype=torch.bfloat16):
            ours(x)
    assert calls == [torch.bfloat16] * sum(ARCH['depths'])
    assert swin.fused_attention_pays(torch.empty(1, device='meta'))


def test_bf16_autocast_stays_near_fp32():
    ours, _ = _pair()
    ours.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fp32 = ours(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            bf16 = ours(x)
    for a, b in zip(fp32, bf16):
        err = ((b.float() - a).norm() / a.norm()).item()
        assert err < 0.02, err


def test_attention_dropout_is_applied_in_training_only():
    ours, _ = _pair(attn_drop_rate=0.5)
    x = torch.randn(1, 3, 32, 32)
    ours.train()
    torch.manual_seed(0)
    a = ours(x)[0]
    torch.manual_seed(1)
    assert not torch.allclose(a, ours(x)[0])
    ours.eval()
    with torch.no_grad():
        assert torch.equal(ours(x)[0], ours(x)[0])


def test_mask_is_shared_by_the_images_of_a_batch():
    """The shifted windows' bias + region mask is built once per block, ``[1, nW h, N, N]``,
    not per image: with 8 images no tensor of the block reaches ``B nW h N N`` elements, while
    mmdet's explicit logits have exactly that many."""
    ours, ref = _pair(window_size=8)
    block_ours, block_ref = ours.stages[0].blocks[1], ref.stages[0].blocks[1]
    assert block_ours.attn.shift_size > 0
    B, hw, C = 8, (16, 16), ARCH['embed_dims']
    x = torch.randn(B, hw[0] * hw[1], C)
    N, heads, nW = 64, 1, 4  # 2 x 2 windows of 8 x 8 tokens
    largest = {}
    for name, block in (('ours', block_ours), ('mmdet', block_ref)):
        with torch.no_grad(), LargestOutput() as seen:
            block.attn(x, hw)
        largest[name] = seen.numel
    assert largest['mmdet'] == B * nW * heads * N * N
    assert largest['ours'] < B * nW * heads * N * N


def test_instalign_configs_use_it():
    for path in ('configs/_base_/models/instalign_swin-b_roberta.py',
                 'configs/quickstart/instalign_tiny_synthref.py'):
        assert Config.fromfile(path).model.backbone.type == 'SDPASwinTransformer', path
