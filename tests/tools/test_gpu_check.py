"""tools/analysis_tools/gpu_check.sh / gpu_check.py: the prepared GPU check, run here as its CPU
dry run (``--device cpu --quick``) through every path the GPU run takes (background build killed
at its deadline, Latent-VG with the stubbed mmcv ops, InstAlign with PyTorch deformable
attention, the profiler summaries, the overfit, JSON + markdown), and the one-call device command
of docs/benchmarks.md."""
import json
import os
import os.path as osp
import re
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(ROOT, 'tools', 'analysis_tools', 'gpu_check.sh')
DOCS = osp.join(ROOT, 'docs', 'benchmarks.md')
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis_tools'))
import gpu_check  # noqa: E402

FAKE_BUILD = 'sleep 987'  # stands in for the mmcv build; the deadline must kill it
QUICK_KEYS = ['infer_bf16_b2', 'train_bf16_b2', 'train_bf16_b2_foreach', 'train_bf16_b2_cp',
              'infer_bf16_b1', 'infer_fp32_b2', 'infer_fp32_b1']


def _sleepers():
    """pids of processes running exactly ``sleep 987`` (the fake build)."""
    out = []
    for pid in os.listdir('/proc'):
        if pid.isdigit():
            try:
                with open(f'/proc/{pid}/cmdline', 'rb') as f:
                    if f.read().split(b'\0')[:2] == FAKE_BUILD.encode().split():
                        out.append(int(pid))
            except OSError:
                pass
    return out


@pytest.fixture(scope='module')
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('gpu_check_out')
    work = tmp_path_factory.mktemp('gpu_check_work')
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1',
               GPU_CHECK_WORK=str(work), GPU_CHECK_BUILD_CMD=FAKE_BUILD)
    before = set(_sleepers())
    proc = subprocess.run(['bash', SCRIPT, str(out), '--device', 'cpu', '--quick',
                           '--build-deadline', '0', '--force-profile'],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    with open(out / 'gpu_check.json') as f:
        data = json.load(f)
    with open(out / 'gpu_check.md') as f:
        md = f.read()
    return dict(out=out, data=data, md=md, stdout=proc.stdout,
                leftover=set(_sleepers()) - before)


@pytest.mark.slow
def test_dry_run_measures_every_path(dry_run):
    data = dry_run['data']
    assert data['status'] == 'complete', json.dumps(data, indent=1)[:4000]
    assert data['quick'] is True and data['device']['type'] == 'cpu'
    # the background "build" was killed at its deadline, and nothing of it is left running
    assert data['setup']['mmcv_build'].startswith('not finished after'), data['setup']
    assert not dry_run['leftover'], f'fake build still running: {dry_run["leftover"]}'
    assert set(data['models']) == {'latentvg', 'instalign_msda_pytorch'}
    lvg, ia = data['models']['latentvg'], data['models']['instalign_msda_pytorch']
    assert lvg['mmcv_ops'] == ia['mmcv_ops'] == 'stub'
    assert ia['deform_attn'].startswith('pytorch')
    for entry in (lvg, ia):
        assert 'model.init_weights()' in entry['random_init']
        assert entry['img_size'] == [128, 128]
        # the configs' env_cfg is applied as the Runner would (fixed-size inputs: benchmark on)
        assert entry['cudnn_benchmark'] is True
        assert list(entry['measurements']) == QUICK_KEYS
        for key, r in entry['measurements'].items():
            assert r['iters'] >= 2 and r['peak_mem_mib'] is None, (key, r)
            # img/s is the batch over the median step time
            assert r['img_per_s'] == pytest.approx(r['batch'] * 1e3 / r['median_ms'], rel=0.02)
            assert r['min_ms'] <= r['median_ms'] <= r['max_ms']
        assert entry['measurements']['train_bf16_b2_cp']['with_cp_modules'] > 0
        # the paper schedules' AdamW: one fused kernel per group (merged groups); the _foreach
        # measurement times PyTorch's CUDA default beside it
        groups = 2 if entry is lvg else 3
        assert entry['optimizer'] == dict(type='AdamW', impl='fused', param_groups=groups)
        for mk, impl in (('train_bf16_b2', 'fused'), ('train_bf16_b2_cp', 'fused'),
                         ('train_bf16_b2_foreach', 'foreach')):
            assert entry['measurements'][mk]['optimizer'] == dict(
                type='AdamW', impl=impl, param_groups=groups), mk
        # goals are for the H200 at 480: recorded, not judged on a CPU
        assert {g['met'] for g in entry['goals'].values()} == {None}
        assert set(entry['profiles']) == {'infer_bf16_b2', 'train_bf16_b2'}
        for prof in entry['profiles'].values():
            ops = prof['top_cpu_ops']
            assert ops and all(o['ms_per_step'] >= 0 for o in ops)
            # the time of each part of the model (its forward ranges)
            parts = {r['name']: r for r in prof['module_ranges']}
            assert {'data_preprocessor', 'head'} <= set(parts), parts
            # Latent-VG calls BEiT-3's methods, not its forward: its layers have the ranges
            enc = 'backbone' if entry is ia else 'backbone.encoder.layers.*'
            assert parts[enc]['cpu_ms_per_step'] > 0, parts
            assert sum(o['share_pct'] for o in ops) <= 100.5
        o = entry['overfit']
        assert o['iters_done'] == o['iters'] == len(o['curve']) == 3
        assert o['loss_first'] > 0 and o['loss_ratio'] == pytest.approx(
            o['loss_last'] / o['loss_first'], abs=1e-3)
        assert o['target_met'] == (o['loss_ratio'] <= gpu_check.OVERFIT_TARGET)


@pytest.mark.slow
def test_dry_run_markdown_table(dry_run):
    md, data = dry_run['md'], dry_run['data']
    rows = [ln for ln in md.splitlines() if ln.startswith('| ') and not ln.startswith('| ---')]
    header = rows[0]
    assert header.startswith('| model | measurement | batch | precision | img/s')
    for entry in data['models'].values():
        mine = [r for r in rows if r.startswith(f"| {entry['name']} |")]
        # one row per measurement plus the overfit row
        assert len(mine) == len(entry['measurements']) + 1, mine
        for r in entry['measurements'].values():
            assert any(f"| {r['batch']} | {r['precision']} | {r['img_per_s']:.1f} |" in row
                       for row in mine), (r, mine)
    assert 'quick (tiny sizes: a dry run, not a benchmark)' in md
    # the shell prints the table last (what a device call's output tail shows)
    assert dry_run['stdout'].rstrip().endswith(md.rstrip().splitlines()[-1])
    assert sorted(os.listdir(dry_run['out'])) == ['gpu_check.json', 'gpu_check.log',
                                                  'gpu_check.md', 'mmcv_build.log']


def test_paper_configs_lose_every_pretrained_file():
    """The paper configs name checkpoint files and tokenizer dirs; with the pretrained entries
    stripped and SynthRef's tokenizers pointed at, no file outside the work dir is read."""
    from mmengine.config import Config

    from mmrefer.datasets.synthetic import point_config_at_synthref
    for key, spec in gpu_check.MODELS_TO_CHECK.items():
        cfg = Config.fromfile(osp.join(ROOT, spec['config']))
        point_config_at_synthref(cfg, '/work_dir/synthref')
        removed = gpu_check.strip_pretrained(cfg.model)
        assert removed, key
        paths = [v for v in gpu_check_leaves(cfg.model.to_dict())
                 if isinstance(v, str) and ('/' in v or v.endswith(('.pth', '.spm')))]
        assert all(p.startswith('/work_dir/synthref/') for p in paths), (key, paths)


def gpu_check_leaves(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from gpu_check_leaves(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from gpu_check_leaves(v)
    else:
        yield node


def test_status_needs_every_measurement_and_one_overfit_per_config():
    ok = dict(img_per_s=1.0)
    full = dict(config='a.py', measurements=dict(x=ok), overfit=dict(iters_done=3))
    speed_only = dict(config='a.py', measurements=dict(x=ok), notes=['--no-overfit'])
    assert gpu_check.status_of(dict(models=dict(a=full, b=speed_only))) == 'complete'
    assert gpu_check.status_of(dict(models=dict(b=speed_only))) == 'partial'
    cut = dict(full, overfit=dict(iters_done=1, stopped='out of time after 1 iterations'))
    assert gpu_check.status_of(dict(models=dict(a=cut))) == 'partial'
    skipped = dict(full, measurements=dict(x=dict(skipped='out of time')))
    assert gpu_check.status_of(dict(models=dict(a=skipped))) == 'partial'
    assert gpu_check.status_of(dict(models={})) == 'empty'


def test_docs_one_call_command_fits_the_device_tool():
    """docs/benchmarks.md gives the future GPU session's single `run` call: under the tool's
    2000-character command limit, its timeout inside the 600 s cap and above the script's
    default budget, carrying the git-ignored wheel folder the script reads."""
    with open(DOCS) as f:
        text = f.read()
    m = re.search(r'<!-- gpu_check run call -->\s*```json\n(.*?)```', text, re.S)
    assert m, 'docs/benchmarks.md: no json block after <!-- gpu_check run call -->'
    call = json.loads(m.group(1))
    assert len(call['command']) < 2000
    assert 'tools/analysis_tools/gpu_check.sh' in call['command']
    assert 470 < call['timeout_s'] <= 600
    assert call['carry'] == ['.gpu_deps']
    with open(osp.join(ROOT, '.gitignore')) as f:
        assert '.gpu_deps/' in f.read().split()
    # the figures of the calls made so far, with their raw reports
    figures = text[text.index('## GPU figures'):text.index('## GPU check')]
    runs = re.findall(r'\((gpu_runs/[^)]*)\)', figures)
    assert runs and all(osp.exists(osp.join(ROOT, 'docs', r)) for r in runs)
    for name in os.listdir(osp.join(ROOT, 'docs', 'gpu_runs')):
        if name.endswith('.json'):
            with open(osp.join(ROOT, 'docs', 'gpu_runs', name)) as f:
                assert json.load(f)['device']['name'] == 'NVIDIA H200', name


def test_time_steps_skips_what_cannot_finish_before_the_deadline():
    import time

    import torch
    cpu = torch.device('cpu')

    def step():
        time.sleep(0.05)

    soon = gpu_check.Clock(time.time() + gpu_check.SAFETY_S + 0.2)
    with pytest.raises(gpu_check.OutOfTime, match='s left'):
        gpu_check.time_steps(step, warmup=2, iters=10, device=cpu, clock=soon)
    r = gpu_check.time_steps(step, warmup=1, iters=3, device=cpu, clock=gpu_check.Clock(None))
    assert 0.05 <= r['min_s'] <= r['median_s'] <= r['max_s'] and r['peak_mem_mib'] is None


def test_bf16_workaround_for_a_deform_attn_kernel_without_bf16(monkeypatch):
    """mmcv 2.1.0's CUDA kernel dispatches float / double / half only. check_msda_cuda must
    then route bf16 inputs through the kernel in fp32 and hand bf16 back; emulated here with
    mmcv's PyTorch version standing in for the kernel."""
    import torch
    import mmcv.ops.multi_scale_deform_attn as msda

    class FakeKernel:

        @staticmethod
        def apply(value, shapes, start, loc, w, step):
            if value.dtype == torch.bfloat16:
                raise RuntimeError('"ms_deform_attn_forward_cuda" not implemented for '
                                   "'BFloat16'")
            return msda.multi_scale_deformable_attn_pytorch(value, shapes, loc, w)

    monkeypatch.setattr(msda, 'MultiScaleDeformableAttnFunction', FakeKernel)
    res = gpu_check.check_msda_cuda(torch.device('cpu'))
    assert res['ok'] and res['rel_err_fp32'] < 1e-6
    assert res['bf16'].startswith('unsupported') and 'workaround' in res
    patched = msda.MultiScaleDeformableAttnFunction
    assert patched is not FakeKernel
    g = torch.Generator().manual_seed(1)
    shapes = torch.tensor([[4, 4], [2, 2]])
    start = torch.tensor([0, 16])
    value = torch.randn(1, 20, 2, 8, generator=g)
    loc = torch.rand(1, 5, 2, 2, 3, 2, generator=g)
    w = torch.rand(1, 5, 2, 2, 3, generator=g)
    out = patched.apply(value.bfloat16(), shapes, start, loc.bfloat16(), w.bfloat16(), 64)
    ref = msda.multi_scale_deformable_attn_pytorch(value.bfloat16().float(), shapes,
                                                   loc.bfloat16().float(), w.bfloat16().float())
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), ref, rtol=1e-2, atol=1e-2)
    # fp32 inputs go to the kernel unchanged
    assert torch.equal(patched.apply(value, shapes, start, loc, w, 64),
                       FakeKernel.apply(value, shapes, start, loc, w, 64))


def test_mmcv_ext_stub_names_the_missing_op():
    """With the stub, mmcv.ops imports (mmdet needs it) and a compiled op called by mistake
    fails naming itself; mmengine sees mmcv as not built."""
    code = ('import gpu_check; gpu_check.install_mmcv_ext_stub()\n'
            'import mmcv.ops, torch\n'
            'from mmengine.utils.dl_utils import mmcv_full_available\n'
            'assert not mmcv_full_available()\n'
            'try:\n'
            '    mmcv.ops.nms(torch.rand(3, 4), torch.rand(3), 0.5)\n'
            'except RuntimeError as e:\n'
            '    print("ERR", e)\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT, osp.join(ROOT, 'tools', 'analysis_tools')]), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'ERR mmcv._ext.nms: mmcv ops are not built' in proc.stdout


def _fake_cuda(root, library_headers=False):
    """A CUDA installation at ``root``: ``bin/nvcc`` answering ``--dryrun`` as nvcc 13 does
    (``#$ TOP=<root>/bin/..`` on stderr), the runtime header, and cuBLAS / cuSPARSE /
    cuSOLVER headers only with ``library_headers``."""
    (root / 'bin').mkdir(parents=True)
    (root / 'include').mkdir()
    (root / 'include' / 'cuda_runtime_api.h').write_text('')
    for h in (gpu_check.CUDA_LIBRARY_HEADERS if library_headers else ()):
        (root / 'include' / h).write_text('')
    nvcc = root / 'bin' / 'nvcc'
    nvcc.write_text(f'#!/bin/sh\necho "#$ _NVVM_BRANCH_=nvvm" >&2\n'
                    f'echo "#$ TOP={root}/bin/.." >&2\n')
    nvcc.chmod(0o755)
    return nvcc


def _nvidia_wheels(site):
    """torch's CUDA wheels as pip lays them out: the library headers in nvidia/cu13/include."""
    for pkg, headers in [('cu13', gpu_check.CUDA_LIBRARY_HEADERS + ('cuda_runtime_api.h',)),
                         ('cudnn', ('cudnn.h',)), ('nccl', ('nccl.h',))]:
        (site / 'nvidia' / pkg / 'include').mkdir(parents=True)
        for h in headers:
            (site / 'nvidia' / pkg / 'include' / h).write_text('')
    return str(site / 'nvidia' / 'cu13' / 'include')


def test_cuda_build_env_for_a_cuda_made_of_wheels_behind_a_wrapper(tmp_path):
    """As on the development machine with torch 2.11+cu130: nvcc 13.0 from NVIDIA's wheels in
    /usr/local/cuda-13.0 (no cuBLAS / cuSPARSE headers) reached through a wrapper script
    /usr/local/bin/nvcc. torch would take /usr/local as CUDA_HOME and mmcv's build stopped at
    ``cusparse.h``; the environment gpu_check.sh exports is the one that built it there."""
    home = tmp_path / 'cuda-13.0'
    nvcc = _fake_cuda(home)
    wrapper = tmp_path / 'bin' / 'nvcc'
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec {nvcc} "$@"\n')
    wrapper.chmod(0o755)
    inc = _nvidia_wheels(tmp_path / 'site')
    environ = dict(PATH=f'{wrapper.parent}:/usr/bin:/bin', CPATH='/opt/x/include')
    env, notes = gpu_check.cuda_build_env(environ, roots=[str(tmp_path / 'site')] * 2,
                                          cuda_globs=())
    assert env == [('CUDA_HOME', str(home)), ('CPATH', f'/opt/x/include:{inc}'),
                   ('LIBRARY_PATH', str(tmp_path / 'site' / 'nvidia' / 'cu13' / 'lib'))]
    assert [k for k, _ in notes] == ['cuda_home', 'cuda_headers']
    assert "nvcc's TOP" in notes[0][1] and inc in notes[1][1]


def test_cuda_build_env_leaves_a_complete_cuda_alone(tmp_path):
    home = tmp_path / 'cuda'
    _fake_cuda(home, library_headers=True)
    roots = [str(tmp_path / 'site')]
    _nvidia_wheels(tmp_path / 'site')
    path = f'{home}/bin:/usr/bin:/bin'
    # CUDA_HOME set by the user: nothing to add
    assert gpu_check.cuda_build_env(dict(PATH=path, CUDA_HOME=str(home)), roots) == ([], [])
    # unset: nvcc's TOP, the same folder torch would take; no headers to add
    env, _ = gpu_check.cuda_build_env(dict(PATH=path), roots, cuda_globs=())
    assert env == [('CUDA_HOME', str(home))]


def test_cuda_build_env_finds_a_cuda_off_path(tmp_path):
    """No nvcc on PATH: the first /usr/local/cuda* with bin/nvcc (here a glob under tmp)."""
    _fake_cuda(tmp_path / 'cuda-13.0', library_headers=True)
    (tmp_path / 'cuda-12.9').mkdir()  # no nvcc: skipped
    env, notes = gpu_check.cuda_build_env(dict(PATH='/usr/bin:/bin'), roots=[],
                                          cuda_globs=(str(tmp_path / 'cuda-*'),))
    assert env == [('CUDA_HOME', str(tmp_path / 'cuda-13.0')),
                   ('PATH', f'{tmp_path}/cuda-13.0/bin:/usr/bin:/bin')]
    assert notes[0][0] == 'cuda_home'
    assert gpu_check.cuda_build_env(dict(PATH='/usr/bin:/bin'), roots=[],
                                    cuda_globs=(str(tmp_path / 'none-*'),)) == ([], [])


def test_cuda_build_env_cli_lines_are_what_gpu_check_sh_reads(tmp_path):
    """``gpu_check.py --cuda-build-env`` prints ``env NAME=VALUE`` / ``setup KEY=NOTE`` lines;
    gpu_check.sh's own loop (taken from the script) exports / records them."""
    with open(SCRIPT) as f:
        loop = re.search(r'^\s*(while read -r kind item; do\n.*?\n\s*done < <\([^\n]*'
                         r'--cuda-build-env[^\n]*\))$', f.read(), re.S | re.M)
    assert loop, 'gpu_check.sh no longer reads gpu_check.py --cuda-build-env in a loop'
    home = tmp_path / 'cuda'
    _fake_cuda(home)
    sh = f'SETUP=(); {loop.group(1)}\necho "$CUDA_HOME"; printf "%s\\n" "${{SETUP[@]}}"'
    env = {k: v for k, v in os.environ.items() if k != 'CUDA_HOME'}
    env.update(PATH=f'{home}/bin:{os.environ["PATH"]}', PY=sys.executable)
    out = subprocess.run(['bash', '-c', sh], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == str(home)
    assert lines[1] == f"cuda_home={home} (nvcc's TOP)"


def test_a_second_call_keeps_what_the_first_measured(tmp_path):
    """gpu_check.sh reruns InstAlign when the build failed after the first run was cut: the
    rerun measures only what is missing and keeps the longer overfit. Measurements taken while
    the background build runs (GPU_CHECK_BUILD_PID alive) say so."""
    out = tmp_path / 'out'
    out.mkdir()
    first = dict(measurements=dict(infer_bf16_b2=dict(what='inference', batch=2,
                                                      precision='bf16', img_per_s=12345.0,
                                                      median_ms=1.0, iters=3)),
                 overfit=dict(batch=2, iters=999, iters_done=999, precision='bf16',
                              target=0.5, loss_first=2.0, loss_last=1.0, loss_ratio=0.5,
                              target_met=True), notes=[])
    with open(out / 'gpu_check.json', 'w') as f:
        json.dump(dict(schema=1, status='running', setup={}, notes=[],
                       models=dict(latentvg=first)), f)
    build = subprocess.Popen(['sleep', '300'])
    try:
        env = dict(os.environ, OMP_NUM_THREADS='1', GPU_CHECK_BUILD_PID=str(build.pid))
        proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'analysis_tools',
                                                        'gpu_check.py'), str(out),
                               '--device', 'cpu', '--quick', '--models', 'latentvg',
                               '--mmcv-ops', 'stub', '--work-dir', str(tmp_path / 'work')],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    finally:
        build.kill()
        build.wait()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out / 'gpu_check.json') as f:
        entry = json.load(f)['models']['latentvg']
    ms = entry['measurements']
    assert ms['infer_bf16_b2']['img_per_s'] == 12345.0  # kept, not measured again
    assert 'during_mmcv_build' not in ms['infer_bf16_b2']
    assert set(ms) == set(QUICK_KEYS)
    for mk in set(QUICK_KEYS) - {'infer_bf16_b2'}:
        assert ms[mk]['img_per_s'] > 0 and ms[mk]['during_mmcv_build'] is True, ms[mk]
    assert entry['overfit']['iters_done'] == 999  # the longer one
    assert any('the first one' in n for n in entry['notes'])
    with open(out / 'gpu_check.md') as f:
        assert '(during the mmcv build)' in f.read()
    assert not gpu_check.building_mmcv()  # no GPU_CHECK_BUILD_PID in this process


def test_sync_audit_files_each_synchronisation_under_its_caller():
    """The GPU run's sync audit (torch.cuda.set_sync_debug_mode('warn') there) counts every
    synchronisation warning of one call, by the innermost frame outside torch; other warnings
    are ignored, the mode is switched on around the call only, and a CPU device is skipped."""
    import warnings
    from collections import OrderedDict

    import torch
    modes = []
    calls = []

    def step():
        calls.append(modes[-1] if modes else None)
        if modes and modes[-1] == 'warn':
            for _ in range(2):
                warnings.warn(gpu_check.SYNC_WARNING + ' (from the test)')  # the line below
            warnings.warn('something else')
    line = step.__code__.co_firstlineno + 4
    audit = gpu_check.sync_audit(OrderedDict(step=step), torch.device('cpu'),
                                 set_mode=modes.append)
    assert calls == [None, 'warn']  # one untimed call first, then one under 'warn'
    assert modes == ['warn', 'default']
    assert audit['step']['syncs'] == 2
    (where, n), = audit['step']['where'].items()
    assert n == 2 and where.endswith(f'test_gpu_check.py:{line}'), where
    assert 'skipped' in gpu_check.sync_audit(OrderedDict(step=step), torch.device('cpu'))


def test_follow_up_call_without_the_mmcv_build(tmp_path):
    """``--no-build --overfit-models instalign --compile eager --only '*_compiled'`` (a short
    second call, as the one of docs/benchmarks.md): no build is started, both models (InstAlign
    with mmcv's PyTorch deformable attention) measure bf16 inference and training with the
    forward compiled (dynamo with the eager backend here: the tracing without inductor's code
    generation) and nothing else (the dry run above measures the rest), only InstAlign
    overfits, and the report says why there was no build. A model name it does not know is
    refused before anything runs."""
    out = tmp_path / 'out'
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1',
               GPU_CHECK_WORK=str(tmp_path / 'work'), GPU_CHECK_BUILD_CMD=FAKE_BUILD)
    before = set(_sleepers())
    proc = subprocess.run(['bash', SCRIPT, str(out), '--device', 'cpu', '--quick', '--no-build',
                           '--overfit-models', 'instalign', '--compile', 'eager',
                           '--only', '*_compiled'],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert set(_sleepers()) == before  # the fake build never ran
    with open(out / 'gpu_check.json') as f:
        data = json.load(f)
    assert list(data['models']) == ['latentvg', 'instalign_msda_pytorch']
    compiled = {'infer_bf16_b2_compiled', 'train_bf16_b2_compiled'}
    for key, entry in data['models'].items():
        ms = entry['measurements']
        assert set(ms) == compiled, key
        assert all(m['img_per_s'] > 0 for m in ms.values()), key
        for mk in compiled:  # dynamo traced the forward (each graph break adds one)
            assert ms[mk]['compile']['backend'] == 'eager' and ms[mk]['compile']['graphs'] > 0
    assert not data['models']['latentvg'].get('overfit')
    assert data['models']['instalign_msda_pytorch']['overfit']['iters_done'] == 3
    assert data['setup']['mmcv_build'].startswith('none (--no-build')
    for bad_args in (['--models', 'latentvg instalgn'], ['--overfit-models', 'latentvgg']):
        bad = subprocess.run(['bash', SCRIPT, str(tmp_path / 'bad'), '--device', 'cpu',
                              *bad_args], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=60)
        assert bad.returncode == 2 and bad_args[1].split()[-1] in bad.stderr, bad.stderr
        assert not (tmp_path / 'bad').exists()


def test_profile_summary_counts_kernels_once_and_against_the_timed_step(monkeypatch):
    """On CUDA the summary sums the kernels' device time, leaving out user-annotated ranges
    (``Optimizer.step#AdamW.step`` spans the optimizer's kernels: counting it would count them
    twice), and relates it to the profiled step and to the median step timed without the
    profiler (fake profiler events here: no GPU in CI)."""
    import types

    import torch
    import torch.profiler

    def ev(key, device_us, annotation=False, dev='DeviceType.CUDA'):
        return types.SimpleNamespace(key=key, count=2, self_device_time_total=device_us,
                                     self_cpu_time_total=0, device_type=dev,
                                     is_user_annotation=annotation)

    events = [ev('gemm', 30000), ev('copy', 10000),
              ev('Optimizer.step#AdamW.step', 25000, annotation=True),
              ev('cudaLaunchKernel', 0, dev='DeviceType.CPU')]

    class FakeProfile:
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def key_averages(self):
            return events

    clock = iter([0.0, 0.1])  # 100 ms for 2 profiled steps: 50 ms per step
    monkeypatch.setattr(torch.profiler, 'profile', FakeProfile)
    monkeypatch.setattr(gpu_check, '_sync', lambda device: None)
    monkeypatch.setattr(gpu_check.time, 'perf_counter', lambda: next(clock))
    res = gpu_check.profile_summary(lambda: None, torch.device('cuda'), steps=2,
                                    timed_step_ms=25.0)
    assert [k['name'] for k in res['top_kernels']] == ['gemm', 'copy']
    assert res['kernel_ms_per_step'] == 20.0  # (30 + 10) ms over 2 steps
    assert res['gpu_busy_pct'] == 40.0  # of the 50 ms profiled step
    assert res['kernel_pct_of_timed_step'] == 80.0  # of the 25 ms timed step
    assert [k['share_pct'] for k in res['top_kernels']] == [75.0, 25.0]


def test_profile_summary_attributes_time_to_the_models_parts():
    """With the model, the summary reports each direct child's forward range (calls and
    inclusive CPU time per step; the GPU span on CUDA), keeps those ranges out of the op lists,
    and leaves no hook behind."""
    import torch

    class Part(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.lin = torch.nn.Linear(n, n)

        def forward(self, x):
            for _ in range(20):
                x = torch.tanh(self.lin(x))
            return x

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, self.head = Part(64), Part(8)

        def forward(self, x):
            return self.head(self.backbone(x)[:, :8])

    model = Model()
    x = torch.randn(32, 64)
    res = gpu_check.profile_summary(lambda: model(x), torch.device('cpu'), steps=2, model=model)
    parts = {r['name']: r for r in res['module_ranges']}
    assert set(parts) == {'backbone', 'head', 'backbone.lin', 'head.lin'}
    assert parts['backbone']['calls_per_step'] == 1.0 and parts['backbone.lin'][
        'calls_per_step'] == 20.0
    # inclusive: the part holds its linear layers' time
    assert parts['backbone']['cpu_ms_per_step'] >= parts['backbone.lin']['cpu_ms_per_step'] > 0
    assert not any(o['name'].startswith(gpu_check.MODULE_RANGE) for o in res['top_cpu_ops'])
    assert not model.backbone._forward_pre_hooks and not model.head._forward_hooks
    # a forward that raises leaves no range or hook open
    with pytest.raises(RuntimeError):
        gpu_check.profile_summary(lambda: model(torch.randn(2, 3)), torch.device('cpu'),
                                  steps=1, model=model)
    assert not model.backbone._forward_pre_hooks and not model.backbone._forward_hooks


def test_only_keeps_the_matching_measurements_in_plan_order():
    plan = [('infer_bf16_b32', 'inference'), ('train_bf16_b16', 'training'),
            ('train_bf16_b16_cp', 'training, with_cp'), ('infer_bf16_b1', 'inference'),
            ('infer_bf16_b32_compiled', 'inference, compiled'),
            ('train_bf16_b16_compiled', 'training, compiled')]
    keys = [p[0] for p in gpu_check.select_measurements(
        plan, ['train_bf16_b16_compiled', 'infer_bf16_b32*', 'train_bf16_b16'])]
    # an exact key does not take its _cp / _compiled variants; a * pattern does
    assert keys == ['infer_bf16_b32', 'train_bf16_b16', 'infer_bf16_b32_compiled',
                    'train_bf16_b16_compiled']
    assert gpu_check.select_measurements(plan, ['infer_fp32*']) == []
    assert gpu_check.parse_args(['out', '--models', 'latentvg', '--only', 'a*', 'b']).only \
        == ['a*', 'b']


def test_gpu_check_sh_passes_only_patterns_unexpanded(tmp_path):
    """gpu_check.sh hands --only's patterns to the driver as written, even when a file in the
    working directory matches one (the script runs from the repository root)."""
    with open(SCRIPT) as f:
        text = f.read()
    line = next(ln for ln in text.splitlines() if 'DRIVER+=(--only' in ln)
    (tmp_path / 'infer_bf16_b32_x').write_text('')
    out = subprocess.run(['bash', '-c', f'cd {tmp_path}; DRIVER=(); ONLY="infer_bf16_b32* t"; '
                          f'{line}\nprintf "%s\\n" "${{DRIVER[@]}}"'],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ['--only', 'infer_bf16_b32*', 't']
