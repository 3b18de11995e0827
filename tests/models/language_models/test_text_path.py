"""The one text path: TokenizeText in the pipeline and the detectors' tokenize_samples give the
same ids with the same tokenizer component; words come from the tokenizer's offsets."""
import pytest
import torch
from mmdet.structures import DetDataSample

from mmrefer.datasets.transforms import PackRefInputs, TokenizeText
from mmrefer.models.language_models import (BEiT3Tokenizer, HFTokenizer, build_tokenizer,
                                            token_words, tokenize_samples)

TEXTS = ['The red circle on the left', 'all green squares']


@pytest.mark.parametrize('kind', ['spm', 'hf'])
def test_pipeline_and_model_tokenize_alike(kind, synthref_beit3_spm, synthref_roberta_dir):
    cfg = (dict(type='BEiT3Tokenizer', spm_path=synthref_beit3_spm, max_length=12,
                lower_case=True) if kind == 'spm' else
           dict(type='HFTokenizer', path=synthref_roberta_dir, max_length=12, lower_case=True))
    tok = build_tokenizer(cfg)
    assert isinstance(tok, BEiT3Tokenizer if kind == 'spm' else HFTokenizer)
    raw = [DetDataSample(metainfo=dict(text=t)) for t in TEXTS]
    direct = tokenize_samples(tok, raw)
    transform = TokenizeText(tokenizer=cfg, max_length=12)
    packed = [PackRefInputs()(transform(dict(img=torch.zeros(4, 4, 3).numpy(), text=t)))
              ['data_samples'] for t in TEXTS]
    pre = tokenize_samples(tok, packed)
    assert torch.equal(pre['input_ids'], direct['input_ids'])
    assert torch.equal(pre['attention_mask'], direct['attention_mask'])
    assert pre['offsets'] == direct['offsets']
    words = token_words(TEXTS, direct['offsets'])
    assert words[0][0] == ''  # <s>
    assert 'red' in ''.join(words[0]) and 'squares' in ''.join(words[1])
    n = int(direct['attention_mask'][1].sum())
    assert all(w == '' for w in words[1][n:])  # pads


def test_pretokenized_length_must_match_the_model(synthref_beit3_spm):
    tok = BEiT3Tokenizer(synthref_beit3_spm, max_length=12)
    ds = DetDataSample(metainfo=dict(text='x', input_ids=torch.zeros(10, dtype=torch.long)))
    with pytest.raises(ValueError, match='has 10 input_ids but the model reads 12'):
        tokenize_samples(tok, [ds])
    with pytest.raises(KeyError, match='no str metainfo "text"'):
        tokenize_samples(tok, [DetDataSample(metainfo=dict(img_path='a.jpg'))])


def test_beit3_offsets_are_character_spans(synthref_beit3_spm):
    tok = BEiT3Tokenizer(synthref_beit3_spm, max_length=16)
    text = 'the blue square é'
    out = tok([text])
    n = int(out['attention_mask'][0].sum())
    spans = out['offsets'][0]
    assert spans[0] == (0, 0) and spans[n - 1] == (0, 0)  # <s>, </s>
    inner = spans[1:n - 1]
    assert ''.join(text[a:b] for a, b in inner).replace(' ', '') == text.replace(' ', '')


def test_hf_tokenizer_refuses_a_folder_of_the_other_model_type(tmp_path):
    """A BERT vocabulary given as a RoBERTa tokenizer would load as a 5-token vocabulary and turn
    every sentence into <s></s>: refused, naming the files it needs."""
    (tmp_path / 'vocab.txt').write_text('[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n')
    tok = HFTokenizer(str(tmp_path), max_length=8, model_type='roberta')
    with pytest.raises(FileNotFoundError, match=r'merges.txt \+ vocab.json or tokenizer.json'):
        tok(['the'])


def test_hf_tokenizer_names_the_folder_of_a_corrupt_vocabulary(tmp_path, synthref_roberta_dir):
    """A cut-off vocab.json: the tokenizers library's BPE error, wrapped to name the folder and
    its files."""
    import shutil
    bad = tmp_path / 'tok'
    shutil.copytree(synthref_roberta_dir, bad)
    (bad / 'vocab.json').write_text((bad / 'vocab.json').read_text()[:50])
    tok = HFTokenizer(str(bad), max_length=8, model_type='roberta')
    with pytest.raises(ValueError, match=rf"cannot load the tokenizer files in {bad} .*"
                                         r"vocab\.json"):
        tok(['the'])
