"""tools/inference.py (batch CLI) on the tiny quick-start Latent-VG with a saved random checkpoint
and SynthRef images: RLE masks equal RefInferencer's, resume after SIGKILL and a torn line,
error records for bad lines, the folder + sentences-file mode, usage errors."""
import json
import os
import os.path as osp
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
from mmengine.runner import save_checkpoint
from pycocotools import mask as mask_utils

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools'))
import inference as cli  # noqa: E402

from mmrefer.apis import RefInferencer  # noqa: E402

pytestmark = pytest.mark.usefixtures('one_torch_thread')

CONFIG = 'latentvg_tiny_synthref'
SENTENCES = ['the red circle', 'all green shapes', 'the small blue square on the left']


@pytest.fixture(scope='module')
def tiny(synthref_root, tmp_path_factory):
    """(CLI arguments naming the config, a saved random checkpoint and the tokenizer; a
    RefInferencer with the same weights; the SynthRef image paths)."""
    spm = osp.join(str(synthref_root), 'tokenizers', 'beit3.spm')
    opts = {'model.tokenizer.spm_path': spm}
    torch.manual_seed(0)
    model = RefInferencer(CONFIG, cfg_options=opts).model
    ckpt = str(tmp_path_factory.mktemp('ckpt') / 'tiny_random.pth')
    save_checkpoint(dict(state_dict=model.state_dict(), meta=dict(epoch=1)), ckpt)
    ref = RefInferencer(CONFIG, weights=ckpt, batch_size=3, cfg_options=opts)
    images = sorted(str(p) for p in (synthref_root / 'images' / 'train2014').glob('*.jpg'))
    args = [CONFIG, '--weights', ckpt, '--cfg-options', f'model.tokenizer.spm_path={spm}']
    return args, ref, images


def write_jsonl(path, rows):
    with open(path, 'w') as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + '\n')
    return str(path)


def read_results(out_dir):
    with open(osp.join(out_dir, 'results.jsonl')) as f:
        return [json.loads(line) for line in f]


def decode(rle):
    return mask_utils.decode(rle).astype(bool)


def assert_record_matches(rec, answers, image_path):
    """``rec['results']`` equal the RefInferencer answers: decoded RLE bit-exact, box and flag
    equal, score equal up to float rounding (the CLI batches across images, so a sentence can
    share a batch with other sentences than in the reference call); the size is the image's
    own."""
    h, w = cv2.imread(image_path).shape[:2]
    assert (rec['height'], rec['width']) == (h, w)
    assert [r['sentence'] for r in rec['results']] == [a['text'] for a in answers]
    for r, a in zip(rec['results'], answers):
        assert r['mask']['size'] == [h, w] and isinstance(r['mask']['counts'], str)
        np.testing.assert_array_equal(decode(r['mask']), a['mask'])
        assert r['box'] == a['box']
        assert r['no_target'] is a['no_target']
        assert r['score'] == pytest.approx(a['score'], rel=1e-5, abs=1e-7)


def test_rle_masks_equal_the_inferencer_answers(tiny, tmp_path):
    """Five image lines (absolute and jsonl-relative paths, a blank line between them), batch
    3 across images; --show draws one PNG per sentence."""
    args, ref, images = tiny
    chosen = images[:5]
    sentences = [SENTENCES[:1 + k % 3] for k in range(5)]
    rows = [{'image': p if k % 2 else osp.relpath(p, str(tmp_path)), 'sentences': s}
            for k, (p, s) in enumerate(zip(chosen, sentences))]
    jsonl = write_jsonl(tmp_path / 'in.jsonl', rows[:2] + ['   '] + rows[2:])
    out = str(tmp_path / 'out')
    assert cli.main(args + ['--input', jsonl, '--out-dir', out, '--batch-size', '3',
                            '--show']) == 0
    records = read_results(out)
    assert [r['line'] for r in records] == [1, 2, 4, 5, 6]  # physical line numbers
    assert [r['image'] for r in records] == [r['image'] for r in rows]
    pairs = [(p, s) for p, ss in zip(chosen, sentences) for s in ss]
    answers = iter(ref.predict_pairs(pairs, batch_size=3))  # the same batches
    for rec, path, ss in zip(records, chosen, sentences):
        assert_record_matches(rec, [next(answers) for _ in ss], path)
    stems = [osp.splitext(osp.basename(p))[0] for p in chosen]
    expected = [f'{n:06d}_{stem}_{k}.png'
                for n, stem, ss in zip([1, 2, 4, 5, 6], stems, sentences) for k in range(len(ss))]
    assert sorted(os.listdir(osp.join(out, 'vis'))) == expected
    assert all(cv2.imread(osp.join(out, 'vis', name)) is not None for name in expected)


def count_lines(path):
    try:
        with open(path, 'rb') as f:
            return f.read().count(b'\n')
    except FileNotFoundError:
        return 0


def test_killed_run_resumes_without_duplicates_or_losses(tiny, tmp_path, capsys):
    """SIGKILL a CLI subprocess after some lines, add a torn half line, rerun: the file equals
    an uninterrupted run's, every input line once and in order."""
    args, ref, images = tiny
    rows = [{'image': p, 'sentences': SENTENCES[:2]} for p in images[:40]]
    jsonl = write_jsonl(tmp_path / 'in.jsonl', rows)
    common = args + ['--input', jsonl, '--batch-size', '2']
    whole = str(tmp_path / 'whole')
    assert cli.main(common + ['--out-dir', whole]) == 0
    expected = read_results(whole)
    assert [r['line'] for r in expected] == list(range(1, 41))

    out = str(tmp_path / 'killed')
    results = osp.join(out, 'results.jsonl')
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    proc = subprocess.Popen([sys.executable, osp.join(ROOT, 'tools', 'inference.py')] + common +
                            ['--out-dir', out], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while count_lines(results) < 3 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-3000:]
    done = count_lines(results)
    assert 3 <= done < 40, f'the run was not interrupted mid-way ({done} lines)'
    with open(results, 'ab') as f:  # a torn last line, as a crash mid-write leaves it
        f.write(json.dumps(expected[done])[:37].encode())

    assert cli.main(common + ['--out-dir', out]) == 0
    assert 'dropped a torn last line' in capsys.readouterr().err
    assert read_results(out) == expected


def test_bad_lines_become_error_records(tiny, tmp_path, capsys):
    args, ref, images = tiny
    good = images[0]
    (tmp_path / 'corrupt.jpg').write_bytes(b'\xff\xd8\xff\xe0 these are not JPEG data')
    lines = [
        json.dumps({'image': good, 'sentences': SENTENCES[:2]}),
        json.dumps({'image': 'no_such_image.jpg', 'sentences': ['the red circle']}),
        json.dumps({'image': 'corrupt.jpg', 'sentences': ['the red circle']}),
        json.dumps({'image': good, 'sentences': ['the red circle', '  ']}),
        '{"image": "a.jpg", "sentences": [',
        json.dumps({'image': good}),
        json.dumps(['not', 'an', 'object']),
        json.dumps({'image': good, 'sentences': SENTENCES[2]}),  # one sentence as a string
    ]
    jsonl = write_jsonl(tmp_path / 'in.jsonl', lines)
    out = str(tmp_path / 'out')
    assert cli.main(args + ['--input', jsonl, '--out-dir', out]) == 1
    records = read_results(out)
    assert [r['line'] for r in records] == list(range(1, 9))
    causes = {2: ['image file not found', 'no_such_image.jpg'],
              3: ['cannot decode image file', 'corrupt.jpg'],
              4: ["field 'sentences'[1] is an empty sentence"],
              5: ['malformed JSON'],
              6: ["missing field 'sentences'"],
              7: ['expected a JSON object', 'got list']}
    for n, words in causes.items():
        rec = records[n - 1]
        assert set(rec) >= {'line', 'error'} and 'results' not in rec
        assert f'in.jsonl line {n}: ' in rec['error'], rec['error']
        for word in words:
            assert word in rec['error'], rec['error']
    assert_record_matches(records[0], ref(good, SENTENCES[:2]), good)
    assert_record_matches(records[7], ref(good, SENTENCES[2]), good)
    printed = capsys.readouterr().out
    assert '8 input lines' in printed and '2 with results, 6 error records' in printed
    assert printed.count('  error: ') == 6
    # a rerun has nothing left to do: same file, still exit status 1
    before = open(osp.join(out, 'results.jsonl'), 'rb').read()
    assert cli.main(args + ['--input', jsonl, '--out-dir', out]) == 1
    assert open(osp.join(out, 'results.jsonl'), 'rb').read() == before


def test_folder_and_sentences_file(tiny, tmp_path, capsys):
    """Every image of a folder with every sentence of a text file; a rerun on a changed input
    or with other weights is refused (exit 2) until --overwrite."""
    args, ref, images = tiny
    folder = tmp_path / 'imgs'
    folder.mkdir()
    for p in images[3:6]:
        shutil.copy(p, str(folder))
    (folder / 'notes.txt').write_text('not an image')
    sentences_file = tmp_path / 'sentences.txt'
    sentences_file.write_text('the red circle\n\nall green shapes\n')
    out = str(tmp_path / 'out')
    argv = args + ['--input', str(folder), '--sentences', str(sentences_file), '--out-dir', out]
    assert cli.main(argv) == 0
    records = read_results(out)
    names = sorted(osp.basename(p) for p in images[3:6])
    assert [r['image'] for r in records] == names and [r['line'] for r in records] == [1, 2, 3]
    pairs = [(str(folder / n), s) for n in names for s in SENTENCES[:2]]
    answers = iter(ref.predict_pairs(pairs, batch_size=8))
    for rec, name in zip(records, names):
        assert_record_matches(rec, [next(answers), next(answers)], str(folder / name))

    before = open(osp.join(out, 'results.jsonl'), 'rb').read()
    capsys.readouterr()
    sentences_file.write_text('the red circle\nthe purple square\n')
    assert cli.main(argv) == 2
    assert 'the input changed since the run started' in capsys.readouterr().err
    other = [a if a != args[2] else args[2] + '.other' for a in argv]
    shutil.copy(args[2], args[2] + '.other')
    assert cli.main(other) == 2
    assert 'weights' in capsys.readouterr().err
    assert open(osp.join(out, 'results.jsonl'), 'rb').read() == before
    assert cli.main(argv + ['--overwrite']) == 0
    assert [[r['sentence'] for r in rec['results']] for rec in read_results(out)] == \
        [['the red circle', 'the purple square']] * 3


def test_usage_errors_exit_2(tiny, tmp_path, capsys):
    args, _, images = tiny
    jsonl = write_jsonl(tmp_path / 'in.jsonl', [{'image': images[0], 'sentences': ['x']}])
    out = str(tmp_path / 'out')
    cases = [
        (['--input', str(tmp_path), '--out-dir', out], 'give --sentences'),
        (['--input', jsonl, '--sentences', jsonl, '--out-dir', out], 'goes with a folder'),
        (['--input', str(tmp_path / 'nope.jsonl'), '--out-dir', out], 'nope.jsonl'),
        (['--input', write_jsonl(tmp_path / 'empty.jsonl', ['']), '--out-dir', out], 'no line'),
    ]
    for extra, words in cases:
        assert cli.main(args + extra) == 2, extra
        assert words in capsys.readouterr().err
    missing_ckpt = [CONFIG, '--weights', str(tmp_path / 'missing.pth')] + args[3:]
    assert cli.main(missing_ckpt + ['--input', jsonl, '--out-dir', str(tmp_path / 'o2')]) == 2
    assert 'missing.pth' in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse
        cli.main(args + ['--input', jsonl, '--out-dir', out, '--batch-size', '0'])
    assert e.value.code == 2


def test_nothing_is_lost_before_the_run_can_start(tiny, tmp_path, capsys):
    """--overwrite deletes the old results only once the model, its weights and its tokenizer
    have loaded, and never other files; records whose run.json is gone are not added to; an
    --out-dir that is a file is a usage error."""
    args, _, images = tiny
    jsonl = write_jsonl(tmp_path / 'in.jsonl', [{'image': p, 'sentences': ['the red circle']}
                                                for p in images[:2]])
    out = tmp_path / 'out'
    assert cli.main(args + ['--input', jsonl, '--out-dir', str(out), '--show']) == 0
    vis = sorted(os.listdir(out / 'vis'))
    (out / 'vis' / 'notes.txt').write_text('mine')
    before = (out / 'results.jsonl').read_bytes()
    capsys.readouterr()
    bad_weights = [CONFIG, '--weights', str(tmp_path / 'epoch_9.pth')] + args[3:]
    bad_tokenizer = args[:3] + ['--cfg-options', 'model.tokenizer.spm_path=/nope.spm']
    other = str(tmp_path / 'other_model.pth')   # a checkpoint that fills none of the keys
    torch.save({'state_dict': {'head.decoder.w': torch.zeros(2)}}, other)
    other_model = [CONFIG, '--weights', other] + args[3:]
    for bad, words in ((bad_weights, 'epoch_9.pth'), (bad_tokenizer, '/nope.spm'),
                       (other_model, "other_model.pth: none of the model's")):
        assert cli.main(bad + ['--input', jsonl, '--out-dir', str(out), '--overwrite']) == 2
        assert words in capsys.readouterr().err
        assert (out / 'results.jsonl').read_bytes() == before
        assert sorted(os.listdir(out / 'vis')) == sorted(vis + ['notes.txt'])
    assert cli.main(args + ['--input', jsonl, '--out-dir', str(out), '--overwrite']) == 0
    assert os.listdir(out / 'vis') == ['notes.txt']   # the old pictures went, the notes stayed
    # a run.json lost or corrupt: the settings of the records are unknown, nothing is added
    for damage in (lambda p: os.remove(p), lambda p: open(p, 'w').write('{corrupt')):
        damage(str(out / 'run.json'))
        (out / 'results.jsonl').write_bytes(before.splitlines(keepends=True)[0])
        assert cli.main(args + ['--input', jsonl, '--out-dir', str(out)]) == 2
        assert 'run.json is' in capsys.readouterr().err
        assert len(read_results(str(out))) == 1
    (tmp_path / 'afile').write_text('x')
    assert cli.main(args + ['--input', jsonl, '--out-dir', str(tmp_path / 'afile')]) == 2
    assert 'is a file' in capsys.readouterr().err
