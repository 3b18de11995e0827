"""tools/analysis_tools/benchmark.py prints every field (fake model, 2 iterations)."""
import os
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
APIS_TESTS = osp.join(ROOT, 'tests', 'apis')
sys.path.insert(0, APIS_TESTS)
from _fake_ref_model import write_fake_config  # noqa: E402

FIELDS = ('latency_b1_ms', 'images_per_s_b1', 'latency_bN_ms', 'images_per_s_bN',
          'backbone_bN_ms', 'full_to_backbone_ratio', 'data_samples_per_s', 'peak_rss_mb')


def run_bench(args, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, APIS_TESTS]), OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'analysis_tools',
                                                    'benchmark.py')] + args,
                          cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=600)


def parse(stdout):
    out = {}
    for line in stdout.splitlines():
        if ' : ' in line:
            k, v = line.split(' : ', 1)
            out[k.strip()] = v.strip()
    return out


def test_benchmark_fake_model(tmp_path):
    cfg = write_fake_config(tmp_path)
    out_json = str(tmp_path / 'bench.json')
    proc = run_bench([cfg, '--iters', '2', '--warmup', '1', '--batch-size', '3',
                      '--data-iters', '4', '--threads', '1', '--no-progress', '--out', out_json],
                     tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = parse(proc.stdout)
    for k in FIELDS:
        assert float(res[k]) > 0, (k, res)
    assert res['batch_size'] == '3' and res['model'] == 'FakeRefModel'
    assert res['backbone'] == 'Conv2d' and res['amp'] == 'off'
    assert res['data_source'].startswith('synthetic')
    # images/s follow from the latencies
    assert float(res['images_per_s_bN']) == \
        __import__('pytest').approx(3000 / float(res['latency_bN_ms']), rel=0.02)
    import json
    with open(out_json) as f:
        assert json.load(f)['images_per_s_b1'] == float(res['images_per_s_b1'])


def test_benchmark_amp_bf16_on_cpu(tmp_path):
    cfg = write_fake_config(tmp_path)
    proc = run_bench([cfg, '--iters', '2', '--warmup', '0', '--batch-size', '2',
                      '--data-iters', '2', '--amp', '--no-progress'], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert parse(proc.stdout)['amp'] == 'bfloat16'


def test_benchmark_tiny_latentvg_on_synthref(synthref_root, tmp_path):
    root = str(synthref_root)
    proc = run_bench(['latentvg_tiny_synthref', '--iters', '2', '--warmup', '1',
                      '--batch-size', '2', '--data-iters', '4', '--threads', '1',
                      '--cfg-options', f'test_dataloader.dataset.data_root={root}/',
                      f'model.tokenizer.spm_path={root}/tokenizers/beit3.spm'], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = parse(proc.stdout)
    for k in FIELDS:
        assert float(res[k]) > 0, (k, res)
    assert res['model'] == 'LatentVG' and res['backbone'] == 'BEiT3'
    assert res['data_source'].startswith('GRefCOCODataset')
    # the ratio is the quotient of the two printed times (no assertion on speed itself)
    assert float(res['full_to_backbone_ratio']) == \
        __import__('pytest').approx(float(res['latency_bN_ms']) / float(res['backbone_bN_ms']),
                                    rel=0.02)
    assert 'data pipeline' in proc.stderr  # progress bars go to stderr
