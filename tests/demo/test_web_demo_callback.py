"""demo/web_demo.py without a browser: the page's callback (WebDemo.predict) on good input and on
each bad input, the example loader, and the page / launch settings."""
import importlib.util
import json
import os.path as osp
import sys

import cv2
import numpy as np
import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
APIS_TESTS = osp.join(ROOT, 'tests', 'apis')
sys.path.insert(0, APIS_TESTS)
from _fake_ref_model import write_fake_config  # noqa: E402


def load_web_demo():
    """demo/web_demo.py as a module (demo/ is not a package)."""
    spec = importlib.util.spec_from_file_location('mmrefer_web_demo',
                                                  osp.join(ROOT, 'demo', 'web_demo.py'))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # gradio inspects the source file of the page's classes
    spec.loader.exec_module(module)
    return module


wd = load_web_demo()
pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def fake_demo(tmp_path_factory):
    """WebDemo around the fake model of tests/apis (mask = blue channel > 127 after a nearest
    32 x 32 stretch; "nothing" in the sentence = no target; Latent-VG-like expr_maps)."""
    from mmrefer.apis import RefInferencer
    cfg = write_fake_config(tmp_path_factory.mktemp('fake_cfg'))
    return wd.WebDemo(RefInferencer(cfg, device='cpu'))


@pytest.fixture
def block_png(tmp_path):
    """48 x 64 image, blue block on rows 10..29, columns 20..49 (the image_demo test's scene)."""
    bgr = np.zeros((48, 64, 3), np.uint8)
    bgr[10:30, 20:50, 0] = 255
    path = str(tmp_path / 'scene.png')
    cv2.imwrite(path, bgr)
    return path


def test_answers_each_sentence_with_picture_and_line(fake_demo, block_png):
    pictures, answers, message, ok = fake_demo.predict(
        block_png, 'the blue block\n\n   \nnothing there\n')
    assert ok
    lines = answers.splitlines()
    # hand computation (tests/tools/test_demo.py): the block's box at 32 x 32 is [10, 7, 25, 20],
    # divided by the scale (0.5, 2/3): [20, 10.5, 50, 30]
    assert lines[0].startswith('1. "the blue block": target found, score ')
    assert 'box [20.0, 10.5, 50.0, 30.0]' in lines[0]
    assert lines[1].startswith('2. "nothing there": no target, score 0.000')
    assert 'box' not in lines[1] and lines[1].endswith(', 0 mask pixels')
    assert [c for _, c in pictures] == lines  # one captioned picture per sentence
    for canvas, _ in pictures:
        assert canvas.dtype == np.uint8 and canvas.ndim == 3 and canvas.shape[2] == 3
    # draw_ref with show_extras=True: the two expr_maps panels are on the last picture, and the
    # 48 x 64 image is enlarged 6x (min side 256) -> 384 x 288 prediction panel
    layout = fake_demo.visualizer.layout
    assert {'title', 'pred', 'expr_maps_0', 'expr_maps_1'} <= set(layout)
    assert layout['pred'][2:] == (384, 288)
    _, y, _, h = layout['expr_maps_0']
    assert y >= layout['pred'][1] + layout['pred'][3]  # the maps row under the prediction
    assert pictures[1][0].shape[0] >= y + h  # ... inside the picture sent to the page
    assert message.startswith('Answered 2 sentence(s) on a 64 x 48 image in ')


def test_page_payload_is_read_like_a_path(fake_demo, block_png):
    """The click skips Gradio's preprocessing: the image comes as the upload's file payload
    (a dict, or a FileData-like object) and gives the same answers as its path."""
    from types import SimpleNamespace
    expected = fake_demo.predict(block_png, 'the blue block')[1]
    assert 'target found' in expected
    for payload in ({'path': block_png, 'url': 'http://127.0.0.1/x', 'orig_name': 'scene.png'},
                    SimpleNamespace(path=block_png, url=None)):
        pictures, answers, _, ok = fake_demo.predict(payload, 'the blue block')
        assert ok and answers == expected and len(pictures) == 1


@pytest.mark.parametrize('image, text, expected', [
    (None, 'the red circle', 'No image: upload an image'),
    ('', 'the red circle', 'No image: upload an image'),
    ('BLOCK', None, 'No sentence: type one or more sentences'),
    ('BLOCK', '', 'No sentence: type one or more sentences'),
    ('BLOCK', ' \n\t\n  ', 'No sentence: type one or more sentences'),
    ('MISSING', 'the red circle', "The image file 'gone.png' is not there any more"),
    ({'path': None, 'url': 'data:image/png;base64,AAAA'}, 'the red circle',
     'The image arrived without a file; upload it as an image file.'),
])
def test_missing_input_gives_message(fake_demo, block_png, tmp_path, image, text, expected):
    if isinstance(image, str):
        image = {'BLOCK': block_png, 'MISSING': str(tmp_path / 'gone.png')}.get(image, image)
    pictures, answers, message, ok = fake_demo.predict(image, text)
    assert not ok and pictures == [] and answers == ''
    assert message.startswith(expected), message


def test_unreadable_files_give_message(fake_demo, block_png, tmp_path):
    text_file = tmp_path / 'notes.jpg'
    text_file.write_text('not an image at all\n')
    jpg = tmp_path / 'cut.jpg'
    ok_jpg = cv2.imencode('.jpg', np.random.RandomState(0).randint(0, 255, (300, 400, 3),
                                                                      dtype=np.uint8))[1]
    jpg.write_bytes(ok_jpg.tobytes()[:len(ok_jpg) // 2])  # truncated in the middle of the scan
    for path, name in ((text_file, 'notes.jpg'), (jpg, 'cut.jpg')):
        pictures, answers, message, ok = fake_demo.predict(str(path), 'the red circle')
        assert not ok and pictures == [] and answers == ''
        assert message.startswith(f'Cannot read {name!r} as an image ('), message
        assert 'Traceback' not in message


def test_large_image_is_downscaled_with_note(fake_demo, tmp_path):
    bgr = np.zeros((400, 5000, 3), np.uint8)
    bgr[100:300, 1000:3000, 0] = 255
    path = str(tmp_path / 'wide.png')
    cv2.imwrite(path, bgr)
    rgb, note = wd.read_image(path)
    assert rgb.shape == (328, 4096, 3)  # 4096 / 5000 * 400 = 327.68 -> 328
    assert note == ('The image was 5000 x 400, over the limit of 4096 px on a side: downscaled '
                    'to 4096 x 328 and answered at that size.')
    pictures, answers, message, ok = fake_demo.predict(path, 'the blue block')
    assert ok and message.startswith(note)
    assert 'on a 4096 x 328 image' in message
    assert 'target found' in answers
    assert max(pictures[0][0].shape[:2]) <= wd.DISPLAY_SIDE


def test_refused_size_is_not_decoded(block_png, monkeypatch):
    from PIL import Image

    def no_decode(*args, **kwargs):
        raise AssertionError('a refused image was decoded')

    monkeypatch.setattr(Image.Image, 'load', no_decode)
    monkeypatch.setattr(Image.Image, 'convert', no_decode)
    with pytest.raises(wd.DemoInputError, match=r"'scene\.png' is too large: 64 x 48 = 3,072 "
                                                r"pixels, the limit is 3,071\. Downscale it"):
        wd.read_image(block_png, refuse_pixels=64 * 48 - 1)


def test_downscaled_size():
    assert wd.downscaled_size(4096, 4096) == (4096, 4096)
    assert wd.downscaled_size(4097, 10) == (4096, 10)
    assert wd.downscaled_size(3000, 9000) == (1365, 4096)  # 3000 * 4096 / 9000 = 1365.3
    assert wd.downscaled_size(100000, 1) == (4096, 1)  # never below one pixel


def test_exif_orientation_is_applied(tmp_path):
    from PIL import Image
    img = Image.new('RGB', (60, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[274] = 6  # rotate 90 degrees clockwise to display
    path = str(tmp_path / 'rotated.jpg')
    img.save(path, exif=exif)
    rgb, note = wd.read_image(path)
    assert rgb.shape == (60, 20, 3) and note is None


def test_16_bit_greyscale_png_keeps_its_picture(tmp_path):
    """A 16-bit greyscale PNG (PIL mode I;16): scaled to 8 bit as OpenCV reads it, not clipped
    to white by PIL's convert('RGB')."""
    grey = (np.arange(48 * 64).reshape(48, 64) * 20).astype(np.uint16)
    path = str(tmp_path / 'grey16.png')
    cv2.imwrite(path, grey)
    rgb, note = wd.read_image(path)
    ref = cv2.imread(path)[..., ::-1]   # OpenCV: 16 -> 8 bit by the top byte
    assert rgb.shape == ref.shape and note is None
    assert np.abs(rgb.astype(int) - ref.astype(int)).max() <= 1
    assert rgb.mean() < 200   # the clipped picture would be almost all 255


def test_sentence_limit_and_blank_lines():
    text = '\n'.join(f'sentence {k}' for k in range(11)) + '\n\n'
    sentences, note = wd.split_sentences(text, max_sentences=8)
    assert sentences == [f'sentence {k}' for k in range(8)]
    assert note == ('11 sentences given: only the first 8 are answered (one request answers at '
                    'most 8).')
    assert wd.split_sentences('  a red circle \r\n\nthe square', 8) == (
        ['a red circle', 'the square'], None)
    with pytest.raises(wd.DemoInputError, match='Sentences must be text, got list'):
        wd.split_sentences(['a'], 8)


def test_too_many_sentences_answers_the_first(fake_demo, block_png):
    text = '\n'.join(['the blue block'] * (wd.MAX_SENTENCES + 2))
    pictures, answers, message, ok = fake_demo.predict(block_png, text)
    assert ok and len(pictures) == wd.MAX_SENTENCES == len(answers.splitlines())
    assert message.startswith(f'{wd.MAX_SENTENCES + 2} sentences given: only the first '
                              f'{wd.MAX_SENTENCES} are answered')


def test_model_failure_gives_message(block_png):
    class Broken:
        def __call__(self, image, sentences, channel_order='bgr'):
            raise RuntimeError('boom in the head')

    pictures, answers, message, ok = wd.WebDemo(Broken()).predict(block_png, 'the circle')
    assert not ok and pictures == [] and answers == ''
    assert message == ('The model failed on this input (RuntimeError: boom in the head). '
                       'See the server log for details.')


@pytest.mark.parametrize('name, key', [('latentvg_tiny_synthref', 'expr_maps'),
                                       ('instalign_tiny_synthref', 'inst_masks')])
def test_tiny_models_on_synthref_example(synthref_root, name, key):
    """The quick-start configs (random init) on the first SynthRef val example: one answer per
    example sentence, and the method's maps drawn as extras panels."""
    from mmrefer.apis import RefInferencer
    root = str(synthref_root)
    opts = {'latentvg_tiny_synthref': {'model.tokenizer.spm_path': f'{root}/tokenizers/beit3.spm'},
            'instalign_tiny_synthref': {
                'model.text_encoder.tokenizer_dir': f'{root}/tokenizers/roberta'}}[name]
    torch.manual_seed(0)
    demo = wd.WebDemo(RefInferencer(name, device='cpu', cfg_options=opts))
    image, text = wd.load_examples(root)[0]
    pictures, answers, message, ok = demo.predict(image, text)
    sentences = text.splitlines()
    assert ok, message
    assert len(pictures) == len(sentences) == len(answers.splitlines())
    for k, (line, sentence) in enumerate(zip(answers.splitlines(), sentences), 1):
        assert line.startswith(f'{k}. "{sentence}": ')
        assert ': target found, score ' in line or ': no target, score ' in line
    assert any(p.startswith(f'{key}_') for p in demo.visualizer.layout)


def test_load_examples(synthref_root, tmp_path):
    root = str(synthref_root)
    rows = wd.load_examples(root)
    with open(osp.join(root, 'grefcoco', 'grefs(unc).json')) as f:
        refs = json.load(f)
    val = {}
    for r in refs:
        if r['split'] == 'val':
            val.setdefault(r['file_name'], set()).update(s['sent'] for s in r['sentences'])
    # every val image (SYNTHREF_SMALL_SIZES: 10), each with 1 to 3 of its own val sentences
    assert sorted(osp.basename(p) for p, _ in rows) == sorted(val)
    for path, text in rows:
        assert osp.isfile(path)
        sentences = text.split('\n')
        assert 1 <= len(sentences) <= 3 and set(sentences) <= val[osp.basename(path)]
    assert len(wd.load_examples(root, max_examples=4)) == 4
    # a plain folder of images: every image, no sentence; other files ignored
    (tmp_path / 'b.png').write_bytes(b'')
    (tmp_path / 'a.JPG').write_bytes(b'')
    (tmp_path / 'readme.txt').write_text('x')
    assert wd.load_examples(str(tmp_path)) == [[str(tmp_path / 'a.JPG'), ''],
                                               [str(tmp_path / 'b.png'), '']]
    assert wd.load_examples(str(tmp_path / 'absent')) == [] and wd.load_examples(None) == []


def test_cli_defaults_are_local_and_private():
    args = wd.parse_args(['latentvg_tiny_synthref'])
    kwargs = wd.launch_kwargs(args)
    assert kwargs['share'] is False and kwargs['server_name'] == '127.0.0.1'
    assert kwargs['server_port'] == 7860 and args.device == 'cpu' and args.weights is None
    assert wd.launch_kwargs(wd.parse_args(['x', '--share', '--port', '8000']))['share'] is True


def test_import_turns_gradio_analytics_off(monkeypatch, tmp_path):
    monkeypatch.delenv('GRADIO_ANALYTICS_ENABLED', raising=False)
    monkeypatch.setenv('GRADIO_TEMP_DIR', str(tmp_path))  # importing gradio creates its cache
    load_web_demo()
    import os
    assert os.environ['GRADIO_ANALYTICS_ENABLED'] == 'False'
    import gradio.analytics as analytics
    assert analytics.analytics_enabled() is False


def test_cli_rejects_bad_paths(tmp_path, capsys):
    for argv, expected in ((['c', '--weights', str(tmp_path / 'no.pth')],
                            f'--weights: checkpoint file not found: {tmp_path / "no.pth"}'),
                           (['c', '--examples', str(tmp_path / 'nodir')],
                            f'--examples: folder not found: {tmp_path / "nodir"}'),
                           (['c', '--port', '70000'], '--port must be in 1..65535, got 70000')):
        with pytest.raises(SystemExit):
            wd.parse_args(argv)
        assert expected in capsys.readouterr().err


def test_page_builds_with_its_elements(fake_demo, synthref_root, monkeypatch, tmp_path):
    monkeypatch.setenv('GRADIO_TEMP_DIR', str(tmp_path))  # gr.Examples copies its images there
    import gradio as gr
    ui = wd.build_ui(fake_demo, wd.load_examples(str(synthref_root))[:2], 'header')
    assert isinstance(ui, gr.Blocks) and ui.analytics_enabled is False
    ids = {c.get('props', {}).get('elem_id') for c in ui.get_config_file()['components']}
    assert {'input-image', 'sentences', 'run-button', 'message', 'answers', 'results'} <= ids


def test_demo_pins_agree():
    """pyproject's ``demo`` / ``tests`` extras pin gradio / selenium as requirements/demo.txt,
    which tools/install_env.sh installs."""
    import tomllib
    with open(osp.join(ROOT, 'pyproject.toml'), 'rb') as f:
        extras = tomllib.load(f)['project']['optional-dependencies']
    with open(osp.join(ROOT, 'requirements', 'demo.txt')) as f:
        pins = {line.split('==')[0]: line.strip() for line in f
                if line.strip() and not line.startswith('#')}
    assert set(pins) == {'gradio', 'selenium'} and all('==' in p for p in pins.values())
    assert pins['gradio'] in extras['demo'] and pins['selenium'] in extras['tests']
