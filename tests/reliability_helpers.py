"""Helpers shared by the reliability tests (importable: ``tests/`` is on pytest's pythonpath).

* :func:`captured_log` collects what mmengine's current logger logs inside a block;
* :class:`WritesMarker` is a malicious pickle payload: unpickling it with plain ``pickle``
  would call :func:`write_marker_file`, so a marker file that exists afterwards proves that
  code ran.
"""
import contextlib
import logging


@contextlib.contextmanager
def captured_log():
    """(level, message) pairs logged to mmengine's current logger inside the block."""
    from mmengine.logging import MMLogger

    class _H(logging.Handler):

        def emit(self, record):
            out.append((record.levelno, record.getMessage()))

    out = []
    logger = MMLogger.get_current_instance()
    h = _H(logging.DEBUG)
    logger.addHandler(h)
    try:
        yield out
    finally:
        logger.removeHandler(h)


def write_marker_file(path):
    with open(path, 'w') as f:
        f.write('code ran')


class WritesMarker:
    """Unpickling this object would call :func:`write_marker_file` on ``path``."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (write_marker_file, (self.path, ))
