"""HFTextEncoder: inline architecture, lazy local tokenizer, weights only in init_weights."""
import os

import pytest
import torch

from mmrefer.models.language_models.text_encoder import HFTextEncoder

TINY = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=40)


@pytest.fixture(scope='module')
def roberta_tok_dir(tmp_path_factory):
    from model_helpers import make_bpe_dir
    return make_bpe_dir(tmp_path_factory.mktemp('rob_tok'),
                        ['the red circle on the left', 'all green squares', 'big blue'])


def _enc(tok_dir=None, **kw):
    return HFTextEncoder(arch=dict(TINY, vocab_size=300), tokenizer_dir=tok_dir, max_length=8,
                         **kw)


def test_build_needs_no_file():
    enc = _enc('/nonexistent/dir', pretrained='/nonexistent/weights')
    assert enc.embed_dims == 16
    with pytest.raises(FileNotFoundError, match='tokenizer_dir'):
        enc(['a red circle'])
    with pytest.raises(FileNotFoundError, match='pretrained'):
        enc.init_weights()


def test_forward_shapes_and_ids(roberta_tok_dir):
    enc = _enc(roberta_tok_dir).eval()
    out = enc(['the red circle on the left', 'big blue'])
    assert out['word_feats'].shape == (2, 8, 16)
    assert out['attention_mask'].shape == (2, 8)
    ids = enc.tokenizer.tok('big blue')['input_ids']  # the transformers tokenizer itself
    assert out['input_ids'][1, :len(ids)].tolist() == ids
    assert out['attention_mask'][1].sum() == len(ids)
    # pre-tokenized ids give the same features
    again = enc(input_ids=out['input_ids'], attention_mask=out['attention_mask'])
    assert torch.allclose(again['word_feats'], out['word_feats'])
    # words for display come from the tokenizer's offsets into the sentence
    from mmrefer.models.language_models import token_words
    texts = ['the red circle on the left', 'big blue']
    words = token_words(texts, enc.tokenizer(texts)['offsets'])
    assert words[0][0] == '' and 'red' in words[0] and words[1][1:3] == ['big', 'blue']


def test_init_weights_loads_local_dir(tmp_path, roberta_tok_dir):
    from transformers import RobertaConfig, RobertaModel
    cfg = RobertaConfig(vocab_size=300, type_vocab_size=1, pad_token_id=1, bos_token_id=0,
                        eos_token_id=2, layer_norm_eps=1e-5, **TINY)
    src = RobertaModel(cfg, add_pooling_layer=False)
    src.save_pretrained(str(tmp_path))
    enc = _enc(roberta_tok_dir, pretrained=str(tmp_path))
    enc.init_weights()
    for k, v in src.state_dict().items():
        assert torch.equal(enc.model.state_dict()[k], v), k
    wrong = HFTextEncoder(arch=dict(TINY, vocab_size=300, hidden_size=32, num_attention_heads=4),
                          pretrained=str(tmp_path), max_length=8)
    with pytest.raises(ValueError, match='does not match'):
        wrong.init_weights()


def test_bad_args(roberta_tok_dir):
    with pytest.raises(ValueError, match='model_type'):
        HFTextEncoder(model_type='gpt2')
    with pytest.raises(ValueError, match='max_position_embeddings'):
        HFTextEncoder(arch=dict(TINY, vocab_size=300), max_length=39)
    small = HFTextEncoder(arch=dict(TINY, vocab_size=50), tokenizer_dir=roberta_tok_dir)
    with pytest.raises(ValueError, match='vocab_size'):
        small(['red'])
    with pytest.raises(ValueError, match='list of str'):
        _enc(roberta_tok_dir)('red')


def test_bert_variant_builds():
    enc = HFTextEncoder(model_type='bert', arch=dict(TINY, vocab_size=200), max_length=8)
    out = enc(input_ids=torch.tensor([[101, 5, 6, 102, 0, 0, 0, 0]]))
    assert out['attention_mask'].tolist() == [[1, 1, 1, 1, 0, 0, 0, 0]]


def test_check_text_encoder_dir_tool(tmp_path, roberta_tok_dir):
    import importlib.util
    path = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'tools', 'model_converters',
                        'check_text_encoder_dir.py')
    spec = importlib.util.spec_from_file_location('check_dir', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([roberta_tok_dir]) == 0
    assert mod.main([str(tmp_path)]) == 1  # empty dir: no tokenizer files
    with pytest.raises(FileNotFoundError, match='config.json'):
        mod.check_dir(roberta_tok_dir, weights=True)


def test_truncation_matches_hf_and_is_counted(synthref_roberta_dir):
    enc = HFTextEncoder(arch=dict(TINY, vocab_size=400), tokenizer_dir=str(synthref_roberta_dir),
                        max_length=8)
    texts = ['the red circle', 'the big yellow circle on the left of the small blue square', 'x']
    with pytest.warns(UserWarning, match='truncated'):
        ours = enc.tokenizer(texts)
    ref = enc.tokenizer.tok(texts, padding='max_length', truncation=True, max_length=8,
                            return_tensors='pt')
    assert torch.equal(ours['input_ids'], ref['input_ids'])
    assert torch.equal(ours['attention_mask'], ref['attention_mask'])
    assert enc.num_truncated == 1


def test_all_pad_row_keeps_one_valid_position(synthref_roberta_dir):
    enc = HFTextEncoder(arch=dict(TINY, vocab_size=400), tokenizer_dir=str(synthref_roberta_dir),
                        max_length=6)
    pad = enc.model.config.pad_token_id
    ids = torch.tensor([[pad] * 6, [0, 10, 11, 2, pad, pad]])
    out = enc(input_ids=ids)
    assert out['attention_mask'][0].tolist() == [1, 0, 0, 0, 0, 0]
    assert out['attention_mask'][1].tolist() == [1, 1, 1, 1, 0, 0]
    assert torch.isfinite(out['word_feats']).all()


def test_lower_case_option(synthref_roberta_dir):
    kw = dict(arch=dict(TINY, vocab_size=400), tokenizer_dir=str(synthref_roberta_dir),
              max_length=8)
    cased, lower = HFTextEncoder(**kw), HFTextEncoder(lower_case=True, **kw)
    ref = cased.tokenizer(['the red circle'])['input_ids']
    assert torch.equal(lower.tokenizer(['The Red circle'])['input_ids'], ref)
    assert not torch.equal(cased.tokenizer(['The Red circle'])['input_ids'], ref)
