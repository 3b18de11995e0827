"""BEiT3Tokenizer against transformers' XLMRobertaTokenizer and a hand computation, on a tiny
sentencepiece model trained on the fly (XLM-R layout: unk=0, bos=1, eos=2, no pad)."""
import io
import warnings

import pytest
import torch

from mmrefer.models.language_models.beit3_tokenizer import BEiT3Tokenizer

SENTS = ['the man on the left', 'red cup near the small dog', 'a big green chair',
         'two  spaces here', 'blue car, right!']


@pytest.fixture(scope='module')
def spm_file(tmp_path_factory):
    import sentencepiece as spm
    words = [('red', 'blue', 'green', 'small', 'big'), ('cup', 'man', 'dog', 'car', 'chair'),
             ('left', 'right')]
    corpus = [f'the {c} {o} on the {s} of table {i}' for i, (c, o, s) in enumerate(
        (c, o, s) for c in words[0] for o in words[1] for s in words[2])]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=buf, vocab_size=60, model_type='unigram',
        character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        hard_vocab_limit=False, minloglevel=2)
    d = tmp_path_factory.mktemp('spm')
    path = d / 'sentencepiece.bpe.model'  # the name XLMRobertaTokenizer.from_pretrained wants
    path.write_bytes(buf.getvalue())
    return str(path)


def hand_ids(spm_file, text, max_length):
    """fairseq rule computed from the raw sentencepiece pieces."""
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=spm_file)
    ids = [3 if p == sp.unk_id() else p + 1 for p in sp.encode(text)][:max_length - 2]
    return [0] + ids + [2] + [1] * (max_length - 2 - len(ids))


def test_matches_hand_computation_and_layout(spm_file):
    tok = BEiT3Tokenizer(spm_file, max_length=40)
    out = tok(SENTS)
    assert out['input_ids'].dtype == torch.long and out['padding_mask'].dtype == torch.bool
    assert out['input_ids'].shape == (len(SENTS), 40) and tok.num_truncated == 0
    for i, s in enumerate(SENTS):
        assert out['input_ids'][i].tolist() == hand_ids(spm_file, s, 40)
    assert torch.equal(out['padding_mask'], out['input_ids'].eq(1))
    assert (out['input_ids'][:, 0] == 0).all()
    lengths = (~out['padding_mask']).sum(1)
    assert (out['input_ids'][torch.arange(len(SENTS)), lengths - 1] == 2).all()
    # an unseen character maps to <unk> = 3, never to a shifted unk piece (1)
    assert 3 in tok(['the Ж man'])['input_ids'][0].tolist()
    assert len(tok) == tok.mask_token_id + 1 == tok.sp.get_piece_size() + 2


def test_matches_transformers_xlmr(spm_file):
    """The only reference-library check of BEiT3Tokenizer: it fails, never skips, when the
    installed transformers cannot serve as the reference."""
    import os.path as osp

    import transformers
    ref = transformers.XLMRobertaTokenizer.from_pretrained(osp.dirname(spm_file))
    # transformers v5 can silently build a 5-token vocab from a folder (backbones.md 3.4)
    assert len(ref) == len(BEiT3Tokenizer(spm_file)), (
        f'transformers {transformers.__version__}: XLMRobertaTokenizer did not load '
        f'{spm_file} ({len(ref)} tokens)')
    tok = BEiT3Tokenizer(spm_file, max_length=40)
    out = tok(SENTS)
    for i, s in enumerate(SENTS):
        r = ref(s)['input_ids']
        assert out['input_ids'][i, :len(r)].tolist() == r, s
        assert out['padding_mask'][i].tolist() == [False] * len(r) + [True] * (40 - len(r))
    assert tok.mask_token_id == ref.mask_token_id


def test_truncation_keeps_eos_and_warns_once(spm_file):
    tok = BEiT3Tokenizer(spm_file, max_length=6)
    long = 'the red cup on the left of the big green chair'
    with pytest.warns(UserWarning, match='truncated'):
        out = tok([long, 'dog'])
    ids = out['input_ids']
    assert ids[0].tolist() == hand_ids(spm_file, long, 6)
    assert ids[0, -1] == 2 and not out['padding_mask'][0].any()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        tok([long, long])
    assert tok.num_truncated == 3


def test_lazy_loading_and_bad_inputs(tmp_path, spm_file):
    missing = str(tmp_path / 'beit3.spm')
    tok = BEiT3Tokenizer(missing)  # building must not need the file
    with pytest.raises(FileNotFoundError, match='beit3.spm'):
        tok(['a man'])
    tok = BEiT3Tokenizer(spm_file)
    with pytest.raises(ValueError, match=r'texts\[1\] is empty'):
        tok(['a man', '   '])
    with pytest.raises(TypeError, match=r'texts\[0\]'):
        tok([3])
    with pytest.raises(ValueError, match='max_length'):
        BEiT3Tokenizer(spm_file, max_length=1)
    assert tok('the man')['input_ids'].shape == (1, 20)


def test_registered(spm_file):
    from mmrefer.registry import MODELS, TASK_UTILS
    for reg in (MODELS, TASK_UTILS):
        tok = reg.build(dict(type='BEiT3Tokenizer', spm_path=spm_file, max_length=8))
        assert isinstance(tok, BEiT3Tokenizer) and tok.max_length == 8


def test_lower_case_option(spm_file):
    cased = BEiT3Tokenizer(spm_file, max_length=12)
    lower = BEiT3Tokenizer(spm_file, max_length=12, lower_case=True)
    assert lower(['Red Cup'])['input_ids'].tolist() == cased(['red cup'])['input_ids'].tolist()
    assert cased(['Red Cup'])['input_ids'].tolist() != cased(['red cup'])['input_ids'].tolist()
