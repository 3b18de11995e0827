"""tools/analysis_tools/paper_size_check.py and its official-layout weight writers.

The writers must produce the documented key sets (backbones.md 1.5 / 3.1 / 3.2) and load, with
every official encoder tensor taken over, into the paper-size backbones the configs build;
the key comparison must flag what it is there to flag; and ``main()`` runs end to end on paper
configs shrunk with ``--cfg-options``.
"""
import copy
import json
import math
import os.path as osp
import re
import sys

import pytest
import torch
from mmengine.config import ConfigDict

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
REALDATA = osp.join(ROOT, '..', 'shared', 'realdata')
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis_tools'))
sys.path.insert(0, osp.join(ROOT, 'tools', 'model_converters'))
import paper_size_check as psc  # noqa: E402
import paper_size_weights as psw  # noqa: E402

needs_realdata = pytest.mark.skipif(
    not osp.isdir(REALDATA), reason=f'{REALDATA} (shared real data) is absent')


def _cfg(rel):
    from mmengine.config import Config
    return Config.fromfile(osp.join(ROOT, 'configs', rel))


def _build(cfg_dict):
    from mmrefer.registry import MODELS
    from mmrefer.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    return MODELS.build(cfg_dict)


# ------------------------------------------------------------------------------- key tables
def test_beit3_official_key_list():
    """backbones.md 1.4-1.5: 491 keys at base size, mask token included, 199-row 224 table,
    220,987,392 parameters at 224."""
    shapes = psw.beit3_official_shapes()
    assert len(shapes) == 491
    assert shapes['vision_embed.mask_token'] == (1, 1, 768)
    assert shapes['encoder.embed_positions.A.weight'] == (199, 768)
    assert shapes['encoder.layers.11.ffn.B.ffn_layernorm.weight'] == (3072, )
    assert sum(math.prod(s) for s in shapes.values()) == 220_987_392
    heads = psw.beit3_pretrain_head_shapes()
    assert heads['mlm_head.weight'] == (64010, 768)


def test_swin_official_key_list():
    """Swin-B 384 / window 12 as released: 22K head, the shifted blocks' attn_mask buffers
    (none in the last stage, whose 12x12 map is one window), index buffers equal to mmdet's."""
    from mmdet.models.backbones.swin import WindowMSA
    shapes = psw.swin_official_shapes()
    masks = [k for k in shapes if k.endswith('attn_mask')]
    assert len(masks) == 1 + 1 + 9 and not any(k.startswith('layers.3.') for k in masks)
    assert shapes['layers.0.blocks.1.attn_mask'][1].shape == (64, 144, 144)
    assert shapes['head.weight'] == (21841, 1024)
    assert shapes['layers.2.blocks.0.attn.relative_position_bias_table'] == (23 * 23, 16)
    assert len(shapes) == 364
    mmdet_index = WindowMSA(128, 4, (12, 12)).relative_position_index
    assert torch.equal(shapes['layers.0.blocks.0.attn.relative_position_index'][1], mmdet_index)
    # the mask separates exactly the tokens that come from different shifted regions
    m = shapes['layers.0.blocks.1.attn_mask'][1]
    assert set(m.unique().tolist()) == {0.0, -100.0} and (m[0] == 0).all()  # window 0 is whole


def test_swin_renaming_matches_the_converter():
    """The independent official -> mmdet renaming used to check where tensors landed agrees
    with tools/model_converters/swin_to_mmrefer.py on every key it keeps."""
    import swin_to_mmrefer
    kw = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2), window_size=4,
              pretrain_img_size=128)
    gen = torch.Generator().manual_seed(0)
    official = {k: (s[1] if s[0] == 'buffer' else torch.randn(s, generator=gen))
                for k, s in psw.swin_official_shapes(**kw).items()}
    converted = swin_to_mmrefer.convert({'model': official})
    mine = {psc.swin_official_to_mmdet(k) for k in official} - {None}
    theirs = {k[len('backbone.'):] for k in converted}
    assert theirs <= mine
    # the converter drops the attn_mask buffers (mmdet recomputes them); the check skips them
    assert {k for k in mine - theirs if not k.endswith('attn_mask')} == set()


# ------------------------------------------------------------------------- compare_part logic
def test_compare_part_flags_every_failure():
    file_sd = {'beit3.a.weight': torch.ones(2), 'beit3.b.weight': torch.ones(2),
               'beit3.vision_embed.mask_token': torch.zeros(1), 'beit3.c.weight': torch.ones(2),
               'mlm_head.weight': torch.ones(3)}
    model_sd = {'a.weight': torch.ones(2), 'b.weight': torch.zeros(2),
                'encoder.latent_layer_norm.0.weight': torch.ones(2), 'd.weight': torch.ones(2)}
    rep = psc.compare_part('beit3', file_sd, model_sd,
                           lambda k: k[6:] if k.startswith('beit3.') else None)
    assert rep['loaded'] == 1
    assert rep['not_loaded'] == ['b.weight']          # same name, different value
    assert rep['unexpected'] == ['beit3.c.weight']    # neither loaded nor an allowed skip
    assert rep['missing'] == ['d.weight']             # in the model, not in the file, no reason
    assert set(rep['skipped']) == {'beit3.vision_embed.mask_token', 'mlm_head.weight'}
    assert list(rep['new_in_model']) == ['encoder.latent_layer_norm.0.weight']


def test_fold_keys():
    assert psc.fold_keys(['l.0.w', 'l.1.w', 'n.b']) == ['l.*.w x2', 'n.b']


# ------------------------------------------------------- writers -> paper-size backbones
@pytest.mark.slow  # writes and reads a 1.1 GB file: 66 s on a busy 2-core machine
def test_beit3_official_file_loads_into_paper_backbone(tmp_path):
    """The written 224 file loads through the config's init path into the 480 BEiT3-B of
    latentvg_beit3.py: every official encoder tensor is taken over (the position table
    resized), only the pretraining heads and tokens the model does not build are skipped,
    only the latent-expression modules are new."""
    path = str(tmp_path / 'beit3_base_indomain_patch16_224.pth')
    written = psw.write_beit3_official(path)
    assert len(written) == 493 and written['mlm_head.weight'] == (64010, 768)
    bb = copy.deepcopy(_cfg('latentvg_beit3.py').model.backbone)
    bb.init_cfg = ConfigDict(type='Pretrained', checkpoint=path)  # what model.pretrained does
    backbone = _build(bb)
    backbone.init_weights()
    rep = psc.check_beit3(backbone, path)
    assert (rep['unexpected'], rep['missing'], rep['not_loaded']) == ([], [], [])
    assert {'mlm_head.weight', 'mim_head.weight'} <= set(rep['skipped'])
    assert set(rep['skipped']) <= {'mlm_head.weight', 'mim_head.weight',
                                   'beit3.vision_embed.mask_token',
                                   'beit3.vision_embed.cls_token'}
    assert rep['loaded'] == 493 - len(rep['skipped'])
    assert backbone.encoder.embed_positions.A.weight.shape == (30 * 30 + 3, 768)
    assert all('latent' in k for k in rep['new_in_model'])


@needs_realdata
def test_swin_official_file_converts_and_loads_into_paper_backbone(tmp_path):
    """Official Swin-B -> swin_to_mmrefer.py (as paper_size_check runs it) -> the Swin-B of the
    InstAlign paper config: all 349 official encoder tensors land where the renaming says, only
    the classifier, its input norm and the attn_mask buffers are skipped, only the output norms
    norm0-3 are new (at weight 1, bias 0, as in the official detection backbone and ReLA)."""
    cfg = _cfg('instalign/instalign_swin-b_roberta_grefcoco.py')
    weights = psc.write_weights(cfg, ['swin'], str(tmp_path), REALDATA, 0, print)['swin']
    bb = copy.deepcopy(cfg.model.backbone)
    bb.init_cfg.checkpoint = weights['converted']  # as --cfg-options sets it
    backbone = _build(bb)
    backbone.init_weights()
    rep = psc.check_swin(backbone, weights['file'])
    assert (rep['unexpected'], rep['missing'], rep['not_loaded']) == ([], [], [])
    assert rep['loaded'] == 349 and rep['file_keys'] == 364
    assert sorted(psc.fold_keys(rep['skipped'])) == ['head.bias', 'head.weight',
                                                     'layers.*.blocks.*.attn_mask x11',
                                                     'norm.bias', 'norm.weight']
    assert sorted(rep['new_in_model']) == [f'norm{i}.{p}' for i in range(4)
                                           for p in ('bias', 'weight')]
    for i in range(4):
        norm = getattr(backbone, f'norm{i}')
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))
        assert torch.equal(norm.bias, torch.zeros_like(norm.bias))


def test_swin_converter_accepts_the_official_layout(tmp_path):
    """The official release (with its shifted-window attn_mask buffers and final norm) converts
    and passes the converter's own --arch check; the final norm is dropped (as mmdet's
    convert_weights=True, the official detection backbone and ReLA drop it), or lands on
    mmdet's norm3 with --final-norm-to-norm3."""
    import swin_to_mmrefer
    src = str(tmp_path / 'swin_base_patch4_window12_384_22k.pth')
    psw.write_swin_official(src)
    out = str(tmp_path / 'out.pth')
    assert swin_to_mmrefer.main([src, out, '--arch', 'swin-b']) == 0
    state = torch.load(out, weights_only=True)['state_dict']
    assert not any(k.endswith('attn_mask') for k in state)
    assert not any(re.match(r'backbone\.norm\d*\.', k) for k in state)
    official = torch.load(src, weights_only=True)['model']
    out3 = str(tmp_path / 'out_norm3.pth')
    assert swin_to_mmrefer.main([src, out3, '--arch', 'swin-b', '--final-norm-to-norm3']) == 0
    state3 = torch.load(out3, weights_only=True)['state_dict']
    assert torch.equal(state3['backbone.norm3.weight'], official['norm.weight'])
    assert torch.equal(state3['backbone.norm3.bias'], official['norm.bias'])
    assert set(state3) - set(state) == {'backbone.norm3.weight', 'backbone.norm3.bias'}


@needs_realdata
def test_roberta_dir_loads_into_paper_text_encoder(tmp_path):
    """A RobertaForMaskedLM save_pretrained dump with the real config and tokenizer loads into
    the paper config's HFTextEncoder (the way InstAlign does): every roberta.* tensor taken
    over, only lm_head.* skipped; the real tokenizer encodes a real sentence."""
    cfg = _cfg('instalign/instalign_swin-b_roberta_grefcoco.py')
    d = str(tmp_path / 'roberta-base')
    keys = psw.write_roberta_dir(d, osp.join(REALDATA, 'roberta-base', 'config.json'),
                                 osp.join(REALDATA, 'roberta-base'))
    assert not any(k.startswith('roberta.pooler') for k in keys)
    assert any(k.startswith('lm_head.') for k in keys)
    enc = _build(dict(cfg.model.text_encoder, pretrained=d, tokenizer_dir=d))
    enc.init_weights()
    rep = psc.check_roberta(enc.model, d)
    assert (rep['unexpected'], rep['missing'], rep['not_loaded']) == ([], [], [])
    assert rep['loaded'] == len([k for k in keys if k.startswith('roberta.')]) == 197
    assert all(k.startswith('lm_head.') for k in rep['skipped'])
    ids = enc.tokenizer(['man in red shirt on the left'])['input_ids'][0].tolist()
    assert len(enc.tokenizer) == 50265 and ids[0] == 0 and 2 in ids and 3 not in ids


@needs_realdata
def test_sentence_spm_tokenizes_real_sentences(tmp_path):
    """The BEiT-3 stand-in tokenizer: XLM-R layout trained on real RefCOCO sentences, so a real
    sentence becomes whole-word pieces, not characters or <unk>."""
    from mmrefer.models.language_models import BEiT3Tokenizer
    csvs = [p for p in psw.real_sentence_csvs(REALDATA) if 'refcoco_unc_val' in p]
    info = psw.train_sentence_spm(str(tmp_path / 'beit3.spm'), csvs, vocab_size=2000)
    assert 1000 < info['pieces'] <= 2000 and info['sentences'] > 5000
    tok = BEiT3Tokenizer(str(tmp_path / 'beit3.spm'), max_length=20)
    ids = tok(['the man on the left'])['input_ids'][0].tolist()
    n = sum(i != tok.pad_token_id for i in ids)
    assert ids[0] == 0 and ids[n - 1] == 2 and n == 2 + 5  # one piece per word
    assert 3 not in ids[:n] and max(ids) <= info['pieces']


# ----------------------------------------------------------------------------- end to end
SHRINK_LATENTVG = [
    'model.backbone.arch._delete_=True', 'model.backbone.arch.embed_dims=32',
    'model.backbone.arch.num_layers=2', 'model.backbone.arch.num_heads=2',
    'model.backbone.arch.ffn_ratio=2', 'model.latent_init.embed_dims=32',
    'model.concept_injector.embed_dims=32', 'model.concept_injector.num_concepts=8',
    'model.head.in_channels=32', 'model.head.feat_channels=16', 'model.head.embed_dims=16',
    'model.head.num_decoder_layers=1', 'model.head.decoder_heads=2',
    'model.head.decoder_ffn_dims=32', 'model.head.mlp_hidden_dims=32']


@needs_realdata
@pytest.mark.slow
def test_main_latentvg_combined_shrunk(tmp_path):
    """main() on the combined-RefCOCO Latent-VG config (ConcatDataset of three RefCOCO-format
    sets, RIS + REC evaluators) shrunk to a 2-layer 32-wide BEiT-3 at 480."""
    out = tmp_path / 'r.json'
    rep = psc.main([osp.join(ROOT, 'configs', 'latentvg_beit3.py'), '--iters', '1',
                    '--overfit-iters', '2', '--val-samples', '2', '--real-photos', '2',
                    '--threads', '1', '--work-dir', str(tmp_path / 'wd'), '--out', str(out),
                    '--cfg-options'] + SHRINK_LATENTVG)
    data = json.loads(out.read_text())
    assert data['ok'] is True and data['failures'] == [] and data['nonfinite'] == []
    assert data['parts'] == ['beit3'] and data['loaded_keys']['beit3'].endswith('of 93 file keys')
    assert {'mlm_head.weight', 'mim_head.weight'} <= set(data['skipped_keys']['beit3'])
    assert data['unexpected_keys'] == {'beit3': []} and data['missing_keys'] == {'beit3': []}
    assert len(data['train_losses']) == 1 and len(data['overfit_curve']) == 2
    assert data['loss_first'] == data['overfit_curve'][0]
    assert data['overfit_loss_ratio'] == pytest.approx(
        data['overfit_curve'][1] / data['overfit_curve'][0], rel=1e-3)
    assert set(data['loss_terms_first']) == set(data['loss_terms_last']) >= {'loss_mask'}
    assert data['val_samples'] == 2 and 'ris/mIoU' in data['val_metrics'] \
        and 'rec/Acc@0.5' in data['val_metrics']
    assert data['real_photos_sentences'] == 2 and data['real_photos_s_per_sentence'] > 0
    assert data['params_total'] > 0 and data['peak_rss_mb'] > 0 and data['infer_s_per_img'] > 0
    assert data['train_s_per_iter'] > 0 and data['overfit_s_per_iter'] > 0
    assert all(isinstance(v, str) for v in data['params_without_grad'].values())
    assert 'sentencepiece' in data['beit3_tokenizer']
    # SynthRef at COCO-like sizes, with the refcoco+ / refcocog names the ConcatDataset reads
    syn = tmp_path / 'wd' / 'synthref_coco'
    assert (syn / 'refcoco+' / 'refs(unc).p').exists()
    assert (syn / 'refcocog' / 'refs(umd).p').exists()
    imgs = json.loads((syn / 'refcoco' / 'instances.json').read_text())['images']
    assert (imgs[0]['width'], imgs[0]['height']) == (640, 427)
    assert rep['config'].endswith('latentvg_beit3.py')


SHRINK_INSTALIGN = [
    'model.backbone.embed_dims=16', 'model.backbone.depths=[2,2,2,2]',
    'model.backbone.num_heads=[1,1,2,2]', 'model.backbone.drop_path_rate=0.0',
    'model.text_encoder.arch.hidden_size=32', 'model.text_encoder.arch.num_hidden_layers=1',
    'model.text_encoder.arch.num_attention_heads=2', 'model.text_encoder.arch.intermediate_size=64',
    'model.head.in_channels=[16,32,64,128]', 'model.head.feat_channels=32',
    'model.head.num_queries=4', 'model.head.pixel_decoder.norm_cfg.num_groups=8',
    'model.head.pixel_decoder.encoder.num_layers=1',
    'model.head.pixel_decoder.encoder.layer_cfg.self_attn_cfg.embed_dims=32',
    'model.head.pixel_decoder.encoder.layer_cfg.self_attn_cfg.num_heads=2',
    'model.head.pixel_decoder.encoder.layer_cfg.self_attn_cfg.num_points=1',
    'model.head.pixel_decoder.encoder.layer_cfg.ffn_cfg.embed_dims=32',
    'model.head.pixel_decoder.encoder.layer_cfg.ffn_cfg.feedforward_channels=64',
    'model.head.pixel_decoder.positional_encoding.num_feats=16',
    'model.head.decoder.num_layers=3', 'model.head.decoder.num_heads=2',
    'model.head.decoder.ffn_dims=64', 'model.head.positional_encoding.num_feats=16']


@needs_realdata
@pytest.mark.slow
def test_main_instalign_shrunk(tmp_path):
    """main() on the InstAlign gRefCOCO config shrunk (Swin 16-wide with shifted blocks, a
    1-layer RoBERTa with the real tokenizer): the official Swin layout goes through the
    converter, RoBERTa through save_pretrained, GRES evaluation runs."""
    out = tmp_path / 'r.json'
    psc.main([osp.join(ROOT, 'configs', 'instalign', 'instalign_swin-b_roberta_grefcoco.py'),
              '--iters', '1', '--overfit-iters', '2', '--val-samples', '2',
              '--real-photos', '2', '--threads', '1', '--work-dir', str(tmp_path / 'wd'),
              '--out', str(out), '--cfg-options'] + SHRINK_INSTALIGN)
    data = json.loads(out.read_text())
    assert data['ok'] is True and data['nonfinite'] == []
    assert data['parts'] == ['swin', 'roberta']
    assert sorted(psc.fold_keys(data['skipped_keys']['swin'])) == [
        'head.bias', 'head.weight', 'layers.*.blocks.*.attn_mask x3', 'norm.bias', 'norm.weight']
    assert all(k.startswith('lm_head.') for k in data['skipped_keys']['roberta'])
    assert data['missing_keys'] == {'swin': [], 'roberta': []}
    assert 'gres/gIoU' in data['val_metrics'] and len(data['overfit_curve']) == 2
    # the config's base lr 1e-4 for every parameter (the paper's one learning rate), no warm-up
    assert data['overfit_lr'] == pytest.approx([1e-04])
    assert data['real_photos_sentences'] == 2
