"""HFTokenizer with the real RoBERTa-base and BERT-base-uncased tokenizer files
(../shared/realdata) gives, on every real RefCOCOg-umd val sentence, the ids and attention mask
of the reference call ``tokenizer(sentences, max_length=20, truncation=True,
padding='max_length')``: specials, truncation (3% of these sentences exceed 20 RoBERTa tokens)
and padding included."""
import csv
import os.path as osp

import pytest
import torch

from mmrefer.models.language_models import HFTokenizer

REALDATA = osp.join(osp.dirname(__file__), '..', '..', '..', '..', 'shared', 'realdata')
SENTENCES = osp.join(REALDATA, 'refcoco_sentences', 'data', 'refcocog_umd_val.csv')
pytestmark = pytest.mark.skipif(not osp.isfile(SENTENCES),
                                reason=f'{REALDATA} (shared real data) is absent')


def _sentences():
    with open(SENTENCES, newline='') as f:
        return [row['sent'] for row in csv.DictReader(f)]


@pytest.mark.parametrize('model_type', ['roberta', 'bert'])
def test_real_tokenizer_matches_the_reference_call(model_type):
    sents = _sentences()
    assert len(sents) > 4000
    if model_type == 'roberta':
        from transformers import AutoTokenizer
        path = osp.join(REALDATA, 'roberta-base')
        ref = AutoTokenizer.from_pretrained(path, local_files_only=True)
        vocab = 50265
    else:
        from transformers import BertTokenizerFast
        path = osp.join(REALDATA, 'bert-base-uncased')
        ref = BertTokenizerFast(osp.join(path, 'vocab.txt'), do_lower_case=True)
        vocab = 30522
    ours = HFTokenizer(path, max_length=20, model_type=model_type, vocab_size=vocab)
    with pytest.warns(UserWarning, match='truncated'):
        got = ours(sents)
    want = ref(sents, max_length=20, truncation=True, padding='max_length', return_tensors='pt')
    assert got['input_ids'].shape == (len(sents), 20)
    assert torch.equal(got['input_ids'], want['input_ids'])
    assert torch.equal(got['attention_mask'].long(), want['attention_mask'].long())
    too_long = sum(len(ids) > 20 for ids in ref(sents)['input_ids'])
    assert ours.num_truncated == too_long > 0
