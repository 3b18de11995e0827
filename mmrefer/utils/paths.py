"""Output folders of the command-line tools, checked before any work."""
import os
import os.path as osp
from typing import Optional

__all__ = ['output_folder_problem']


def output_folder_problem(folder: str) -> Optional[str]:
    """Create ``folder`` (and its parents) for a tool's output: ``None`` when it is a writable
    folder, else what is wrong with it, for the tool's usage error (``--out X: <problem>``)."""
    if osp.exists(folder) and not osp.isdir(folder):
        return f'cannot create its folder {folder}: {folder} is a file, not a folder'
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        return f'cannot create its folder {folder} ({e})'
    if not os.access(folder, os.W_OK):
        return f'its folder {folder} is not writable'
    return None
