"""Build hook: ship ``configs/``, ``tools/`` and ``demo/`` inside the wheel as ``mmrefer/.mim``.

``mim train mmrefer CONFIG`` / ``mim test mmrefer CONFIG -C CKPT`` look for
``<site-packages>/mmrefer/.mim/{tools,configs}``. Copying them in ``build_py`` (rather than sniffing
``sys.argv`` like mmdet's ``add_mim_extension``) works for every PEP 517 front end.
"""
import os
import os.path as osp
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = osp.dirname(osp.abspath(__file__))
MIM_DIRS = ('configs', 'tools', 'demo')


class BuildPyWithMim(build_py):

    def run(self):
        super().run()
        target = osp.join(self.build_lib, 'mmrefer', '.mim')
        for name in MIM_DIRS:
            src = osp.join(ROOT, name)
            if not osp.isdir(src):
                continue
            dst = osp.join(target, name)
            if osp.exists(dst):
                shutil.rmtree(dst)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))


if __name__ == '__main__':
    os.chdir(ROOT)
    setup(cmdclass={'build_py': BuildPyWithMim})
