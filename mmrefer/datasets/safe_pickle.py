"""Safe loading of the official referring annotation files.

``refs(unc).p``, ``refs(umd).p``, ``refs(google).p`` (RefCOCO/+/g) and ``refs(final).p`` (Ref-ZOM)
are Python-2 pickles. A pickle can run arbitrary code when loaded (``__reduce__`` ->
``os.system``), so they are read with :class:`RestrictedUnpickler`, which resolves only the
builtin containers and scalars the files hold; any other global is refused *before* it is looked
up, so no code runs. :func:`load_refs` sniffs the content (JSON or pickle, whatever the extension)
and checks that the result is a list of ref dicts.
"""
import io
import json
import os.path as osp
import pickle
from typing import Any, Callable, List

__all__ = ['UnsafePickleError', 'RestrictedUnpickler', 'safe_pickle_load', 'load_refs',
           'check_refs', 'unpickle_py2_text', 'SAFE_BUILTINS']

#: builtins a refs pickle may name (protocol 0/1 pickles name ``set``/``frozenset`` through a
#: global; the other containers and scalars have their own opcodes).
SAFE_BUILTINS = frozenset({'dict', 'list', 'tuple', 'set', 'frozenset', 'str', 'int', 'float',
                           'bool', 'bytes', 'bytearray', 'complex'})


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside :data:`SAFE_BUILTINS`; nothing was executed."""


def _latin1_bytes(text: str, encoding: str = 'latin1') -> bytes:
    """Stand-in for ``_codecs.encode``, which Python-3 pickles (protocol < 3) use to rebuild
    ``bytes``; only the latin-1 form pickle itself writes is accepted."""
    if encoding not in ('latin1', 'latin-1') or not isinstance(text, str):
        raise UnsafePickleError(f'refused _codecs.encode({type(text).__name__}, {encoding!r}) '
                                'in a refs pickle')
    return text.encode('latin1')


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` admits only builtin containers and scalars.

    Args:
        file: binary file object.
        filename (str): shown in error messages.
        encoding (str): how Python-2 ``str`` objects are decoded (see :mod:`pickle`).
    """

    def __init__(self, file, filename: str = '<bytes>', encoding: str = 'ASCII'):
        super().__init__(file, encoding=encoding)
        self.filename = filename

    def find_class(self, module: str, name: str) -> Any:
        if module in ('builtins', '__builtin__') and name in SAFE_BUILTINS:
            return super().find_class('builtins', name)
        if (module, name) == ('_codecs', 'encode'):
            return _latin1_bytes
        raise UnsafePickleError(
            f'refused to unpickle {self.filename!r}: it asks for the global {module}.{name}, '
            f'but only builtin containers and scalars ({", ".join(sorted(SAFE_BUILTINS))}) are '
            'allowed in referring annotation files. Nothing was executed. If the file is '
            'trusted, convert it to JSON with tools/dataset_converters/refs_pickle_to_json.py '
            '--trust-pickle.')

    def persistent_load(self, pid):  # noqa: ANN001
        raise UnsafePickleError(
            f'refused to unpickle {self.filename!r}: it uses a persistent id ({pid!r}), which '
            'plain annotation files never do.')


def unpickle_py2_text(load: Callable[[str], Any]) -> Any:
    """``load(encoding)`` with the encodings Python-2 ``str`` objects may need: ASCII, then
    UTF-8 (what Python 2 text in a ``str`` meant), then ``latin1`` (never fails)."""
    for encoding in ('ASCII', 'utf-8'):
        try:
            return load(encoding)
        except UnicodeDecodeError:
            pass
    return load('latin1')


def safe_pickle_load(data: bytes, filename: str = '<bytes>') -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (:func:`unpickle_py2_text`'s
    encodings for Python-2 byte strings)."""
    return unpickle_py2_text(
        lambda encoding: RestrictedUnpickler(io.BytesIO(data), filename, encoding).load())


def read_annotation_file(path: str, what: str) -> bytes:
    """Bytes of an annotation file, with a clear error naming ``what`` and the path when it is
    missing or empty."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'{what} file not found: {path}')
    with open(path, 'rb') as f:
        data = f.read()
    if not data.strip():
        raise ValueError(f'{what} file {path!r} is empty')
    return data


def _sniff_json(data: bytes) -> bool:
    head = data[:64].lstrip()
    if head.startswith(b'\xef\xbb\xbf'):  # UTF-8 BOM
        head = head[3:].lstrip()
    return head[:1] in (b'[', b'{')


def load_refs(path: str) -> List[dict]:
    """Load a refs file (pickle or JSON, decided by its content) as a list of ref dicts.

    Args:
        path (str): ``refs(unc).p``, ``grefs(unc).json``, ``refs(final).p``, or a JSON
            conversion of any of them.

    Returns:
        list[dict]: the refs.

    Raises:
        FileNotFoundError: the file does not exist.
        UnsafePickleError: the pickle names a non-builtin global.
        ValueError: the file is neither JSON nor a pickle, or does not hold a list of dicts.
    """
    data = read_annotation_file(path, 'refs')
    if _sniff_json(data):
        try:
            refs = json.loads(data.decode('utf-8-sig'))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f'refs file {path!r} looks like JSON but does not parse: {e}') from e
    else:
        try:
            refs = safe_pickle_load(data, path)
        except UnsafePickleError:
            raise
        except Exception as e:  # truncated / garbage bytes: pickle raises many types
            raise ValueError(
                f'refs file {path!r} is neither JSON nor a readable pickle '
                f'(first bytes {data[:16]!r}): {type(e).__name__}: {e}') from e
    return check_refs(refs, path)


def check_refs(refs: Any, path: str) -> List[dict]:
    """``refs`` (what ``path`` held) as a list of ref dicts; a ``{"refs": [...]}`` wrapper is
    unwrapped; anything else raises a ``ValueError`` naming ``path``."""
    if isinstance(refs, dict) and 'refs' in refs:  # tolerate {"refs": [...]} wrappers
        refs = refs['refs']
    if not isinstance(refs, list):
        raise ValueError(f'refs file {path!r} must hold a list of refs, got {type(refs).__name__}')
    for i, ref in enumerate(refs):
        if not isinstance(ref, dict):
            raise ValueError(f'refs file {path!r}: entry {i} is a {type(ref).__name__}, '
                             'expected a dict')
    return refs
