"""tools/analysis_tools/text_length_stats.py with the real RoBERTa / BERT tokenizers."""
import csv
import importlib.util
import json
import os.path as osp

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
REALDATA = osp.join(ROOT, '..', 'shared', 'realdata')
ROBERTA = osp.join(REALDATA, 'roberta-base')
BERT = osp.join(REALDATA, 'bert-base-uncased')
UMD_VAL = osp.join(REALDATA, 'refcoco_sentences', 'data', 'refcocog_umd_val.csv')
INSTALIGN = osp.join(ROOT, 'configs', 'instalign', 'instalign_swin-b_roberta_grefcoco.py')

pytestmark = pytest.mark.skipif(
    not all(osp.exists(p) for p in (ROBERTA, BERT, UMD_VAL)),
    reason=f'real tokenizers / sentences not found under {osp.normpath(REALDATA)}')


def _tool():
    path = osp.join(ROOT, 'tools', 'analysis_tools', 'text_length_stats.py')
    spec = importlib.util.spec_from_file_location('text_length_stats', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write_csv(path, sentences, column='sent'):
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['uid', column])
        w.writerows([f'{i}_0', s] for i, s in enumerate(sentences))
    return str(path)


def test_refcocog_umd_val_known_figures():
    """The measured fact of ../shared/realdata/README.md: RefCOCOg-umd val averages 11.0
    RoBERTa tokens with <s>/</s>, 3.0 % exceed 20, the longest has 39."""
    row, = _tool().length_stats([UMD_VAL], osp.normpath(ROBERTA), 'roberta', 20)
    assert row['sentences'] == 4896
    assert round(row['mean_tokens'], 1) == 11.0
    assert row['max_tokens'] == 39
    assert round(row['truncated_pct'], 1) == 3.0
    assert row['truncated'] == round(row['truncated_pct'] * 4896 / 100)


# every word below is one token in both real vocabularies (RoBERTa: 'the', 'Ġman', 'Ġleft'...;
# BERT-uncased: 'the', 'man', 'left'), so with the two special tokens the counts are
# 5 + 2 = 7, 18 + 2 = 20 (at the limit, not cut) and 25 + 2 = 27 (cut)
SENTENCES = ['the man on the left', ' '.join(['the man'] * 9), ' '.join(['left'] * 25)]


@pytest.mark.parametrize('tokenizer', ['roberta-base', 'bert-base-uncased'])
def test_cli_hand_counted_sentences(tokenizer, tmp_path, capsys):
    tool = _tool()
    csv_dir = tmp_path / 'csv'
    csv_dir.mkdir()
    _write_csv(csv_dir / 'refcoco_unc_val.csv', SENTENCES)
    _write_csv(csv_dir / 'refcoco_unc_testA.csv', SENTENCES[:1])
    out = str(tmp_path / 'stats.json')
    # max_length 20 read from the InstAlign config
    assert tool.main(['--tokenizer', tokenizer, '--config', INSTALIGN, '--csv-dir',
                      str(csv_dir), '--out', out]) == 0
    table = capsys.readouterr().out
    stats = json.load(open(out))
    assert stats['text_len'] == 20
    assert stats['model_type'] == tokenizer.split('-')[0]
    val, test_a = stats['rows']  # val before testA
    assert (val['file'], test_a['file']) == ('refcoco_unc_val.csv', 'refcoco_unc_testA.csv')
    assert val['sentences'] == 3 and val['max_tokens'] == 27
    assert val['mean_tokens'] == pytest.approx((7 + 20 + 27) / 3)
    assert val['truncated'] == 1 and val['truncated_pct'] == pytest.approx(100 / 3)
    assert test_a['mean_tokens'] == 7 and test_a['truncated'] == 0
    assert '| refcoco_unc_val | 3 | 18.0 | 27 | 1 (33.33 %) |' in table

    # --text-len overrides the config: the 20-token sentence is now cut too
    assert tool.main(['--tokenizer', tokenizer, '--config', INSTALIGN, '--text-len', '19',
                      '--csv-dir', str(csv_dir), '--out', out]) == 0
    val = json.load(open(out))['rows'][0]
    assert val['truncated'] == 2 and val['max_tokens'] == 27


def test_bad_inputs(tmp_path):
    tool = _tool()
    bad = _write_csv(tmp_path / 'refcoco_unc_val.csv', SENTENCES, column='sentence')
    with pytest.raises(ValueError, match=r'refcoco_unc_val\.csv: no "sent" column'):
        tool.read_sentences(bad)
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match='no \\*.csv file'):
        tool.main(['--csv-dir', str(empty)])
    with pytest.raises(FileNotFoundError, match='nope'):
        tool.main(['--tokenizer', str(tmp_path / 'nope')])
    latentvg = osp.join(ROOT, 'configs', 'latentvg', 'latentvg_beit3-b_refcoco.py')
    with pytest.raises(KeyError, match='model.text_encoder is missing'):
        tool.main(['--config', latentvg])
    # a BERT vocabulary read as RoBERTa turns every sentence into <s></s>: refused
    with pytest.raises(FileNotFoundError, match='no roberta tokenizer files'):
        tool.length_stats([UMD_VAL], BERT, 'roberta', 20)
    with pytest.raises(ValueError, match='--text-len must be >= 3'):
        tool.length_stats([UMD_VAL], ROBERTA, 'roberta', 2)
