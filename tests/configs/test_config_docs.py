"""Every config the README and docs/ name exists: a full ``configs/...py`` path at that path, an
ablation config (``*_ablation_*.py``) under configs/ by its basename, as mim finds configs."""
import glob
import os.path as osp
import re

import pytest

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
DOCS = [osp.join(ROOT, 'README.md')] + sorted(glob.glob(osp.join(ROOT, 'docs', '*.md')))
BASENAMES = {osp.basename(p) for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                                                recursive=True)}


def _named(pattern):
    out = set()
    for doc in DOCS:
        with open(doc, encoding='utf-8') as f:
            out.update((osp.relpath(doc, ROOT), m) for m in re.findall(pattern, f.read()))
    return sorted(out)


@pytest.mark.parametrize('doc,path', _named(r'(?<![\w./-])(configs/[\w./+-]+\.py)'))
def test_config_paths_in_docs_exist(doc, path):
    assert osp.isfile(osp.join(ROOT, path)), f'{doc} names {path}, which does not exist'


@pytest.mark.parametrize('doc,name', _named(r'\b((?:latentvg|instalign)_ablation_[\w+-]+\.py)'))
def test_ablation_configs_in_docs_exist(doc, name):
    assert name in BASENAMES, f'{doc} names {name}, which is not under configs/'
