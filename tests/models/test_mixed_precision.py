"""bf16 autocast with fp32 islands (CPU autocast here; the same code runs on CUDA).

* the fp32 islands really run in fp32 under autocast;
* paper-size models (at 224 / 256 input, ``PAPER_CHECK_SIZE``): on one fixed batch the bf16
  loss is within 2 % of the fp32 loss, with finite gradients (slow);
* tiny models: a bf16 training run tracks the fp32 loss curve (stated tolerance below).
"""
import copy
import itertools

import pytest
import torch
import torch.nn.functional as F

from e2e_helpers import QUICKSTART, ROOT
from model_helpers import TransposedBf16Gemm, cpu_share

PAPER = {
    'latentvg': f'{ROOT}/configs/latentvg_beit3.py',
    'instalign': f'{ROOT}/configs/instalign/instalign_swin-b_roberta_grefcoco.py',
}


#: input side of the paper-size check: the paper architectures (every layer, width and module)
#: at BEiT-3's pretraining resolution and the multiple of 32 next to it for Swin, not at 480.
#: bf16 matrix products on a CPU without native bf16 (no AVX-512) take PyTorch's reference
#: GEMM: at 480 the two checks took 485 s and 697 s of a 2562 s suite (2026-12-01, both
#: passed); at these sizes and with ``TransposedBf16Gemm``, 52 s and 72 s on two threads
#: (docs/efficiency.md)
PAPER_CHECK_SIZE = {'latentvg': 224, 'instalign': 256}


def _model_and_batch(config, data_root, batch_size, paper, img_size=None):
    """The model and an endless stream of batches of the validation split (it exists in every
    SynthRef format, unlike the combined-RefCOCO training set; its pipeline loads the GT)."""
    from model_helpers import build_model_and_loader
    model, loader = build_model_and_loader(config, data_root, batch_size, split='val',
                                           random_weights=paper, img_size=img_size)
    model.train()
    return model, itertools.cycle(loader)


def _loss(model, data, amp: bool, seed=None):
    """Total loss (fp32 value) and the gradient norm of one training step (``seed``: the same
    dropout / drop-path / Gumbel draws for both precisions)."""
    if seed is not None:
        torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    data = model.data_preprocessor(copy.deepcopy(data), training=True)
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
        losses = model.loss(data['inputs'], data['data_samples'])
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    grads = [p.grad.float().norm() for p in model.parameters() if p.grad is not None]
    return float(total), float(torch.stack(grads).norm()), losses


def test_fp32_islands_stay_fp32_under_autocast():
    from mmrefer.models.latent_vg import PositiveMarginContrastiveLoss, VisualConceptInjector
    from mmrefer.models.latent_vg.contrastive_losses import pairwise_cosine
    torch.manual_seed(0)
    vci = VisualConceptInjector(embed_dims=16, num_concepts=4)
    vis, t, attrs = torch.randn(2, 9, 16), torch.randn(2, 16), torch.randn(2, 5, 16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert (vis @ vis.transpose(1, 2)).dtype == torch.bfloat16  # autocast is on
        assert pairwise_cosine(t, attrs[:, :3]).dtype == torch.float32
        out = vci.inject(vis.bfloat16(), t.bfloat16(), attrs.bfloat16())
        loss = PositiveMarginContrastiveLoss()(t.bfloat16(), attrs[:, :2].bfloat16())
    assert loss.dtype == torch.float32
    torch.testing.assert_close(out.float(), vci.inject(vis, t, attrs), rtol=0, atol=1e-2)


def test_fp32_islands_trace_in_one_graph_under_autocast():
    """torch.compile traces through an fp32 island under autocast without a graph break (one
    was made at every island while autocast was entered through a contextlib.ExitStack: 14 of
    the 23 graphs of three compiled Latent-VG training steps at gpu_check's quick sizes), and
    the compiled island still computes in fp32."""
    from mmrefer.models.latent_vg import VisualConceptInjector
    torch.manual_seed(0)
    vci = VisualConceptInjector(embed_dims=16, num_concepts=4)
    vis, t, attrs = torch.randn(2, 9, 16), torch.randn(2, 16), torch.randn(2, 5, 16)

    def step(vis, t, attrs):
        new = vci.inject(vis, t, attrs)  # fp32 inside
        return (vis @ vis.transpose(1, 2)), new  # bf16 outside

    torch._dynamo.reset()
    compiled = torch.compile(step, backend='eager', fullgraph=True)  # a break would raise
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outside, new = compiled(vis, t, attrs)
        ref_outside, ref_new = step(vis, t, attrs)
    assert outside.dtype == torch.bfloat16 and new.dtype == torch.float32
    assert torch.equal(new, ref_new) and torch.equal(outside, ref_outside)


@pytest.mark.slow
@pytest.mark.parametrize('method', ['latentvg', 'instalign'])
def test_paper_size_bf16_loss_within_2_percent_of_fp32(method, synthref_root):
    torch.set_num_threads(cpu_share())
    model, batches = _model_and_batch(PAPER[method], synthref_root, batch_size=2, paper=True,
                                      img_size=PAPER_CHECK_SIZE[method])
    data = next(batches)
    assert data['inputs'][0].shape[-1] == PAPER_CHECK_SIZE[method]
    fp32, g32, parts32 = _loss(model, data, amp=False, seed=1)
    with TransposedBf16Gemm():  # faster on CPUs without native bf16, within 1 bf16 spacing
        bf16, g16, parts16 = _loss(model, data, amp=True, seed=1)
    assert torch.isfinite(torch.tensor([fp32, bf16, g32, g16])).all()
    rel = abs(bf16 - fp32) / abs(fp32)
    detail = {k: (round(float(parts32[k]), 4), round(float(parts16[k]), 4)) for k in parts32}
    assert rel <= 0.02, f'bf16 {bf16:.4f} vs fp32 {fp32:.4f} ({100 * rel:.2f} %): {detail}'


@pytest.mark.slow
@pytest.mark.parametrize('method', ['latentvg', 'instalign'])
def test_tiny_bf16_training_tracks_fp32(method, synthref_root, one_torch_thread):
    """30 AdamW steps on the same batches from the same initialisation: the bf16 run's loss
    stays within 10 % of the fp32 run's (mean relative gap over the last 10 steps) and ends
    within 15 % of it."""
    curves = {}
    for amp in (False, True):
        model, batches = _model_and_batch(QUICKSTART[method], synthref_root, batch_size=4,
                                          paper=False)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        curve = []
        for step in range(30):
            total, _, _ = _loss(model, next(batches), amp=amp, seed=step)
            opt.step()
            curve.append(total)
        curves[amp] = torch.tensor(curve)
    fp32, bf16 = curves[False], curves[True]
    assert torch.isfinite(bf16).all()
    assert fp32[-5:].mean() < fp32[:5].mean()  # it is learning
    gap = ((bf16[-10:] - fp32[-10:]).abs() / fp32[-10:]).mean()
    assert gap <= 0.10, (fp32.tolist(), bf16.tolist())
    assert abs(bf16[-1] - fp32[-1]) / fp32[-1] <= 0.15


def test_instalign_deformable_sampling_runs_in_fp32_under_autocast(synthref_root):
    """mmcv's deformable-attention CUDA kernel takes no bf16: in every attention module of
    InstAlign's pixel decoder the sampling gets fp32 inputs under autocast (checked here on the
    CPU path) while the projections around it run in bf16; a plain mmcv module (another pixel
    decoder in a config) is an fp32 island whole."""
    import mmrefer.models.instalign.pixel_decoder as pd
    from mmcv.ops import MultiScaleDeformableAttention

    from mmrefer.models import HostShapeMultiScaleDeformableAttention
    from mmrefer.models.mixed_precision import fp32_submodules
    model, batches = _model_and_batch(QUICKSTART['instalign'], synthref_root, 2, paper=False)
    attn = [m for m in model.head.pixel_decoder.modules()
            if isinstance(m, MultiScaleDeformableAttention)]
    assert attn and all(isinstance(m, HostShapeMultiScaleDeformableAttention) for m in attn)
    seen, proj = [], []
    orig = pd.multi_scale_deformable_sampling

    def spy(value, shapes, loc, w):
        seen.append({value.dtype, loc.dtype, w.dtype})
        return orig(value, shapes, loc, w)

    for m in attn:
        m.value_proj.register_forward_hook(lambda mod, args, out: proj.append(out.dtype))
    data = model.data_preprocessor(next(batches), training=True)
    pd.multi_scale_deformable_sampling = spy
    try:
        with torch.autocast('cpu', dtype=torch.bfloat16):
            model.loss(data['inputs'], data['data_samples'])
    finally:
        pd.multi_scale_deformable_sampling = orig
    assert len(seen) == len(attn) and all(s == {torch.float32} for s in seen)
    assert proj and set(proj) == {torch.bfloat16}
    # a plain mmcv module is wrapped whole (fp32 output), ours are left alone
    plain = torch.nn.ModuleList([MultiScaleDeformableAttention(embed_dims=32, num_heads=4,
                                                               num_levels=1, num_points=1,
                                                               batch_first=True)])
    assert fp32_submodules(plain, MultiScaleDeformableAttention,
                           exclude=HostShapeMultiScaleDeformableAttention) == 1
    assert fp32_submodules(torch.nn.ModuleList(attn), MultiScaleDeformableAttention,
                           exclude=HostShapeMultiScaleDeformableAttention) == 0
    shapes = torch.tensor([[2, 3]])
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        out = plain[0](torch.randn(1, 4, 32), reference_points=torch.rand(1, 4, 1, 2),
                       spatial_shapes=shapes, level_start_index=shapes.new_zeros(1),
                       value=torch.randn(1, 6, 32))
    assert out.dtype == torch.float32


def test_autocast_input_casts_once_what_autocast_would_cast():
    from mmrefer.models.mixed_precision import autocast_input
    x = torch.randn(3, 5)
    lin = torch.nn.Linear(5, 4)
    assert autocast_input(x) is x  # autocast off: untouched
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = autocast_input(x)
        assert y.dtype == torch.bfloat16 and torch.equal(y, x.bfloat16())
        assert autocast_input(y) is y  # already low precision
        assert torch.equal(lin(y), lin(x))  # the product autocast makes from the fp32 input
        z = x.double()
        assert autocast_input(z) is z  # only fp32 is cast, as autocast casts


def test_low_precision_layer_norm_keeps_bf16_with_fp32_statistics():
    """Under autocast a bf16 input stays bf16 through the norm (no fp32 round trip): within one
    bf16 rounding of autocast's fp32 layer norm (the weight and bias rounded to bf16 too),
    gradients reach the fp32 parameters; outside autocast, or for fp32 input, it is the
    module itself."""
    from mmrefer.models.mixed_precision import low_precision_layer_norm
    torch.manual_seed(0)
    norm = torch.nn.LayerNorm(3072)
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.3)
        norm.bias.normal_(0.0, 0.3)
    x = (torch.randn(8, 3072) * 3 + 1).bfloat16()
    assert torch.equal(low_precision_layer_norm(norm, x), norm(x))  # autocast off: the module
    xf = x.float()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert torch.equal(low_precision_layer_norm(norm, xf), norm(xf))  # fp32 input
        out = low_precision_layer_norm(norm, x)
    assert out.dtype == torch.bfloat16
    # fp32 statistics and arithmetic on the same bf16 input, weight and bias rounded to bf16:
    # the output differs from it by the final rounding only (half a bf16 spacing, 2^-9 |y|)
    ref = F.layer_norm(xf, (3072, ), norm.weight.bfloat16().float(),
                       norm.bias.bfloat16().float(), norm.eps)
    assert ((out.float() - ref).abs() <= ref.abs() * 2.0**-8 + 1e-6).all()
    # and from autocast's fp32 layer norm (CUDA's policy) by the rounding of weight and bias
    # too: within one bf16 spacing at the output's scale
    full = norm(xf)
    assert (out.float() - full).abs().max() <= full.abs().max() * 2.0**-7
    x.requires_grad_(True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        low_precision_layer_norm(norm, x).float().square().sum().backward()
    assert norm.weight.grad is not None and norm.weight.grad.dtype == torch.float32
    assert norm.bias.grad.abs().sum() > 0 and x.grad.abs().sum() > 0
