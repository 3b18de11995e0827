"""The wheel ships configs/ and tools/ as mmrefer/.mim (what `mim train/test` looks up), config
basenames are unique (mim finds configs by basename), and no forbidden dependency is declared."""
import os
import re
import shutil
import os.path as osp
import subprocess
import sys
import zipfile
from collections import Counter

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _config_files():
    out = []
    for dirpath, _, files in os.walk(osp.join(ROOT, 'configs')):
        out += [osp.join(dirpath, f) for f in files if f.endswith('.py')]
    return out


def test_config_basenames_unique():
    names = Counter(osp.basename(p) for p in _config_files() if '/_base_/' not in p)
    dup = [n for n, c in names.items() if c > 1]
    assert not dup, f'config basenames must be unique for mim: {dup}'


def _req_name(line):
    return re.split(r'[<>=!~\[; ]', line.strip(), maxsplit=1)[0].lower()


def test_no_forbidden_dependencies():
    import tomllib
    project = tomllib.load(open(osp.join(ROOT, 'pyproject.toml'), 'rb'))['project']
    names = {_req_name(r) for r in project['dependencies']}
    for extra in project.get('optional-dependencies', {}).values():
        names |= {_req_name(r) for r in extra}
    for f in ('runtime.txt', 'tests.txt', 'demo.txt'):
        for line in open(osp.join(ROOT, 'requirements', f)):
            if line.strip() and not line.startswith('#'):
                names.add(_req_name(line))
    assert 'mmdet' in names and 'torch' in names
    assert not names & {'torchvision', 'timm', 'torchscale'}, names


@pytest.mark.slow
def test_wheel_contains_mim_extension(tmp_path):
    # built from a copy: pip's in-tree build writes build/ and mmrefer.egg-info, which must not
    # appear under the tree that the other tests (in parallel) import
    src = tmp_path / 'src'
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        '.*', 'work_dirs', 'build', 'dist', '*.egg-info', '__pycache__'))
    out = tmp_path / 'wheel'
    subprocess.run([
        sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w',
        str(out), str(src)
    ], check=True, cwd=str(tmp_path))
    wheels = [f for f in os.listdir(out) if f.endswith('.whl')]
    assert len(wheels) == 1
    names = set(zipfile.ZipFile(out / wheels[0]).namelist())
    assert 'mmrefer/.mim/tools/train.py' in names
    assert 'mmrefer/.mim/tools/test.py' in names
    assert 'mmrefer/registry.py' in names
    shipped = {n for n in names if n.startswith('mmrefer/.mim/configs/') and n.endswith('.py')}
    expected = {
        'mmrefer/.mim/configs/' + osp.relpath(p, osp.join(ROOT, 'configs')).replace(os.sep, '/')
        for p in _config_files()
    }
    assert expected and expected <= shipped
    assert not any(n.startswith(('tests/', 'data/')) for n in names)
