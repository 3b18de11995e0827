"""Check a local RoBERTa/BERT directory before training InstAlign with it.

    python tools/model_converters/check_text_encoder_dir.py DIR [--model-type roberta|bert]
        [--weights] [--text "the red circle"]

Checks, in order, and stops at the first failure with a message naming the file:
1. tokenizer files are present (``vocab.json`` + ``merges.txt`` or ``tokenizer.json`` for
   RoBERTa, ``vocab.txt`` or ``tokenizer.json`` for BERT);
2. the tokenizer loads with ``AutoTokenizer.from_pretrained(DIR)`` and encodes ``--text``;
3. with ``--weights``: ``config.json`` loads, its ``model_type`` matches, a weight file
   (``model.safetensors`` or ``pytorch_model.bin``) is present and the model loads.
Prints the vocabulary size and the ids of ``--text``; exit code 0 when everything passed.
"""
import argparse
import os.path as osp
import sys

TOKENIZER_FILES = dict(roberta=[('vocab.json', 'merges.txt'), ('tokenizer.json', )],
                       bert=[('vocab.txt', ), ('tokenizer.json', )])
WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')


def check_dir(path: str, model_type: str = 'roberta', weights: bool = False,
              text: str = 'the red circle on the left') -> dict:
    """Run the checks; returns a report dict, raises FileNotFoundError/ValueError on failure."""
    if model_type not in TOKENIZER_FILES:
        raise ValueError(f'model_type must be roberta or bert, got {model_type!r}')
    if not osp.isdir(path):
        raise FileNotFoundError(f'{path} is not a directory')
    sets = TOKENIZER_FILES[model_type]
    if not any(all(osp.isfile(osp.join(path, f)) for f in fs) for fs in sets):
        raise FileNotFoundError(f'{path}: no tokenizer files; need one of ' +
                                ' or '.join('+'.join(fs) for fs in sets))
    import transformers
    from transformers import AutoConfig, AutoModel
    # same rule as HFTextEncoder: AutoTokenizer needs tokenizer_config.json to know the class
    has_cfg = osp.isfile(osp.join(path, 'tokenizer_config.json'))
    cls = transformers.AutoTokenizer if has_cfg else getattr(
        transformers, dict(roberta='RobertaTokenizer', bert='BertTokenizer')[model_type])
    tok = cls.from_pretrained(path, local_files_only=True)
    ids = tok(text)['input_ids']
    if len(tok) <= 5 or len(ids) <= 2:
        raise ValueError(f'{path}: tokenizer loaded but looks empty (vocab {len(tok)}, ids {ids})')
    report = dict(vocab_size=len(tok), ids=ids)
    if weights:
        cfg_file = osp.join(path, 'config.json')
        if not osp.isfile(cfg_file):
            raise FileNotFoundError(f'{cfg_file} missing')
        cfg = AutoConfig.from_pretrained(path, local_files_only=True)
        if cfg.model_type != model_type:
            raise ValueError(f'{cfg_file}: model_type is {cfg.model_type!r}, expected '
                             f'{model_type!r}')
        if not any(osp.isfile(osp.join(path, f)) for f in WEIGHT_FILES):
            raise FileNotFoundError(f'{path}: none of {WEIGHT_FILES}')
        if cfg.vocab_size < len(tok):
            raise ValueError(f'{cfg_file}: vocab_size {cfg.vocab_size} < tokenizer size '
                             f'{len(tok)}')
        model = AutoModel.from_pretrained(path, local_files_only=True)
        report.update(hidden_size=cfg.hidden_size,
                      params=sum(p.numel() for p in model.parameters()))
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description='check a local RoBERTa/BERT dir')
    p.add_argument('dir')
    p.add_argument('--model-type', default='roberta', choices=['roberta', 'bert'])
    p.add_argument('--weights', action='store_true', help='also check config.json + weights')
    p.add_argument('--text', default='the red circle on the left')
    args = p.parse_args(argv)
    try:
        report = check_dir(args.dir, args.model_type, args.weights, args.text)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f'FAILED: {e}')
        return 1
    for k, v in report.items():
        print(f'{k}: {v}')
    print('OK')
    return 0


if __name__ == '__main__':
    sys.exit(main())
