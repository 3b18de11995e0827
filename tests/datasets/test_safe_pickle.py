import json
import os
import pickle

import pytest

from mmrefer.datasets.safe_pickle import UnsafePickleError, load_refs, safe_pickle_load
from reliability_helpers import WritesMarker

REFS = [dict(ref_id=0, ann_id=5, image_id=1, split='train', sent_ids=[0],
             sentences=[dict(sent_id=0, sent='the red circle', raw='The red circle',
                             tokens=['the', 'red', 'circle'])],
             extra=(1, 2.5, None, True, b'raw'), tags={'a', 'b'})]


class _RunsShell:

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f'touch {self.path}', ))


@pytest.mark.parametrize('protocol', [0, 1, 2, 4])
def test_plain_refs_roundtrip(tmp_path, protocol):
    path = tmp_path / 'refs(unc).p'
    path.write_bytes(pickle.dumps(REFS, protocol=protocol))
    assert load_refs(str(path)) == REFS


def test_python2_style_byte_strings_are_decoded(tmp_path):
    # protocol-2 SHORT_BINSTRING ('U') opcodes are how Python 2 pickled str objects
    data = b'\x80\x02]q\x00}q\x01U\x04sentq\x02U\x05hellosa.'
    (tmp_path / 'r.p').write_bytes(data)
    assert load_refs(str(tmp_path / 'r.p')) == [{'sent': 'hello'}]
    latin = b'\x80\x02]q\x00}q\x01U\x04sentq\x02U\x04caf\xe9sa.'
    assert safe_pickle_load(latin) == [{'sent': 'caf\xe9'}]
    # a Python-2 str holding UTF-8 text decodes as UTF-8, not latin-1 mojibake
    utf8 = b'\x80\x02]q\x00}q\x01U\x04sentq\x02U\x05caf\xc3\xa9sa.'
    assert safe_pickle_load(utf8) == [{'sent': 'caf\xe9'}]


@pytest.mark.parametrize('payload', [WritesMarker, _RunsShell])
def test_malicious_pickle_runs_no_code(tmp_path, payload):
    marker = tmp_path / 'marker'
    path = tmp_path / 'refs(unc).p'
    path.write_bytes(pickle.dumps([dict(ref_id=0, x=payload(str(marker)))], protocol=2))
    with pytest.raises(UnsafePickleError) as e:
        load_refs(str(path))
    msg = str(e.value)
    assert str(path) in msg
    expected = 'write_marker_file' if payload is WritesMarker else 'system'
    assert expected in msg
    assert not marker.exists()


def test_numpy_global_is_refused(tmp_path):
    import numpy as np
    path = tmp_path / 'r.p'
    path.write_bytes(pickle.dumps([dict(a=np.arange(3))]))
    with pytest.raises(UnsafePickleError, match='numpy'):
        load_refs(str(path))


def test_json_is_sniffed_by_content_not_extension(tmp_path):
    path = tmp_path / 'refs(unc).p'  # JSON content under a pickle name
    path.write_text('  \n' + json.dumps([dict(ref_id=3, sentences=[])]))
    assert load_refs(str(path)) == [dict(ref_id=3, sentences=[])]
    path2 = tmp_path / 'grefs.json'  # pickle content under a json name
    path2.write_bytes(pickle.dumps([dict(ref_id=4)], protocol=2))
    assert load_refs(str(path2)) == [dict(ref_id=4)]


@pytest.mark.parametrize('content,match', [
    (b'\x00\x01garbage bytes\xff', 'neither JSON nor a readable pickle'),
    (b'[1, 2', 'looks like JSON but does not parse'),
    (b'   ', 'is empty'),
    (b'{"a": 1}', 'must hold a list of refs'),
    (b'[1, 2]', 'entry 0 is a int'),
])
def test_garbage_is_rejected_clearly(tmp_path, content, match):
    path = tmp_path / 'bad.p'
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match) as e:
        load_refs(str(path))
    assert str(path) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.p'):
        load_refs(str(tmp_path / 'nope.p'))
