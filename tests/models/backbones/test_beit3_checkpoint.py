"""Loading official-layout BEiT-3 checkpoints: prefix stripping, position-table interpolation,
missing/unexpected keys, shape errors, and tools/model_converters/beit3_to_mmrefer.py."""
import importlib.util
import os.path as osp

import pytest
import torch
import torch.nn.functional as F

from mmrefer.models.backbones._beit3_checkpoint import interpolate_pos_embed
from mmrefer.models.backbones.beit3 import BEiT3

TINY = dict(embed_dims=32, num_layers=2, num_heads=4, ffn_ratio=2)
POS = 'encoder.embed_positions.A.weight'
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def tiny(img, **kw):
    return BEiT3(arch=TINY, img_size=img, patch_size=8, vocab_size=50, **kw)


def official_file(tmp_path, model_224, heads=True):
    """``{'model': {'beit3.' + k: randn}}`` + unilm task heads, as torch.save'd by unilm."""
    g = torch.Generator().manual_seed(0)
    sd = {'beit3.' + k: torch.randn(v.shape, generator=g) for k, v in
          model_224.state_dict().items()}
    if heads:
        sd.update({'vision_head.weight': torch.randn(32, 32), 'logit_scale': torch.tensor(1.)})
    path = str(tmp_path / 'beit3_official.pth')
    torch.save({'model': sd, 'args': None}, path)
    return path, sd


def expected_pos(old, grid):
    """Independent resize: rows 0-2 kept, g x g patch grid bicubic-resized to ``grid``."""
    g = int((old.shape[0] - 3)**0.5)
    patches = old[3:].T.reshape(1, -1, g, g)
    new = F.interpolate(patches, size=grid, mode='bicubic', align_corners=False)
    return torch.cat([old[:3], new.reshape(old.shape[1], -1).T], 0)


def test_pretrained_init_cfg_interpolates_and_loads_everything(tmp_path):
    path, sd = official_file(tmp_path, tiny(32))  # grid 4x4 -> 19 rows
    m = tiny(48, init_cfg=dict(type='Pretrained', checkpoint=path))  # grid 6x6 -> 39 rows
    m.init_weights()
    new = m.state_dict()
    assert new[POS].shape == (39, 32)
    assert torch.equal(new[POS][:3], sd['beit3.' + POS][:3])
    torch.testing.assert_close(new[POS], expected_pos(sd['beit3.' + POS], (6, 6)))
    for k, v in new.items():
        if k != POS:
            assert torch.equal(v, sd['beit3.' + k]), k
    missing, unexpected = m.load_checkpoint(path)
    assert missing == [] and unexpected == []


def test_latent_model_only_misses_latent_keys(tmp_path):
    path, sd = official_file(tmp_path, tiny(32))
    m = tiny(32, num_latent_groups=2)
    missing, unexpected = m.load_checkpoint(path)
    assert unexpected == [] and missing
    assert all('.latent.' in k or 'latent_layer_norm' in k for k in missing)
    assert len(missing) == len(set(m.state_dict()) - {k[6:] for k in sd if k.startswith('beit3.')})
    # latent LayerNorms start from the loaded language-expert ones
    lay = m.encoder.layers[0]
    assert torch.equal(lay.latent[1].self_attn_layer_norm.weight,
                       sd['beit3.encoder.layers.0.self_attn_layer_norm.B.weight'])


def test_shape_mismatch_names_key_and_shapes(tmp_path):
    path, _ = official_file(tmp_path, BEiT3(arch=dict(TINY, embed_dims=16), img_size=32,
                                            patch_size=8, vocab_size=50))
    with pytest.raises(ValueError, match=r'text_embed.weight: checkpoint \(50, 16\) vs model '
                                         r'\(50, 32\)'):
        tiny(32).load_checkpoint(path)
    with pytest.raises(KeyError, match='prefix'):
        tiny(32).load_checkpoint(path, prefix='nothing.')
    with pytest.raises(FileNotFoundError, match='no_such.pth'):
        tiny(32).load_checkpoint(str(tmp_path / 'no_such.pth'))


def test_interpolate_pos_embed_rules():
    pos = torch.randn(3 + 16, 8)
    assert interpolate_pos_embed(pos, (4, 4)) is pos
    out = interpolate_pos_embed(pos, (2, 6))
    assert out.shape == (3 + 12, 8) and torch.equal(out[:3], pos[:3])
    # a constant grid stays constant under bicubic resizing
    const = torch.cat([torch.randn(3, 8), torch.ones(16, 8) * 0.5])
    torch.testing.assert_close(interpolate_pos_embed(const, (6, 6))[3:], torch.full((36, 8), .5))
    with pytest.raises(ValueError, match='square'):
        interpolate_pos_embed(torch.randn(3 + 15, 8), (4, 4))


def _converter():
    spec = importlib.util.spec_from_file_location(
        'beit3_to_mmrefer', osp.join(ROOT, 'tools', 'model_converters', 'beit3_to_mmrefer.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_converter_tool_roundtrip(tmp_path):
    path, sd = official_file(tmp_path, tiny(32))
    dst = str(tmp_path / 'out' / 'conv.pth')
    _converter().main([path, dst, '--img-size', '48', '--patch-size', '8'])
    out = torch.load(dst, weights_only=True)
    assert all(k.startswith('backbone.') for k in out)
    assert 'backbone.vision_head.weight' not in out and len(out) == len(tiny(48).state_dict())
    torch.testing.assert_close(out['backbone.' + POS], expected_pos(sd['beit3.' + POS], (6, 6)))
    # the converted file loads back (prefix auto-detected) with nothing missing
    m = tiny(48)
    assert m.load_checkpoint(dst) == ([], [])
    assert torch.equal(m.state_dict()[POS], out['backbone.' + POS])
    bare = str(tmp_path / 'bare.pth')
    _converter().main([path, bare, '--img-size', '32', '48', '--patch-size', '8', '--prefix', ''])
    assert torch.load(bare, weights_only=True)[POS].shape == (3 + 4 * 6, 32)


@pytest.mark.slow
@pytest.mark.filterwarnings('ignore:.*meta parameter')
def test_base_arch_224_checkpoint_loads_into_480(tmp_path):
    """Real 'base' key set/shapes, at almost no memory: the checkpoint holds zero-stride
    expanded tensors and the 480 model lives on the meta device."""
    with torch.device('meta'):
        src = BEiT3('base', img_size=224)
    one = torch.zeros(1)
    sd = {'beit3.' + k: one.expand(v.shape) for k, v in src.state_dict().items()}
    sd['beit3.' + POS] = torch.randn(199, 768)
    sd['vision_head.weight'] = one.expand(768, 768)
    path = str(tmp_path / 'beit3_base_patch16_224.pth')
    torch.save({'model': sd}, path)
    assert osp.getsize(path) < 5_000_000
    with torch.device('meta'):
        m = BEiT3('base', img_size=480, num_latent_groups=2)
    missing, unexpected = m.load_checkpoint(path)
    assert unexpected == []
    assert missing and all('latent' in k for k in missing)
    assert m.state_dict()[POS].shape == (903, 768)


def test_a_file_without_backbone_tensors_is_refused(tmp_path):
    """model.pretrained pointing at another model's checkpoint (InstAlign's here): nothing
    would load, so it is an error naming the file, not a from-scratch run with a warning."""
    path = str(tmp_path / 'instalign_epoch_1.pth')
    torch.save({'state_dict': {'backbone.stages.0.blocks.0.attn.w': torch.zeros(2),
                               'head.query_feat.weight': torch.zeros(2, 2)}}, path)
    with pytest.raises(ValueError, match=r'no backbone tensor in .*instalign_epoch_1\.pth'):
        tiny(32).load_checkpoint(path)
