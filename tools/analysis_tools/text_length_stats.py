"""Sentence length in tokens and the share that InstAlign's text encoder truncates.

    python tools/analysis_tools/text_length_stats.py [--tokenizer DIR|roberta-base|bert-base-uncased]
        [--text-len 20] [--config CFG] [--csv-dir DIR] [--out F.json]

Reads every ``*.csv`` of ``--csv-dir`` (default ``../shared/realdata/refcoco_sentences/data``:
one file per dataset split, a ``sent`` column with one referring sentence per row) and
tokenizes the sentences **through** InstAlign's text encoder (``HFTextEncoder``: its
``tokenize`` method, or its ``tokenizer`` component where the encoder has one), i.e. exactly
what it feeds RoBERTa/BERT (its ``lower_case`` step included), with
the tokenizer of ``--tokenizer`` (default ``../shared/realdata/roberta-base``, the real
RoBERTa-base BPE; ``bert-base-uncased`` selects the real BERT WordPiece vocabulary). Per file:

* ``sentences``: rows;
* ``mean_tokens`` / ``max_tokens``: token count ``n_i`` *with* the special tokens
  (``<s> ... </s>`` for RoBERTa, ``[CLS] ... [SEP]`` for BERT), ``mean = sum_i n_i / sentences``;
* ``truncated``: ``#{i : n_i > text_len}``, the sentences the encoder cuts to
  ``[<s>] first (text_len - 2) tokens [</s>]``, and ``truncated_pct = 100 * truncated /
  sentences``.

``n_i`` is the attention-mask sum of the encoder's tokenization run with a length limit the
sentences never reach (512); ``truncated`` is the ``num_truncated`` counter of a second encoder
built with ``max_length = text_len``, so the share is the encoder's own count. The encoders are
built with a one-layer, 8-wide architecture (only the tokenizer matters; no weights are read).

``--config`` takes ``max_length`` and ``lower_case`` from the config's ``model.text_encoder``
(InstAlign: 20); ``--text-len`` overrides ``max_length``. The model type (``roberta`` / ``bert``)
follows the tokenizer folder's files unless ``--model-type`` is given. A table is
printed (markdown) and, with ``--out``, written as JSON.
"""
import argparse
import csv
import glob
import json
import os
import os.path as osp
import re
import sys
from typing import Dict, List, Optional

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
REALDATA = osp.join(REPO_ROOT, '..', 'shared', 'realdata')
DEFAULT_CSV_DIR = osp.join(REALDATA, 'refcoco_sentences', 'data')
NAMED_TOKENIZERS = {
    'roberta-base': osp.join(REALDATA, 'roberta-base'),
    'bert-base-uncased': osp.join(REALDATA, 'bert-base-uncased'),
}
# an encoder limit no referring sentence reaches (RoBERTa/BERT position tables hold 512 tokens)
LONG_LIMIT = 512
# only the tokenizer of HFTextEncoder is used: the smallest network it can build
TINY_ARCH = dict(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8)
_DATASET_ORDER = ('refcoco', 'refcoco+', 'refcocog')
_SPLIT_ORDER = ('val', 'testA', 'testB', 'test')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Token counts and truncation of referring sentences')
    p.add_argument('--tokenizer', default='roberta-base',
                   help='tokenizer directory (RoBERTa: vocab.json + merges.txt; BERT: vocab.txt) '
                   'or one of ' + ', '.join(NAMED_TOKENIZERS) + ' (the ../shared/realdata copies)')
    p.add_argument('--model-type', choices=['roberta', 'bert'], default=None,
                   help='HFTextEncoder model_type (default: from the tokenizer files)')
    p.add_argument('--text-len', type=int, default=None,
                   help="encoder max_length incl. special tokens (default: the config's "
                   'model.text_encoder.max_length, else 20)')
    p.add_argument('--config', default=None,
                   help='InstAlign config: max_length / lower_case of its model.text_encoder')
    p.add_argument('--csv-dir', default=DEFAULT_CSV_DIR,
                   help='folder of CSV files with a "sent" column (one file per split)')
    p.add_argument('--out', default=None, help='write the table as JSON here')
    return p.parse_args(argv)


def resolve_tokenizer_dir(name: str) -> str:
    """``--tokenizer`` -> an existing directory (a path, or a name of ``NAMED_TOKENIZERS``)."""
    path = name if osp.isdir(name) else NAMED_TOKENIZERS.get(name, name)
    if not osp.isdir(path):
        raise FileNotFoundError(f'--tokenizer {name!r}: {path} is not a directory (give a '
                                f'tokenizer folder or one of {sorted(NAMED_TOKENIZERS)})')
    return osp.normpath(path)


def guess_model_type(tokenizer_dir: str) -> str:
    """``'roberta'`` for a BPE folder (``vocab.json`` + ``merges.txt``), ``'bert'`` for a
    WordPiece one (``vocab.txt``)."""
    has = lambda f: osp.isfile(osp.join(tokenizer_dir, f))  # noqa: E731
    if has('vocab.json') and has('merges.txt'):
        return 'roberta'
    if has('vocab.txt'):
        return 'bert'
    raise FileNotFoundError(f'{tokenizer_dir}: neither vocab.json + merges.txt (RoBERTa) nor '
                            'vocab.txt (BERT); pass --model-type')


def encoder_settings(config: Optional[str]) -> Dict:
    """``max_length`` / ``lower_case`` of a config's ``model.text_encoder``
    (empty dict without a config)."""
    if config is None:
        return {}
    from mmengine.config import Config
    if not osp.isfile(config):
        raise FileNotFoundError(f'--config {config}: file not found')
    te = Config.fromfile(config).model.get('text_encoder')
    if not te:
        raise KeyError(f'--config {config}: model.text_encoder is missing (the table is for '
                       "InstAlign's HFTextEncoder; Latent-VG tokenizes with BEiT3Tokenizer)")
    return {k: te[k] for k in ('max_length', 'lower_case') if k in te}


def read_sentences(path: str) -> List[str]:
    """The ``sent`` column of a CSV file (ValueError naming the file when absent or empty)."""
    with open(path, newline='', encoding='utf-8') as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or 'sent' not in reader.fieldnames:
            raise ValueError(f'{path}: no "sent" column (columns: {reader.fieldnames})')
        sents = [row['sent'] for row in reader]
    if not sents:
        raise ValueError(f'{path}: no sentences')
    bad = [i for i, s in enumerate(sents) if s is None]
    if bad:
        raise ValueError(f'{path}: row {bad[0] + 2} has no "sent" value')
    return sents


def csv_order(path: str):
    """Sort key: RefCOCO, RefCOCO+, RefCOCOg; unc/umd before google; val, testA, testB, test."""
    m = re.match(r'(.+?)_([^_]+)_([^_]+)\.csv$', osp.basename(path))
    if not m:
        return (len(_DATASET_ORDER), osp.basename(path), '', 0)
    ds, part, split = m.groups()
    return (_DATASET_ORDER.index(ds) if ds in _DATASET_ORDER else len(_DATASET_ORDER), ds,
            part == 'google', _SPLIT_ORDER.index(split) if split in _SPLIT_ORDER else 9)


def build_encoder(model_type: str, tokenizer_dir: str, max_length: int, lower_case: bool):
    """An ``HFTextEncoder`` with ``TINY_ARCH`` whose tokenizer is ``tokenizer_dir``'s."""
    from mmrefer.models.language_models.text_encoder import _ARCHS, HFTextEncoder
    arch = dict(TINY_ARCH, max_position_embeddings=_ARCHS[model_type]['max_position_embeddings'])
    enc = HFTextEncoder(model_type=model_type, arch=arch, tokenizer_dir=tokenizer_dir,
                        max_length=max_length, lower_case=lower_case)
    # transformers can load a RoBERTa tokenizer from a BERT folder without an error and then
    # map every sentence to the two special tokens: refuse a tokenizer that cannot spell a plain
    # English phrase
    enc_ids = encode(enc, ['the man on the left'])
    ids = enc_ids['input_ids'][0][enc_ids['attention_mask'][0].bool()].tolist()
    hf = getattr(enc.tokenizer, 'tok', enc.tokenizer)  # the transformers tokenizer
    if len(ids) <= 2 or hf.unk_token_id in ids:
        raise ValueError(f'{tokenizer_dir} does not work as a {model_type} tokenizer: '
                         f"'the man on the left' -> {ids} (vocabulary {len(hf)}); check "
                         '--model-type')
    return enc


def encode(encoder, sentences: List[str]) -> Dict:
    """``input_ids`` / ``attention_mask`` ``[B, max_length]`` as ``encoder.forward`` makes
    them from raw sentences: ``encoder.tokenize`` (mmrefer up to the HFTokenizer component) or
    ``encoder.tokenizer(...)`` (the HFTokenizer component)."""
    if hasattr(encoder, 'tokenize'):
        return encoder.tokenize(sentences)
    return encoder.tokenizer(sentences)


def token_counts(encoder, sentences: List[str], chunk: int = 4096) -> List[int]:
    """``n_i``: valid positions of :func:`encode` per sentence (special tokens included)."""
    counts = []
    for start in range(0, len(sentences), chunk):
        mask = encode(encoder, sentences[start:start + chunk])['attention_mask']
        counts += mask.sum(1).tolist()
    return counts


def count_truncated(encoder, sentences: List[str], chunk: int = 4096) -> int:
    """Sentences :func:`encode` cuts to the encoder's ``max_length`` (its ``num_truncated``)."""
    import warnings
    before = encoder.num_truncated
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the encoder warns once on the first cut
        for start in range(0, len(sentences), chunk):
            encode(encoder, sentences[start:start + chunk])
    return encoder.num_truncated - before


def length_stats(csv_files: List[str], tokenizer_dir: str, model_type: str, text_len: int,
                 lower_case: bool = False) -> List[Dict]:
    """One row per CSV: ``file, sentences, mean_tokens, max_tokens, truncated,
    truncated_pct`` (see the module docstring for the definitions)."""
    if text_len < 3:
        raise ValueError(f'--text-len must be >= 3 (<s>, one token, </s>), got {text_len}')
    long_enc = build_encoder(model_type, tokenizer_dir, LONG_LIMIT, lower_case)
    cut_enc = build_encoder(model_type, tokenizer_dir, text_len, lower_case)
    rows = []
    for path in csv_files:
        sents = read_sentences(path)
        counts = token_counts(long_enc, sents)
        if long_enc.num_truncated:
            raise ValueError(f'{path}: a sentence exceeds {LONG_LIMIT} tokens')
        truncated = count_truncated(cut_enc, sents)
        over = sum(n > text_len for n in counts)
        if truncated != over:  # the two encoders must agree on what exceeds text_len
            raise RuntimeError(f'{path}: HFTextEncoder truncated {truncated} sentences but '
                               f'{over} have more than {text_len} tokens')
        rows.append(dict(file=osp.basename(path), sentences=len(sents),
                         mean_tokens=sum(counts) / len(counts), max_tokens=max(counts),
                         truncated=truncated, truncated_pct=100.0 * truncated / len(sents)))
    return rows


def format_table(rows: List[Dict], text_len: int) -> str:
    """Markdown table of :func:`length_stats` rows."""
    lines = [f'| CSV | sentences | mean tokens | max tokens | > {text_len} tokens (truncated) |',
             '| --- | ---: | ---: | ---: | ---: |']
    for r in rows:
        lines.append(f"| {r['file'][:-4]} | {r['sentences']:,} | {r['mean_tokens']:.1f} | "
                     f"{r['max_tokens']} | {r['truncated']:,} ({r['truncated_pct']:.2f} %) |")
    return '\n'.join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    settings = encoder_settings(args.config)
    text_len = args.text_len if args.text_len is not None else settings.get('max_length', 20)
    tok_dir = resolve_tokenizer_dir(args.tokenizer)
    # the tokenizer's files decide: an InstAlign config says 'roberta' even with --tokenizer bert
    model_type = args.model_type or guess_model_type(tok_dir)
    lower_case = bool(settings.get('lower_case', False))
    if not osp.isdir(args.csv_dir):
        raise FileNotFoundError(f'--csv-dir {args.csv_dir}: not a directory')
    files = sorted(glob.glob(osp.join(args.csv_dir, '*.csv')), key=csv_order)
    if not files:
        raise FileNotFoundError(f'--csv-dir {args.csv_dir}: no *.csv file')
    rows = length_stats(files, tok_dir, model_type, text_len, lower_case)
    print(f'tokenizer {tok_dir} ({model_type}), text_len {text_len}, lower_case {lower_case}; '
          'token counts include the two special tokens')
    print(format_table(rows, text_len))
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(dict(tokenizer=tok_dir, model_type=model_type, text_len=text_len,
                           lower_case=lower_case, rows=rows), f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
