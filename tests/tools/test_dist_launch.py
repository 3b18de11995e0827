"""Multi-node launch scripts: tools/dist_train.sh through the NNODES / NODE_RANK / MASTER_ADDR /
PORT path on CPU (gloo), and the arguments tools/slurm_{train,test}.sh hand to srun."""
import os
import os.path as osp
import stat
import subprocess
import sys

import pytest

from e2e_helpers import ROOT, free_port, short_config

TOOLS = osp.join(ROOT, 'tools')


def _env(**extra):
    env = dict(os.environ)
    # the scripts call `python` (or $PYTHON): this interpreter, with the repository first
    env['PATH'] = osp.dirname(sys.executable) + os.pathsep + env.get('PATH', '')
    env['PYTHONPATH'] = os.pathsep.join([ROOT] + [p for p in [env.get('PYTHONPATH')] if p])
    env['OMP_NUM_THREADS'] = '1'
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.mark.slow
def test_dist_train_two_nodes_by_env_vars_on_cpu(synthref_root, tmp_path):
    """Two `tools/dist_train.sh CONFIG 1` invocations as node 0 and node 1 of a 2-node job
    (torchrun's static rendezvous on MASTER_ADDR:PORT): both finish, the run has world size 2
    and the rank-0 node writes the checkpoint."""
    cfg = short_config('instalign', synthref_root, str(tmp_path / 'cfg.py'), iters=2,
                       val_cfg=None, val_dataloader=None, val_evaluator=None)
    work_dir = tmp_path / 'work'
    port = free_port()
    procs = []
    for rank in (0, 1):
        env = _env(NNODES=2, NODE_RANK=rank, MASTER_ADDR='127.0.0.1', PORT=port)
        log = open(tmp_path / f'node{rank}.log', 'w')
        procs.append((subprocess.Popen(
            ['bash', osp.join(TOOLS, 'dist_train.sh'), cfg, '1', '--work-dir', str(work_dir)],
            cwd=str(tmp_path), env=env, stdout=log, stderr=subprocess.STDOUT), log))
    try:
        for p, _ in procs:
            p.wait(timeout=600)
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
            log.close()
    for rank, (p, _) in enumerate(procs):
        out = (tmp_path / f'node{rank}.log').read_text()
        assert p.returncode == 0, f'node {rank} failed ({p.returncode}):\n{out[-5000:]}'
    assert (work_dir / 'iter_2.pth').is_file(), sorted(os.listdir(work_dir))
    logs = list(work_dir.glob('*/*.log'))
    assert logs, sorted(os.listdir(work_dir))
    text = '\n'.join(p.read_text() for p in logs)
    assert 'Distributed launcher: pytorch' in text
    assert 'GPU number: 2' in text  # mmengine's name for the world size
    assert 'Iter(train) [2/2]' in text


def _fake_srun(folder):
    """An `srun` that records its arguments and the environment the script sets."""
    path = osp.join(folder, 'srun')
    with open(path, 'w') as f:
        f.write('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$SRUN_RECORD"\n'
                'echo "PYTHONPATH=$PYTHONPATH" >> "$SRUN_RECORD"\n')
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    return folder


@pytest.mark.parametrize('script', ['slurm_train.sh', 'slurm_test.sh'])
def test_slurm_scripts_pass_mmdetection_arguments(script, tmp_path):
    record = tmp_path / 'srun_args.txt'
    env = _env(GPUS=16, GPUS_PER_NODE=8, CPUS_PER_TASK=6, SRUN_ARGS='--quotatype=auto',
               SRUN_RECORD=record)
    env['PATH'] = _fake_srun(str(tmp_path)) + os.pathsep + env['PATH']
    fourth = 'work_dirs/x' if script == 'slurm_train.sh' else 'ckpt.pth'
    proc = subprocess.run(['bash', osp.join(TOOLS, script), 'mypart', 'myjob', 'cfg.py', fourth,
                           '--cfg-options', 'a=1'], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    args = record.read_text().splitlines()
    assert args[:2] == ['-p', 'mypart']
    for a in ('--job-name=myjob', '--gres=gpu:8', '--ntasks=16', '--ntasks-per-node=8',
              '--cpus-per-task=6', '--kill-on-bad-exit=1', '--quotatype=auto', '-u',
              'cfg.py', '--launcher=slurm', '--cfg-options', 'a=1'):
        assert a in args, (a, args)
    py = args.index('-u')
    entry = args[py + 1]
    if script == 'slurm_train.sh':
        assert osp.basename(entry) == 'train.py' and '--work-dir=work_dirs/x' in args
    else:
        assert osp.basename(entry) == 'test.py' and args[py + 3] == 'ckpt.pth'
    assert osp.samefile(osp.dirname(entry), TOOLS)
    assert osp.samefile(args[-1].split('=', 1)[1].split(os.pathsep)[0], ROOT)


@pytest.mark.parametrize('script', ['train.py', 'test.py'])
def test_slurm_launcher_without_cuda_is_refused_with_the_cpu_alternative(script, tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip('CUDA present: the slurm launcher is usable here')
    args = ['cfg.py'] + (['ckpt.pth'] if script == 'test.py' else []) + ['--launcher', 'slurm']
    proc = subprocess.run([sys.executable, osp.join(TOOLS, script)] + args, env=_env(),
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert '--launcher slurm needs CUDA' in proc.stderr and 'NNODES' in proc.stderr
