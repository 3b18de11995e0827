"""BEiT-3 backbone: official key layout, parameter counts, forward semantics, layer-wise API,
latent groups, and equality with an independent re-implementation written from the equations."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmrefer.models.backbones.beit3 import BEiT3

TINY = dict(embed_dims=32, num_layers=2, num_heads=4, ffn_ratio=2)
IMG, PATCH, VOCAB = 32, 8, 50  # 4x4 = 16 patches


def tiny(**kw):
    torch.manual_seed(0)
    cfg = dict(arch=TINY, img_size=IMG, patch_size=PATCH, vocab_size=VOCAB, max_text_len=32)
    cfg.update(kw)
    return randomize(BEiT3(**cfg).eval())


def randomize(model, seed=1):
    """Random weights everywhere (LayerNorms too), so no test passes by an identity LN."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if 'norm' in name or
                                                               name.endswith('_ln.A.weight') or
                                                               name.endswith('_ln.B.weight')
                                                               else 0.0))
    return model


def inputs(b=3, length=7, seed=2):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (b, length), generator=g)
    pad = torch.zeros(b, length, dtype=torch.bool)
    pad[0, 5:] = True
    pad[2, 3:] = True
    ids[pad] = 1
    return ids, torch.randn(b, 3, IMG, IMG, generator=g), pad


def official_keys(num_layers):
    """The key list of backbones.md 1.5 (without ``beit3.``), built from its pattern."""
    keys = ['text_embed.weight', 'vision_embed.mask_token', 'vision_embed.cls_token',
            'vision_embed.proj.weight', 'vision_embed.proj.bias',
            'encoder.embed_positions.A.weight', 'encoder.embed_positions.B.weight']
    for i in range(num_layers):
        p = f'encoder.layers.{i}.'
        for x in 'AB':
            for m in ('k_proj', 'v_proj', 'q_proj', 'out_proj', 'inner_attn_ln'):
                keys += [f'{p}self_attn.{m}.{x}.weight', f'{p}self_attn.{m}.{x}.bias']
            keys += [f'{p}self_attn_layer_norm.{x}.weight', f'{p}self_attn_layer_norm.{x}.bias',
                     f'{p}final_layer_norm.{x}.weight', f'{p}final_layer_norm.{x}.bias']
            for m in ('fc1', 'fc2', 'ffn_layernorm'):
                keys += [f'{p}ffn.{x}.{m}.weight', f'{p}ffn.{x}.{m}.bias']
    keys += [f'encoder.layer_norm.{x}.{w}' for x in 'AB' for w in ('weight', 'bias')]
    return keys


# --------------------------------------------------------------------------- layout / counts
def test_state_dict_keys_are_official():
    m = BEiT3(arch=TINY, img_size=IMG, patch_size=PATCH, vocab_size=VOCAB, with_mask_token=True)
    sd = m.state_dict()
    assert sorted(sd) == sorted(official_keys(2))
    assert sd['encoder.embed_positions.A.weight'].shape == (16 + 1 + 2, 32)
    assert sd['encoder.embed_positions.B.weight'].shape == (1024, 32)
    assert sd['encoder.layers.1.ffn.B.fc1.weight'].shape == (64, 32)
    assert sd['encoder.layers.0.ffn.A.ffn_layernorm.weight'].shape == (64, )


@pytest.mark.parametrize('img,count', [(224, 220_987_392), (384, 221_279_232),
                                       (480, 221_528_064), (512, 221_623_296)])
def test_base_param_count_matches_torchscale(img, count):
    with torch.device('meta'):
        m = BEiT3('base', img_size=img, with_mask_token=True)
    assert sum(p.numel() for p in m.parameters()) == count  # backbones.md 1.4
    sd = m.state_dict()
    assert len(sd) == 491 and sorted(sd) == sorted(official_keys(12))
    assert sd['encoder.embed_positions.A.weight'].shape == ((img // 16)**2 + 3, 768)
    assert sd['text_embed.weight'].shape == (64010, 768)


def test_tokens_no_forward_uses_are_not_built():
    """The MIM mask token (pre-training only) is not built by default, nor the visual CLS when
    the caller fills that slot (Latent-VG's subject token); they are the documented skipped
    official keys, and the MIM path says what to enable."""
    m = BEiT3(arch=TINY, img_size=IMG, patch_size=PATCH, vocab_size=VOCAB)
    assert set(official_keys(2)) - set(m.state_dict()) == {'vision_embed.mask_token'}
    assert m.unbuilt_official_keys == ['vision_embed.mask_token']
    ids, img, pad = inputs()
    with pytest.raises(ValueError, match='with_mask_token=True'):
        m(ids, img, vision_masked_position=torch.zeros(3, 16))
    no_cls = BEiT3(arch=TINY, img_size=IMG, patch_size=PATCH, vocab_size=VOCAB,
                   with_cls_token=False)
    assert no_cls.unbuilt_official_keys == ['vision_embed.mask_token', 'vision_embed.cls_token']
    with pytest.raises(ValueError, match='with_cls_token=False'):
        no_cls.embed(ids, img)
    s = torch.randn(3, 1, 32)
    x_vis, _ = no_cls.embed(ids, img, visual_cls=s)
    assert torch.equal(x_vis[:, :1], s)  # the slot holds the caller's token as it is
    assert x_vis.shape == (3, 17, 32)


def test_official_tokens_skip_under_strict_loading():
    """A state dict in the official layout (with the MIM mask token and the visual CLS) loads
    with ``strict=True`` into configurations that build neither, through torch and through
    mmengine; every built tensor gets the file's value."""
    from mmengine.runner.checkpoint import load_state_dict as mmengine_load
    full = BEiT3(arch=TINY, img_size=IMG, patch_size=PATCH, vocab_size=VOCAB,
                 with_mask_token=True)
    official = {k: torch.randn_like(v) for k, v in full.state_dict().items()}
    assert {'vision_embed.mask_token', 'vision_embed.cls_token'} <= set(official)
    for kwargs in (dict(), dict(with_cls_token=False)):
        for load in (lambda m, sd: m.load_state_dict(sd, strict=True),
                     lambda m, sd: mmengine_load(m, sd, strict=True)):
            m = BEiT3(arch=TINY, img_size=IMG, patch_size=PATCH, vocab_size=VOCAB, **kwargs)
            load(m, dict(official))
            own = m.state_dict()
            assert set(official) - set(own) == set(m.unbuilt_official_keys)
            for k, v in own.items():
                assert torch.equal(v, official[k]), k
    # a key that is really unexpected still fails strict loading
    m = BEiT3(arch=TINY, img_size=IMG, patch_size=PATCH, vocab_size=VOCAB)
    with pytest.raises(RuntimeError, match='vision_embed.extra'):
        m.load_state_dict({**official, 'vision_embed.extra': torch.zeros(1)}, strict=True)


def test_large_arch_and_tuple_img_size():
    with torch.device('meta'):
        m = BEiT3('large', img_size=(224, 320))
    assert len(m.encoder.layers) == 24 and m.embed_dims == 1024
    assert m.state_dict()['encoder.embed_positions.A.weight'].shape == (14 * 20 + 3, 1024)


def test_official_init():
    m = BEiT3(arch=TINY, img_size=IMG, patch_size=PATCH, vocab_size=VOCAB)
    w = m.encoder.layers[0].self_attn.q_proj.B.weight
    assert w.abs().max() <= 0.02 and w.std() > 0.005
    assert torch.all(m.encoder.layers[0].ffn.A.fc1.bias == 0)
    assert torch.all(m.encoder.layer_norm.A.weight == 1)
    assert torch.all(m.vision_embed.cls_token == 0)
    assert abs(m.text_embed.weight.std().item() - 32**-0.5) < 0.03
    assert abs(m.encoder.embed_positions.B.weight.std().item() - 1.0) < 0.1


def test_pos_init_std_option():
    """``pos_init_std`` rescales both position tables (from-scratch tiny models) and nothing
    else; the official N(0, 1) stays the default."""
    torch.manual_seed(0)
    ref = BEiT3(arch=TINY, img_size=IMG, patch_size=PATCH, vocab_size=VOCAB)
    torch.manual_seed(0)
    m = BEiT3(arch=TINY, img_size=IMG, patch_size=PATCH, vocab_size=VOCAB, pos_init_std=0.02)
    for table in (m.encoder.embed_positions.A.weight, m.encoder.embed_positions.B.weight):
        assert abs(table.std().item() - 0.02) < 0.004  # 2-std truncation: ~0.88 x 0.02
        assert table.abs().max() <= 0.04
    ref_sd = ref.state_dict()
    others = [k for k in ref_sd if 'embed_positions' not in k]
    assert others and all(torch.equal(m.state_dict()[k], ref_sd[k]) for k in others)
    with pytest.raises(ValueError, match='pos_init_std'):
        BEiT3(arch=TINY, img_size=IMG, patch_size=PATCH, pos_init_std=0.0)


def test_bad_config_errors():
    with pytest.raises(KeyError, match='unknown arch'):
        BEiT3('huge')
    with pytest.raises(ValueError, match='divisible'):
        BEiT3(arch=TINY, img_size=30, patch_size=PATCH)


# --------------------------------------------------------------------------- independent reference
def reference(sd, ids, img, pad, heads, latents=(), eps=1e-5):
    """Equations of backbones.md 1.3 / latentvg_spec 1.3, written with functional ops over the
    official key names. ``latents``: list of [B, n_j, C] latent-group inputs (already embedded)."""
    ln = lambda x, k: F.layer_norm(x, x.shape[-1:], sd[k + '.weight'], sd[k + '.bias'], eps)  # noqa
    lin = lambda x, k: x @ sd[k + '.weight'].t() + sd[k + '.bias']  # noqa
    v = F.conv2d(img, sd['vision_embed.proj.weight'], sd['vision_embed.proj.bias'], stride=PATCH)
    v = v.flatten(2).transpose(1, 2)
    v = torch.cat([sd['vision_embed.cls_token'].expand(len(img), 1, -1), v], 1)
    v = v + sd['encoder.embed_positions.A.weight'][2:2 + v.shape[1]]
    t = sd['text_embed.weight'][ids] + sd['encoder.embed_positions.B.weight'][2:2 + ids.shape[1]]
    t = t * (~pad).unsqueeze(-1).float()
    groups = [v, t] + list(latents)
    keymask = torch.cat([torch.zeros(v.shape[:2], dtype=torch.bool), pad] +
                        [torch.zeros(z.shape[:2], dtype=torch.bool) for z in latents], 1)
    num_layers = 1 + max(int(k.split('.')[2]) for k in sd if k.startswith('encoder.layers.'))
    for i in range(num_layers):
        p = f'encoder.layers.{i}.'
        exp = lambda g: 'A' if g == 0 else 'B'  # noqa: E731  attention projections
        own = lambda g, name: (f'{p}{name}.{exp(g)}' if g < 2 else  # noqa: E731
                               f'{p}latent.{g - 2}.{name}')
        hs = [ln(x, own(g, 'self_attn_layer_norm')) for g, x in enumerate(groups)]
        q = torch.cat([lin(h, f'{p}self_attn.q_proj.{exp(g)}') for g, h in enumerate(hs)], 1)
        k = torch.cat([lin(h, f'{p}self_attn.k_proj.{exp(g)}') for g, h in enumerate(hs)], 1)
        val = torch.cat([lin(h, f'{p}self_attn.v_proj.{exp(g)}') for g, h in enumerate(hs)], 1)
        b, n, c = q.shape
        d = c // heads
        q, k, val = (z.view(b, n, heads, d).transpose(1, 2) for z in (q, k, val))
        logits = (q / d**0.5) @ k.transpose(-1, -2)
        logits = logits.masked_fill(keymask[:, None, None, :], float('-inf'))
        a = (logits.softmax(-1) @ val).transpose(1, 2).reshape(b, n, c)
        sizes = [x.shape[1] for x in groups]
        outs = []
        for g, (x, a_g) in enumerate(zip(groups, a.split(sizes, 1))):
            a_g = lin(ln(a_g, f'{p}self_attn.inner_attn_ln.{exp(g)}'),
                      f'{p}self_attn.out_proj.{exp(g)}')
            x = x + a_g
            h = ln(x, own(g, 'final_layer_norm'))
            if g < 2:
                e = f'{p}ffn.{exp(g)}'
                h = lin(ln(F.gelu(lin(h, e + '.fc1')), e + '.ffn_layernorm'), e + '.fc2')
            else:
                e = f'{p}latent.{g - 2}.ffn'
                h = F.gelu(ln(lin(h, e + '.fc'), e + '.norm'))
            outs.append(x + h)
        groups = outs
    final = ['encoder.layer_norm.A', 'encoder.layer_norm.B'] + [
        f'encoder.latent_layer_norm.{j}' for j in range(len(latents))]
    return torch.cat([ln(x, final[g]) for g, x in enumerate(groups)], 1)


def test_forward_equals_reference():
    m = tiny()
    ids, img, pad = inputs()
    with torch.no_grad():
        out = m(ids, img, pad)['encoder_out']
        ref = reference(m.state_dict(), ids, img, pad, heads=4)
    keep = torch.cat([torch.ones(3, 17, dtype=torch.bool), ~pad], 1)
    torch.testing.assert_close(out[keep], ref[keep], atol=1e-5, rtol=1e-5)


def test_latent_groups_equal_reference():
    m = tiny(num_latent_groups=2)
    ids, img, pad = inputs()
    g = torch.Generator().manual_seed(5)
    lat = [torch.randn(3, 3, 32, generator=g), torch.randn(3, 5, 32, generator=g)]
    with torch.no_grad():
        x_vis, x_txt = m.embed(ids, img)
        x = torch.cat([x_vis, x_txt] + lat, 1)
        mask = torch.cat([torch.zeros(3, 17, dtype=torch.bool), pad,
                          torch.zeros(3, 8, dtype=torch.bool)], 1)
        out = m.forward_layers(x, [17, 7, 3, 5], padding_mask=mask)
        ref = reference(m.state_dict(), ids, img, pad, heads=4, latents=lat)
    assert out.shape == (3, 17 + 7 + 8, 32)
    torch.testing.assert_close(out[~mask], ref[~mask], atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- forward semantics
def test_forward_outputs_and_modes():
    m = tiny()
    ids, img, pad = inputs()
    with torch.no_grad():
        both = m(ids, img, pad)
        text = m(textual_tokens=ids, text_padding_position=pad)
        vis = m(visual_tokens=img)
    assert both['encoder_out'].shape == (3, 17 + 7, 32)
    assert both['multiway_split_position'] == 17
    assert torch.equal(both['encoder_padding_mask'][:, 17:], pad)
    assert not both['encoder_padding_mask'][:, :17].any()
    assert torch.equal(both['encoder_embedding'][:, 17:], m.text_embed.weight[ids])
    assert torch.equal(both['encoder_embedding'][:, 0], m.vision_embed.cls_token[0].expand(3, -1))
    assert text['encoder_out'].shape == (3, 7, 32) and text['multiway_split_position'] == 0
    assert vis['encoder_out'].shape == (3, 17, 32) and vis['multiway_split_position'] == -1
    assert not vis['encoder_padding_mask'].any()
    with pytest.raises(ValueError, match='visual_tokens must be'):
        m(visual_tokens=torch.zeros(1, 3, 48, 48))
    with pytest.raises(ValueError, match='textual_tokens and/or visual_tokens'):
        m()


def test_padding_tokens_do_not_leak():
    m = tiny()
    ids, img, pad = inputs()
    ids2 = ids.clone()
    ids2[pad] = torch.randint(4, VOCAB, (int(pad.sum()), ))
    with torch.no_grad():
        for kw in (dict(visual_tokens=img), {}):
            a = m(ids, text_padding_position=pad, **kw)['encoder_out']
            b = m(ids2, text_padding_position=pad, **kw)['encoder_out']
            keep = torch.cat([torch.ones(3, a.shape[1] - 7, dtype=torch.bool), ~pad], 1)
            assert torch.allclose(a[keep], b[keep], atol=1e-6)
            assert not torch.allclose(a, m(ids2, **kw)['encoder_out'], atol=1e-3)  # mask matters


def test_multiway_routing():
    m = tiny()
    ids, img, pad = inputs()
    with torch.no_grad():
        both, vis, text = m(ids, img, pad)['encoder_out'], m(visual_tokens=img)['encoder_out'], \
            m(ids, text_padding_position=pad)['encoder_out']
        # B (language) expert perturbed: an image-only pass never touches it
        for name, p in m.named_parameters():
            if '.B.' in name:
                p.add_(1.0)
        assert torch.equal(m(visual_tokens=img)['encoder_out'], vis)
        assert not torch.allclose(m(ids, text_padding_position=pad)['encoder_out'], text)
    m = tiny()
    with torch.no_grad():
        # last FFN and output norm act per token: A changes only vision, B only text positions
        saved = m.encoder.layers[-1].ffn.A.fc2.bias.clone()
        m.encoder.layers[-1].ffn.A.fc2.bias.add_(1.0)
        out = m(ids, img, pad)['encoder_out']
        assert not torch.allclose(out[:, :17], both[:, :17]) and torch.equal(out[:, 17:],
                                                                               both[:, 17:])
        m.encoder.layers[-1].ffn.A.fc2.bias.copy_(saved)
        m.encoder.layer_norm.B.bias.add_(1.0)
        out = m(ids, img, pad)['encoder_out']
        assert torch.equal(out[:, :17], both[:, :17])
        torch.testing.assert_close(out[:, 17:], both[:, 17:] + 1.0)


def test_layerwise_api_equals_forward_bitwise():
    m = tiny()
    ids, img, pad = inputs()
    seen = []

    def hook(i, x):
        seen.append((i, x.shape))

    with torch.no_grad():
        ref = m(ids, img, pad)['encoder_out']
        x_vis, x_txt = m.embed(ids, img)
        mask = torch.cat([torch.zeros(3, 17, dtype=torch.bool), pad], 1)
        out = m.forward_layers(torch.cat([x_vis, x_txt], 1), [17, 7], mask, layer_hook=hook)
        assert torch.equal(out, ref)
        assert seen == [(0, (3, 24, 32)), (1, (3, 24, 32))]
        # embed = word/patch embedding + fairseq positions starting at 2
        pos_b = m.encoder.embed_positions.B.weight
        assert torch.equal(x_txt, m.embed_text_tokens(ids) + pos_b[2:9])
        assert torch.equal(m.embed(visual_tokens=img)[0], x_vis) and m.embed(ids)[0] is None
        # a hook's return value replaces x: zeroing after the last layer leaves only LN biases
        out = m.forward_layers(torch.cat([x_vis, x_txt], 1), [17, 7], mask,
                               layer_hook=lambda i, x: x * 0 if i == 1 else None)
        assert torch.allclose(out[:, 0], m.encoder.layer_norm.A.bias.expand(3, -1))
        assert torch.allclose(out[:, -1], m.encoder.layer_norm.B.bias.expand(3, -1))
    with pytest.raises(ValueError, match='sum to'):
        m.forward_layers(torch.zeros(1, 20, 32), [17, 7])
    with pytest.raises(ValueError, match='num_latent_groups=0'):
        m.forward_layers(torch.zeros(1, 26, 32), [17, 7, 2])


def test_latent_groups_masked_out_leave_official_output():
    """Joint attention: fully padded latent groups cannot change vision/text outputs, while
    visible ones do; each latent group routes through its own LN/FFN."""
    plain = tiny()
    m = tiny(num_latent_groups=2)
    missing, unexpected = m.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all('latent' in k for k in missing)
    assert set(plain.state_dict()) < set(m.state_dict())
    ids, img, pad = inputs()
    lat = torch.randn(3, 6, 32)
    with torch.no_grad():
        ref = plain(ids, img, pad)['encoder_out']
        x = torch.cat(list(m.embed(ids, img)) + [lat], 1)
        base = torch.cat([torch.zeros(3, 17, dtype=torch.bool), pad], 1)
        hidden = torch.cat([base, torch.ones(3, 6, dtype=torch.bool)], 1)
        out = m.forward_layers(x, [17, 7, 2, 4], hidden)
        assert torch.allclose(out[:, :24][~base], ref[~base], atol=1e-6)
        shown = torch.cat([base, torch.zeros(3, 6, dtype=torch.bool)], 1)
        out_shown = m.forward_layers(x, [17, 7, 2, 4], shown)
        assert not torch.allclose(out_shown[:, :24][~base], ref[~base], atol=1e-3)
    one = tiny(num_latent_groups=2, arch=dict(TINY, num_layers=1))
    with torch.no_grad():
        x = torch.randn(2, 17 + 7 + 5, 32)
        before = one.forward_layers(x, [17, 7, 2, 3])
        one.encoder.layers[0].latent[1].ffn.fc.weight.mul_(2.0)  # group 2 only
        after = one.forward_layers(x, [17, 7, 2, 3])
        assert torch.equal(after[:, :26], before[:, :26])
        assert not torch.allclose(after[:, 26:], before[:, 26:])
        # text FFN, not used by light latents; a non-uniform shift, since the final LayerNorm
        # cancels a constant one up to rounding
        bias = one.encoder.layers[0].ffn.B.fc2.bias
        bias.add_(torch.linspace(-1.0, 1.0, bias.numel()))
        after2 = one.forward_layers(x, [17, 7, 2, 3])
        assert torch.equal(after2[:, 24:], after[:, 24:])
        assert not torch.allclose(after2[:, 17:24], after[:, 17:24])


def test_latent_param_names_and_init_from_text():
    m = BEiT3(arch=TINY, img_size=IMG, patch_size=PATCH, vocab_size=VOCAB, num_latent_groups=2)
    extra = set(m.state_dict()) - set(official_keys(2))
    assert extra and all('.latent.' in k or 'latent_layer_norm' in k for k in extra)
    assert 'encoder.layers.1.latent.1.ffn.fc.weight' in extra
    randomize(m)
    m.init_latent_from_text()
    lay = m.encoder.layers[1]
    assert torch.equal(lay.latent[1].final_layer_norm.weight, lay.final_layer_norm.B.weight)
    assert torch.equal(m.encoder.latent_layer_norm[0].bias, m.encoder.layer_norm.B.bias)


def test_drop_path_schedule_and_eval_determinism():
    m = tiny(drop_path_rate=0.4, arch=dict(TINY, num_layers=3))
    assert [lay.drop_path for lay in m.encoder.layers] == list(np.linspace(0, 0.4, 3))
    no_dp = tiny(arch=dict(TINY, num_layers=3))
    no_dp.load_state_dict(m.state_dict())
    ids, img, pad = inputs()
    with torch.no_grad():
        a = m(ids, img, pad)['encoder_out']
        assert torch.equal(a, m(ids, img, pad)['encoder_out'])
        assert torch.equal(a, no_dp(ids, img, pad)['encoder_out'])
        m.train()
        torch.manual_seed(0)
        outs = [m(ids, img, pad)['encoder_out'] for _ in range(4)]
    assert any(not torch.allclose(o, a) for o in outs)


def test_gradient_checkpointing_same_grads_and_recomputes():
    ids, img, pad = inputs()
    grads, calls = [], []
    for with_cp in (False, True):
        m = tiny(with_cp=with_cp).train()
        # pre-hooks: a checkpointed block runs its forward again in backward
        n = []
        hooks = [b.register_forward_pre_hook(lambda *a: n.append(1)) for b in m.encoder.layers]
        m(ids, img, pad)['encoder_out'].sum().backward()
        for h in hooks:
            h.remove()
        calls.append(len(n))
        grads.append({k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None})
    n_blocks = len(m.encoder.layers)
    assert calls == [n_blocks, 2 * n_blocks], calls
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], msg=k)


def test_registered():
    from mmrefer.registry import MODELS
    m = MODELS.build(dict(type='BEiT3', arch=TINY, img_size=IMG, patch_size=PATCH,
                          vocab_size=VOCAB))
    assert isinstance(m, BEiT3)


def test_bf16_ffn_gelu_equals_torchscales_float32_gelu():
    """Under bf16 autocast the expert FFN applies torch's bf16 GELU directly (it computes in
    float32 and rounds once), which gives torchscale's ``gelu(x.float()).type_as(x)`` bitwise
    without two copies of the 4C-wide activation; the whole model agrees with a forward that
    uses torchscale's form."""
    from mmrefer.models.backbones import _beit3_layers as layers
    m = tiny(num_latent_groups=1)
    ids, img, pad = inputs()
    lat = torch.randn(ids.shape[0], 3, TINY['embed_dims'])
    x = (torch.randn(4096) * 4).bfloat16()
    assert torch.equal(F.gelu(x), F.gelu(x.float()).type_as(x))

    def torchscale_ffn(self, t):  # the GELU of torchscale, the rest as ExpertFFN
        shape = t.shape
        t = self.fc1(t.reshape(-1, shape[-1]))
        t = F.gelu(t.float()).type_as(t)
        t = layers.low_precision_layer_norm(self.ffn_layernorm, self.act_drop(t))
        return self.drop(self.fc2(t).view(shape))

    def run():
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
            v, t = m.embed(ids, img)
            x = torch.cat([v, t, lat], 1)
            mask = torch.cat([torch.zeros(3, v.shape[1], dtype=torch.bool), pad,
                              torch.zeros(3, 3, dtype=torch.bool)], 1)
            return m.forward_layers(x, [v.shape[1], t.shape[1], 3], mask)

    ours = run()
    orig = layers.ExpertFFN.forward
    layers.ExpertFFN.forward = torchscale_ffn
    try:
        ref = run()
    finally:
        layers.ExpertFFN.forward = orig
    assert torch.equal(ours, ref)
