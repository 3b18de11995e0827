"""tools/analysis_tools/benchmark.py: the train-pipeline rate on COCO-size SynthRef (both paper
configs, no model built), its refusal of missing data (no synthetic fallback), inference on a
fake and a tiny model, and the train-step mode (memory fields, with_cp, dynamo graph breaks)."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
APIS_TESTS = osp.join(ROOT, 'tests', 'apis')
BENCH = osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark.py')
sys.path.insert(0, APIS_TESTS)
sys.path.insert(0, osp.dirname(BENCH))
from _fake_ref_model import write_fake_config  # noqa: E402

PAPER = {
    'latentvg': osp.join(ROOT, 'configs', 'latentvg_beit3.py'),
    'instalign': osp.join(ROOT, 'configs', 'instalign', 'instalign_swin-b_roberta_grefcoco.py'),
}
INFERENCE_FIELDS = ('latency_b1_ms', 'images_per_s_b1', 'latency_bN_ms', 'images_per_s_bN',
                    'backbone_bN_ms', 'full_to_backbone_ratio', 'peak_rss_mb')


class Result:
    """What a run of ``benchmark.main(args)`` returned and printed."""

    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_bench(args, cwd, capsys=None):
    """``benchmark.main(args)`` in this process (imports are paid once per session) from
    ``cwd``; with ``capsys`` its output is captured, else a subprocess runs the CLI."""
    if capsys is None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, APIS_TESTS]),
                   OMP_NUM_THREADS='1')
        proc = subprocess.run([sys.executable, BENCH] + args, cwd=str(cwd), env=env,
                              capture_output=True, text=True, timeout=900)
        return Result(proc.returncode, proc.stdout, proc.stderr)
    import benchmark
    old = os.getcwd()
    os.chdir(str(cwd))
    capsys.readouterr()
    try:
        code = benchmark.main(args)
    except SystemExit as e:  # argparse errors
        code = e.code
    finally:
        os.chdir(old)
    out, err = capsys.readouterr()
    return Result(code, out, err)


def parse(stdout):
    out = {}
    for line in stdout.splitlines():
        if ' : ' in line:
            k, v = line.split(' : ', 1)
            out[k.strip()] = v.strip()
    return out


def px(value):
    w, h = value.split('x')
    return float(w), float(h)


@pytest.fixture(scope='module')
def coco_synthref(tmp_path_factory):
    """SynthRef at COCO photo sizes with the combined-RefCOCO aliases, as --make-synthref
    writes it (written once here; the runs below find its .complete marker)."""
    import benchmark
    root = str(tmp_path_factory.mktemp('synthref_coco'))
    return benchmark.make_synthref_coco(root)


@pytest.mark.parametrize('method', sorted(PAPER))
def test_pipeline_only_paper_config_on_coco_size_jpegs(method, coco_synthref, tmp_path, capsys):
    out_json = tmp_path / 'r.json'
    proc = run_bench([PAPER[method], '--pipeline-only', '--make-synthref', coco_synthref,
                      '--data-iters', '12', '--workers', '1', '--no-progress',
                      '--out', str(out_json)], tmp_path, capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = parse(proc.stdout)
    assert res['mode'] == 'pipeline' and 'model' not in res  # no model built
    # the combined-RefCOCO config reads its three parts through the aliases
    assert res['pipeline_dataset'].startswith(
        'ConcatDataset' if method == 'latentvg' else 'GRefCOCODataset')
    assert res['pipeline_samples'] == '12'
    assert float(res['pipeline_samples_per_s_per_worker']) > 0
    assert float(res['pipeline_samples_per_cpu_s']) > 0
    assert float(res['pipeline_decode_ms']) > 0
    # the timed samples are COCO-size photos (333-640 px sides), not the 96-160 px default
    w, h = px(res['pipeline_image_px'])
    assert 400 <= min(w, h) and max(w, h) <= 640, res['pipeline_image_px']
    assert 'WARNING' not in proc.stderr
    assert res['dataloader_workers'] == '1'
    assert float(res['dataloader_samples_per_s_per_worker']) > 0
    assert res['opencv_threads'] == '1'  # the Runner's mp_cfg: one worker's worth of CPU
    with open(out_json) as f:
        assert json.load(f)['pipeline_image_px'] == res['pipeline_image_px']


def test_pipeline_refuses_missing_data_no_synthetic_fallback(tmp_path, capsys):
    # run from an empty folder: the paper config's data/ is not there
    proc = run_bench([PAPER['instalign'], '--pipeline-only', '--no-progress'], tmp_path, capsys)
    assert proc.returncode == 2, proc.stdout + proc.stderr[-3000:]
    assert 'train dataset not on disk' in proc.stderr
    assert 'grefcoco/instances.json' in proc.stderr  # names the missing file
    assert 'no synthetic fallback' in proc.stderr and '--make-synthref' in proc.stderr
    assert 'pipeline_samples_per_s_per_worker' not in proc.stdout
    # the inference mode measures the pipeline too, so it refuses the same way
    cfg = write_fake_config(tmp_path)
    proc = run_bench([cfg, '--no-progress'], tmp_path, capsys)
    assert proc.returncode == 2
    assert 'no train_dataloader.dataset' in proc.stderr and '--skip-pipeline' in proc.stderr


def test_pipeline_warns_on_small_images(synthref_root, tmp_path, capsys):
    """The default SynthRef (96-160 px) is not real-size: measured, but flagged."""
    root = str(synthref_root)
    proc = run_bench(['latentvg_tiny_synthref', '--pipeline-only', '--data-iters', '5',
                      '--no-progress', '--cfg-options',
                      f'train_dataloader.dataset.data_root={root}/'], tmp_path, capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w, h = px(parse(proc.stdout)['pipeline_image_px'])
    assert max(w, h) <= 160
    assert 'WARNING' in proc.stderr and 'smaller than real photos' in proc.stderr


def test_benchmark_fake_model(tmp_path):
    cfg = write_fake_config(tmp_path)
    out_json = str(tmp_path / 'bench.json')
    proc = run_bench([cfg, '--skip-pipeline', '--iters', '2', '--warmup', '1', '--batch-size',
                      '3', '--threads', '1', '--no-progress', '--out', out_json], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = parse(proc.stdout)
    for k in INFERENCE_FIELDS:
        assert float(res[k]) > 0, (k, res)
    assert res['batch_size'] == '3' and res['model'] == 'FakeRefModel'
    assert res['backbone'] == 'Conv2d' and res['amp'] == 'off'
    # the model's inputs: random images (the fake config's dataset is not on disk), and no
    # data rate measured on them
    assert res['data_source'].startswith('synthetic')
    assert not any(k.startswith(('pipeline_', 'data_samples')) for k in res)
    with open(out_json) as f:
        assert json.load(f)['images_per_s_b1'] == float(res['images_per_s_b1'])


def test_benchmark_amp_bf16_on_cpu(tmp_path, capsys):
    cfg = write_fake_config(tmp_path)
    proc = run_bench([cfg, '--skip-pipeline', '--iters', '2', '--warmup', '0', '--batch-size',
                      '2', '--amp', '--no-progress'], tmp_path, capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert parse(proc.stdout)['amp'] == 'bfloat16'


def test_benchmark_tiny_latentvg_inference_and_pipeline(coco_synthref, tmp_path, capsys):
    proc = run_bench(['latentvg_tiny_synthref', '--make-synthref', coco_synthref, '--iters',
                      '2', '--warmup', '1', '--batch-size', '2', '--data-iters', '4'],
                     tmp_path, capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = parse(proc.stdout)
    for k in INFERENCE_FIELDS + ('pipeline_samples_per_s_per_worker',):
        assert float(res[k]) > 0, (k, res)
    assert res['model'] == 'LatentVG' and res['backbone'] == 'BEiT3'
    assert res['data_source'].startswith('GRefCOCODataset')
    assert 'train pipeline' in proc.stderr  # progress bars go to stderr


@pytest.mark.parametrize('with_cp', [False, True])
def test_train_step_tiny_latentvg(with_cp, coco_synthref, tmp_path, capsys):
    args = ['latentvg_tiny_synthref', '--train-step', '--make-synthref', coco_synthref,
            '--skip-pipeline', '--batch-size', '2', '--iters', '1', '--warmup', '1',
            '--no-progress']
    if with_cp:  # + graph breaks, and the compiled loss forward (eager backend: no C++ build)
        args += ['--explain', '--compile', '--compile-backend', 'eager', '--compile-target',
                 'forward', '--cfg-options', 'model.backbone.with_cp=True']
    proc = run_bench(args, tmp_path, capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = parse(proc.stdout)
    assert res['mode'] == 'train_step' and res['model'] == 'LatentVG'
    assert res['with_cp'] == str(with_cp)
    assert float(res['train_step_s']) > 0
    # the peak is at least the memory held before the step (model, optimizer, batch)
    assert float(res['peak_rss_mb']) >= float(res['rss_before_step_mb']) > 0
    assert res['input_px'] == '128x128'
    if with_cp:
        # dynamo cannot trace the sentencepiece tokenizer inside the loss forward
        reasons = json.loads(res['dynamo_break_reasons'])
        assert int(res['dynamo_graph_breaks']) >= 1 and reasons
        assert any('SentencePieceProcessor' in r for r in reasons), reasons
        assert res['compile'] == 'eager (forward)'
        assert float(res['compiled_train_step_s']) > 0


def test_bad_arguments_are_named(tmp_path, capsys):
    proc = run_bench(['x.py', '--explain'], tmp_path, capsys)
    assert proc.returncode == 2 and '--explain needs --train-step' in proc.stderr
    proc = run_bench(['x.py', '--pipeline-only', '--compile'], tmp_path, capsys)
    assert proc.returncode == 2 and '--pipeline-only builds no model' in proc.stderr
    proc = run_bench(['x.py', '--workers', '-1'], tmp_path, capsys)
    assert proc.returncode == 2 and '--workers must be >= 0' in proc.stderr
    (tmp_path / 'afile').write_text('x')
    proc = run_bench(['x.py', '--out', str(tmp_path / 'afile' / 'bench.json')], tmp_path, capsys)
    assert proc.returncode == 2 and 'cannot create its folder' in proc.stderr
