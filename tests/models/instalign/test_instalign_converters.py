"""tools/model_converters/swin_to_mmrefer.py: official Swin keys -> mmdet SwinTransformer."""
import importlib.util
import os.path as osp

import pytest
import torch
from mmengine.config import ConfigDict

PATH = osp.join(osp.dirname(__file__), '..', '..', '..', 'tools', 'model_converters',
                'swin_to_mmrefer.py')


def _tool():
    spec = importlib.util.spec_from_file_location('swin_to_mmrefer', PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _to_official(mmdet_state):
    """Inverse of mmdet's key rules, written independently: builds an official-style dict."""
    out = {}
    for k, v in mmdet_state.items():
        if 'relative_position_index' in k:
            continue
        if k.startswith('norm3.'):
            out['norm.' + k[len('norm3.'):]] = v
            continue
        if k.startswith('norm'):
            continue  # mmdet's other output norms have no official counterpart
        nk = k.replace('stages.', 'layers.', 1).replace('attn.w_msa.', 'attn.')
        nk = nk.replace('ffn.layers.0.0.', 'mlp.fc1.').replace('ffn.layers.1.', 'mlp.fc2.')
        nk = nk.replace('patch_embed.projection', 'patch_embed.proj')
        if 'downsample.reduction.weight' in k:
            o, i = v.shape
            v = v.reshape(o, i // 4, 4).transpose(1, 2)[:, [0, 2, 1, 3]].reshape(o, i)
        elif 'downsample.norm.' in k:
            v = v.reshape(-1, 4).transpose(0, 1)[[0, 2, 1, 3]].reshape(-1)
        out[nk] = v
    out['head.weight'] = torch.zeros(10, 768)
    return out


def test_roundtrip_swin_t(tmp_path):
    from mmdet.models.backbones import SwinTransformer
    tool = _tool()
    torch.manual_seed(0)
    ref = SwinTransformer(**tool.ARCHS['swin-t'])
    ref_state = {k: v.clone() for k, v in ref.state_dict().items()}
    src = tmp_path / 'official.pth'
    torch.save({'model': _to_official(ref_state)}, str(src))
    dst = tmp_path / 'converted.pth'
    assert tool.main([str(src), str(dst), '--arch', 'swin-t']) == 0
    state = torch.load(str(dst), weights_only=True)['state_dict']
    assert 'backbone.head.weight' not in state
    # the final norm is dropped: mmdet's output norms norm0-3 have no official counterpart
    assert not any(k.startswith('backbone.norm') for k in state)
    for k, v in ref_state.items():
        if 'relative_position_index' in k or k.startswith('norm'):
            continue
        assert torch.equal(state['backbone.' + k], v), k
    # and it loads through mmdet's own init path (convert_weights=False, Pretrained)
    fresh = SwinTransformer(**tool.ARCHS['swin-t'], convert_weights=False,
                            init_cfg=ConfigDict(type='Pretrained', checkpoint=str(dst)))
    fresh.init_weights()
    assert torch.equal(fresh.stages[2].blocks[1].attn.w_msa.qkv.weight,
                       ref.stages[2].blocks[1].attn.w_msa.qkv.weight)
    assert torch.equal(fresh.stages[0].downsample.reduction.weight,
                       ref.stages[0].downsample.reduction.weight)


def test_rejects_non_swin(tmp_path):
    tool = _tool()
    with pytest.raises(KeyError, match='layers'):
        tool.convert({'model': {'encoder.weight': torch.zeros(1)}})
    partial = _to_official({'stages.0.blocks.0.norm1.weight': torch.ones(96)})
    with pytest.raises(ValueError, match='missing'):
        tool.check(tool.convert(partial), 'swin-t')


def test_command_line_names_the_file_and_what_is_wrong(tmp_path, capsys):
    """Usage errors (exit 2) naming the file: missing, not a checkpoint, an mmengine training
    checkpoint, not Swin keys; nothing is written."""
    tool = _tool()
    (tmp_path / 'notes.pth').write_text('not a checkpoint')
    torch.save({'state_dict': {'backbone.stages.0.w': torch.zeros(1),
                               'head.x': torch.zeros(1)}}, str(tmp_path / 'epoch_1.pth'))
    torch.save({'model': {'encoder.weight': torch.zeros(1)}}, str(tmp_path / 'vit.pth'))
    dst = tmp_path / 'out.pth'
    for src, words in (('nope.pth', 'checkpoint file not found'),
                       ('notes.pth', 'is not a PyTorch checkpoint'),
                       ('epoch_1.pth', 'an mmengine training checkpoint'),
                       ('vit.pth', 'no "layers.*" keys')):
        with pytest.raises(SystemExit) as e:
            tool.main([str(tmp_path / src), str(dst), '--arch', 'swin-t'])
        err = capsys.readouterr().err
        assert e.value.code == 2 and src in err and words in err, err
    assert not dst.exists()


def test_converted_file_and_convert_weights_give_the_same_features(tmp_path):
    """The two documented ways to load the official file (converted once, convert_weights=False;
    or the official file with mmdet's convert_weights=True) build the same Swin, output norms
    included; --final-norm-to-norm3 differs from both only in norm3 (the final norm's affine)."""
    from mmdet.models.backbones import SwinTransformer
    tool = _tool()
    torch.manual_seed(0)
    ref = SwinTransformer(**tool.ARCHS['swin-t'])
    official = _to_official(ref.state_dict())
    official['norm.weight'] = torch.rand(768) + 0.5
    official['norm.bias'] = torch.randn(768)
    src = tmp_path / 'official.pth'
    torch.save({'model': official}, str(src))

    def load(path, convert):
        torch.manual_seed(1)  # other random draws for anything not loaded
        m = SwinTransformer(**tool.ARCHS['swin-t'], convert_weights=convert,
                            init_cfg=ConfigDict(type='Pretrained', checkpoint=str(path)))
        m.init_weights()
        m.eval()  # mmdet's SwinTransformer.train returns None
        return m

    outs = {}
    for name, flags in (('default', []), ('norm3', ['--final-norm-to-norm3'])):
        dst = tmp_path / f'{name}.pth'
        assert tool.main([str(src), str(dst), '--arch', 'swin-t'] + flags) == 0
        outs[name] = load(dst, False)
    outs['mmdet'] = load(src, True)
    x = torch.randn(1, 3, 100, 76)  # not a multiple of the window: padded inside
    with torch.no_grad():
        feats = {k: m(x) for k, m in outs.items()}
    for a, b in zip(feats['default'], feats['mmdet']):
        assert torch.equal(a, b)
    for a, b in zip(feats['default'][:3], feats['norm3'][:3]):
        assert torch.equal(a, b)
    # norm3 with the final norm's affine: the same standardised feature, scaled and shifted
    w, b = official['norm.weight'][:, None, None], official['norm.bias'][:, None, None]
    torch.testing.assert_close(feats['norm3'][3], feats['default'][3] * w + b)


def test_instalign_refuses_a_swin_file_that_fits_nothing(tmp_path):
    """model.backbone.init_cfg pointing at an unconverted official file (mmdet: IndexError) or
    at another model's checkpoint (mmdet: loads nothing, silently): a ValueError naming the
    file and the fix; a converted file of the right architecture loads."""
    import copy

    from mmdet.models.backbones import SwinTransformer
    from test_instalign import tiny_model_cfg

    from mmrefer.registry import MODELS
    tool = _tool()
    arch = dict(embed_dims=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], window_size=4)
    official = _to_official(SwinTransformer(**arch).state_dict())
    torch.save({'model': official}, str(tmp_path / 'official.pth'))
    torch.save({'state_dict': {'backbone.encoder.layers.0.w': torch.zeros(2)}},
               str(tmp_path / 'other.pth'))
    torch.save({'state_dict': tool.convert({'model': official})}, str(tmp_path / 'good.pth'))
    for name, words in (('official.pth', "has no 'backbone.\\*' keys"),
                        ('other.pth', "none of the model's \\d+ keys")):
        cfg = copy.deepcopy(tiny_model_cfg())
        cfg['backbone']['init_cfg'] = ConfigDict(type='Pretrained',
                                                 checkpoint=str(tmp_path / name))
        with pytest.raises(ValueError, match=rf'{name} \(model\.backbone\.init_cfg\.checkpoint\)'
                                             rf'.*{words}'):
            MODELS.build(cfg).init_weights()
    cfg = copy.deepcopy(tiny_model_cfg())
    cfg['backbone']['init_cfg'] = ConfigDict(type='Pretrained',
                                             checkpoint=str(tmp_path / 'good.pth'))
    MODELS.build(cfg).init_weights()
