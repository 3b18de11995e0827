"""Web demo: ground sentences in an uploaded image, in the browser (Gradio).

    pip install "mmrefer[demo]"          # gradio (pinned in pyproject.toml / requirements/demo.txt)
    python demo/web_demo.py CONFIG --weights CKPT [--port 7860] [--host 127.0.0.1] \
        [--device cpu] [--examples DIR] [--cfg-options KEY=VALUE ...] [--share]

CONFIG is a config file or a config name under configs/ (e.g. ``latentvg_tiny_synthref``);
without ``--weights`` the model keeps its random initialisation (the page says so). The model is
loaded once, at start. Open ``http://HOST:PORT``, upload an image (or click an example), type one
sentence per line and press **Ground**: the page shows for each sentence the picture of
:meth:`RefLocalVisualizer.draw_ref` (mask overlay, box, "no target", and the Latent-VG
per-expression maps ``expr_maps`` or the InstAlign per-instance masks ``inst_masks`` ranked by
score with their aligned words) and one answer line ("target found" / "no target", score, box,
mask pixels).

Examples: ``--examples DIR`` is a SynthRef / gRefCOCO-layout root (its val images, each with the
first sentences of its val references) or any folder of images; by default ``data/synthref``
when that folder exists (``make quickstart`` writes it), else none.

Bad input never shows a stack trace: no image, no sentence, an unreadable file, an image over
``MAX_SIDE`` px on a side (downscaled, with a note), over ``REFUSE_PIXELS`` pixels (refused), or
a model failure each give a message in the page (the "message" box and a ``gr.Warning``).
Gradio's analytics are off (``GRADIO_ANALYTICS_ENABLED=False``) and ``--share`` is off by
default: the page needs no network beyond the served host.
"""
import argparse
import glob
import json
import logging
import os
import os.path as osp
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')  # before gradio is imported

import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

matplotlib.use('Agg')  # no display needed

#: longest image side accepted as is (so at most 16.8 MP); larger images are downscaled to it,
#: with a note in the page
MAX_SIDE = 4096
#: images of more pixels are refused from their header, never decoded (80 MP, under PIL's own
#: decompression-bomb warning at 89.5 MP)
REFUSE_PIXELS = 80_000_000
#: sentences answered per request (one per line); further lines are left out, with a note
MAX_SENTENCES = 8
#: longest side of each answer picture sent to the browser (the drawing itself is full size)
DISPLAY_SIDE = 1600
#: upload limit passed to Gradio ('50mb' is 50 MiB there; its page refuses bigger files)
MAX_FILE_SIZE = '50mb'
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')

logger = logging.getLogger('mmrefer.web_demo')


class DemoInputError(ValueError):
    """Bad user input; its message is shown in the page as is."""


# ---------------------------------------------------------------------------------- inputs
def downscaled_size(w: int, h: int, max_side: int = MAX_SIDE) -> Tuple[int, int]:
    """``(w', h')`` with ``s = max_side / max(w, h)``, ``w' = max(1, round(s w))``,
    ``h' = max(1, round(s h))`` when ``max(w, h) > max_side``, else ``(w, h)``."""
    if max(w, h) <= max_side:
        return w, h
    s = max_side / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def read_image(path: Optional[str],
               max_side: int = MAX_SIDE,
               refuse_pixels: int = REFUSE_PIXELS) -> Tuple[np.ndarray, Optional[str]]:
    """Decode an uploaded image file into RGB uint8 ``[H, W, 3]`` (EXIF orientation applied).

    The size is read from the header first: over ``refuse_pixels`` the file is refused without
    being decoded; over ``max_side`` px on a side it is downscaled to :func:`downscaled_size`
    (LANCZOS; a JPEG is decoded at a reduced scale first).

    Returns:
        ``(rgb, note)``: ``note`` says how the image was downscaled, else ``None``.

    Raises:
        DemoInputError: no path, a missing file, a file PIL cannot decode, or a refused size.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError
    if path is None or (isinstance(path, str) and not path.strip()):
        raise DemoInputError('No image: upload an image (or click an example) first.')
    if not isinstance(path, str):
        raise DemoInputError(f'Unexpected image value of type {type(path).__name__}; '
                             f'upload an image file.')
    name = osp.basename(path)
    if not osp.isfile(path):
        raise DemoInputError(f'The image file {name!r} is not there any more; upload it again.')
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w < 1 or h < 1:
                raise DemoInputError(f'The image {name!r} is empty ({w} x {h} pixels).')
            if w * h > refuse_pixels:
                raise DemoInputError(
                    f'The image {name!r} is too large: {w} x {h} = {w * h:,} pixels, the limit '
                    f'is {refuse_pixels:,}. Downscale it and upload it again.')
            tw, th = downscaled_size(w, h, max_side)
            if (tw, th) != (w, h) and im.format == 'JPEG':
                im.draft('RGB', (tw, th))  # decode at 1/2, 1/4 or 1/8 scale when possible
            im = ImageOps.exif_transpose(im)  # also decodes
            if im.mode in ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I'):
                # 16-/32-bit greyscale: convert('RGB') would clip every value above 255 (a
                # 16-bit photo turns white); scale the full range to 8 bit first, as OpenCV does
                a = np.asarray(im).astype(np.float64)
                top = 65535.0 if im.mode.startswith('I;16') or a.max() <= 65535 else a.max()
                im = Image.fromarray(np.clip(a * 255.0 / top + 0.5, 0, 255).astype(np.uint8))
            im = im.convert('RGB')
    except DemoInputError:
        raise
    except Image.DecompressionBombError as e:  # over PIL's own limit (2 x MAX_IMAGE_PIXELS)
        raise DemoInputError(f'The image {name!r} is too large ({e}). Downscale it and upload '
                             f'it again.') from None
    except (UnidentifiedImageError, OSError, ValueError,
            SyntaxError) as e:  # PIL reports truncated / corrupt files with these
        raise DemoInputError(f'Cannot read {name!r} as an image ({type(e).__name__}: {e}). '
                             f'Upload a JPEG, PNG, BMP or WebP file.') from None
    note = None
    if (tw, th) != (w, h):  # EXIF may have turned the image: size from what was decoded
        dw, dh = downscaled_size(*im.size, max_side)
        if (dw, dh) != im.size:
            im = im.resize((dw, dh), Image.Resampling.LANCZOS)
        note = (f'The image was {w} x {h}, over the limit of {max_side} px on a side: '
                f'downscaled to {im.size[0]} x {im.size[1]} and answered at that size.')
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8)), note


def uploaded_path(value: Any) -> Optional[str]:
    """The file path in what the page sends for the image when Gradio's preprocessing is skipped:
    ``None``, a path, or a file payload (``{'path': ..., 'url': ..., 'orig_name': ...}`` or an
    object with ``.path``).

    Raises:
        DemoInputError: a payload without a file path (e.g. an inline ``data:`` URL).
    """
    if value is None or isinstance(value, str):
        return value
    path = value.get('path') if isinstance(value, dict) else getattr(value, 'path', None)
    if not path:
        raise DemoInputError('The image arrived without a file; upload it as an image file.')
    return str(path)


def split_sentences(text: Optional[str],
                    max_sentences: int = MAX_SENTENCES) -> Tuple[List[str], Optional[str]]:
    """One sentence per non-blank line (stripped); at most ``max_sentences``.

    Returns:
        ``(sentences, note)``; ``note`` says how many lines were left out, else ``None``.

    Raises:
        DemoInputError: no non-blank line.
    """
    if text is None:
        text = ''
    if not isinstance(text, str):
        raise DemoInputError(f'Sentences must be text, got {type(text).__name__}.')
    lines = [s.strip() for s in text.splitlines()]
    sentences = [s for s in lines if s]
    if not sentences:
        raise DemoInputError('No sentence: type one or more sentences, one per line '
                             '(e.g. "the red circle").')
    note = None
    if len(sentences) > max_sentences:
        note = (f'{len(sentences)} sentences given: only the first {max_sentences} are '
                f'answered (one request answers at most {max_sentences}).')
        sentences = sentences[:max_sentences]
    return sentences, note


def load_examples(folder: Optional[str], max_examples: int = 12,
                  sentences_per_image: int = 3) -> List[List[str]]:
    """Example rows ``[image_path, sentences]`` for the page.

    ``folder`` is a SynthRef / gRefCOCO-layout root (``grefcoco/grefs(unc).json`` and
    ``images/train2014/``: the val images in file order, each with the first sentence of up to
    ``sentences_per_image`` of its val references, one per line) or a plain folder of images
    (``sentences`` empty). ``None`` or a missing folder gives ``[]``.
    """
    if not folder or not osp.isdir(folder):
        return []
    grefs = osp.join(folder, 'grefcoco', 'grefs(unc).json')
    img_dir = osp.join(folder, 'images', 'train2014')
    rows: Dict[str, List[str]] = {}
    if osp.isfile(grefs) and osp.isdir(img_dir):
        with open(grefs, encoding='utf-8') as f:
            refs = json.load(f)
        if not isinstance(refs, list):
            raise ValueError(f'{grefs}: expected a list of references, got {type(refs).__name__}')
        for ref in refs:
            if not isinstance(ref, dict) or ref.get('split') != 'val':
                continue
            path = osp.join(img_dir, str(ref.get('file_name', '')))
            sents = [s.get('sent', '') for s in ref.get('sentences') or []
                     if isinstance(s, dict) and s.get('sent')]
            if not osp.isfile(path) or not sents:
                continue
            texts = rows.setdefault(path, [])
            if len(texts) < sentences_per_image and sents[0] not in texts:
                texts.append(sents[0])
        rows = dict(sorted(rows.items())[:max_examples])
        return [[p, '\n'.join(t)] for p, t in rows.items()]
    files = sorted(p for p in glob.glob(osp.join(folder, '*'))
                   if p.lower().endswith(IMAGE_EXTENSIONS) and osp.isfile(p))
    return [[p, ''] for p in files[:max_examples]]


# ---------------------------------------------------------------------------------- answers
def answer_line(k: int, res: Dict[str, Any]) -> str:
    """One line of the "answers" box: ``k. "sentence": target found | no target`` followed by
    the model's ``score`` (when it gives one), the box ``[x1, y1, x2, y2]`` (when a target is
    found) and the mask's pixel count, all at the image's size."""
    verdict = 'no target' if res.get('no_target') else 'target found'
    parts = [f'{k}. "{res.get("text")}": {verdict}']
    if res.get('score') is not None:
        parts.append(f'score {float(res["score"]):.3f}')
    if not res.get('no_target'):
        box = ', '.join(f'{float(v):.1f}' for v in np.asarray(res['box']).reshape(-1))
        parts.append(f'box [{box}]')
    parts.append(f'{int(np.count_nonzero(res["mask"]))} mask pixels')
    return ', '.join(parts)


def fit_display(canvas: np.ndarray, max_side: int = DISPLAY_SIDE) -> np.ndarray:
    """Shrink an RGB picture (INTER_AREA) so that its longest side is at most ``max_side``."""
    import cv2
    h, w = canvas.shape[:2]
    s = max_side / max(h, w)
    if s >= 1:
        return canvas
    return cv2.resize(canvas, (max(1, int(w * s)), max(1, int(h * s))),
                      interpolation=cv2.INTER_AREA)


class WebDemo:
    """The page's callback around a loaded model (no Gradio needed to call it).

    Args:
        inferencer: a :class:`mmrefer.apis.RefInferencer` (or anything called as
            ``inferencer(rgb, sentences, channel_order='rgb')`` that returns its answers).
        visualizer: a :class:`mmrefer.visualization.RefLocalVisualizer` (created when ``None``).
        max_side, refuse_pixels, max_sentences, display_side: the limits above.
    """

    def __init__(self, inferencer, visualizer=None, max_side: int = MAX_SIDE,
                 refuse_pixels: int = REFUSE_PIXELS,
                 max_sentences: int = MAX_SENTENCES, display_side: int = DISPLAY_SIDE) -> None:
        if visualizer is None:
            from mmrefer.visualization import RefLocalVisualizer
            visualizer = RefLocalVisualizer.get_instance(f'mmrefer_web_demo_{id(self)}')
        self.inferencer = inferencer
        self.visualizer = visualizer
        self.max_side = max_side
        self.refuse_pixels = refuse_pixels
        self.max_sentences = max_sentences
        self.display_side = display_side

    def predict(self, image: Any, text: Optional[str]
                ) -> Tuple[List[Tuple[np.ndarray, str]], str, str, bool]:
        """Answer every sentence of ``text`` (one per line) on the image file ``image`` (a path
        or the page's file payload, see :func:`uploaded_path`).

        Returns:
            ``(pictures, answers, message, ok)``: ``pictures`` a list of ``(RGB canvas,
            caption)``, one per sentence (:meth:`RefLocalVisualizer.draw_ref` with
            ``show_extras=True``, longest side at most ``display_side``); ``answers`` one
            :func:`answer_line` per sentence; ``message`` what went wrong or was changed (or
            how long it took); ``ok`` False when nothing could be answered. Never raises.
        """
        try:
            t0 = time.perf_counter()
            rgb, image_note = read_image(uploaded_path(image), self.max_side,
                                         self.refuse_pixels)
            sentences, sentence_note = split_sentences(text, self.max_sentences)
            try:
                results = self.inferencer(rgb, sentences, channel_order='rgb')
            except Exception as e:  # the model's own failure: logged with its traceback
                logger.exception('the model failed on %d sentence(s)', len(sentences))
                return [], '', (f'The model failed on this input ({type(e).__name__}: {e}). '
                                f'See the server log for details.'), False
            pictures, lines = [], []
            for k, res in enumerate(results, 1):
                canvas = self.visualizer.draw_ref(rgb, res['text'], pred=res, show_extras=True)
                line = answer_line(k, res)
                pictures.append((fit_display(canvas, self.display_side), line))
                lines.append(line)
            h, w = rgb.shape[:2]
            notes = [n for n in (image_note, sentence_note) if n]
            notes.append(f'Answered {len(results)} sentence(s) on a {w} x {h} image in '
                         f'{time.perf_counter() - t0:.1f} s.')
            return pictures, '\n'.join(lines), ' '.join(notes), True
        except DemoInputError as e:
            return [], '', str(e), False
        except Exception as e:  # drawing or anything unforeseen: never a traceback in the page
            logger.exception('web demo callback failed')
            return [], '', (f'Something went wrong ({type(e).__name__}: {e}). '
                            f'See the server log for details.'), False


# ---------------------------------------------------------------------------------- page
def build_ui(demo: WebDemo, examples: Sequence[Sequence[str]] = (), header: str = ''):
    """The Gradio page (``gr.Blocks``): image, sentences, **Ground** button, message, answers,
    gallery of one :meth:`WebDemo.predict` picture per sentence, examples. Element ids (for
    tests): ``input-image``, ``sentences``, ``run-button``, ``message``, ``answers``,
    ``results``."""
    import gradio as gr

    def run(image, text):
        # the click skips Gradio's preprocessing (which would open the upload with PIL and fail
        # before this callback on a corrupt file): the image arrives as its file payload
        pictures, answers, message, ok = demo.predict(image, text)
        if not ok:
            gr.Warning(message)
        return pictures, answers, message

    # delete_cache: drop the uploaded and drawn files older than an hour, every hour
    with gr.Blocks(title='mmrefer web demo', analytics_enabled=False,
                   delete_cache=(3600, 3600)) as ui:
        gr.Markdown('## mmrefer: referring-expression grounding\n' + header)
        with gr.Row():
            with gr.Column(scale=2):
                image = gr.Image(label='image', type='filepath', sources=['upload', 'clipboard'],
                                 elem_id='input-image', height=300)
                text = gr.Textbox(label='sentences (one per line)', lines=3,
                                  placeholder='the red circle\nall green shapes',
                                  elem_id='sentences')
                button = gr.Button('Ground', variant='primary', elem_id='run-button')
                message = gr.Textbox(label='message', interactive=False, lines=2,
                                     elem_id='message')
                if examples:
                    gr.Examples([list(e) for e in examples], inputs=[image, text],
                                label='examples (click one, then Ground)')
            with gr.Column(scale=3):
                answers = gr.Textbox(label='answers', interactive=False, lines=3,
                                     elem_id='answers')
                # no floating label: it would cover the top of each picture (its own title)
                gallery = gr.Gallery(label='mask, box and maps per sentence', show_label=False,
                                     columns=1, format='png', object_fit='contain', height=720,
                                     elem_id='results')
        button.click(run, inputs=[image, text], outputs=[gallery, answers, message],
                     preprocess=False, concurrency_limit=1)
    return ui


def launch_kwargs(args: argparse.Namespace, allowed_paths: Sequence[str] = ()) -> Dict[str, Any]:
    """Keyword arguments of ``Blocks.launch``: local host/port, ``share`` only with ``--share``,
    no server-side rendering (no Node.js), no MCP server, upload limit ``MAX_FILE_SIZE``."""
    return dict(server_name=args.host, server_port=args.port, share=bool(args.share),
                show_error=True, ssr_mode=False, mcp_server=False, quiet=False,
                max_file_size=MAX_FILE_SIZE, allowed_paths=list(allowed_paths),
                inbrowser=False)


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description='mmrefer web demo (Gradio)')
    p.add_argument('config', help='config file or config name (e.g. latentvg_tiny_synthref)')
    p.add_argument('--weights', default=None, help='checkpoint (random init when omitted)')
    p.add_argument('--port', type=int, default=7860, help='port to serve on (default 7860)')
    p.add_argument('--host', default='127.0.0.1',
                   help='address to serve on (default 127.0.0.1; 0.0.0.0 for the whole network)')
    p.add_argument('--device', default='cpu', help='cpu, cuda, cuda:0, ...')
    p.add_argument('--examples', default=None,
                   help='SynthRef root or folder of images for the examples (default: '
                        'data/synthref when it exists)')
    p.add_argument('--share', action='store_true',
                   help="also open a public gradio.live link (off by default; needs internet)")
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                   help='override config settings, key=value pairs (e.g. a tokenizer path)')
    args = p.parse_args(argv)
    if not 1 <= args.port <= 65535:
        p.error(f'--port must be in 1..65535, got {args.port}')
    if args.weights is not None and not osp.isfile(args.weights):
        p.error(f'--weights: checkpoint file not found: {args.weights}')
    if args.examples is not None and not osp.isdir(args.examples):
        p.error(f'--examples: folder not found: {args.examples}')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import gradio  # noqa: F401
    except ImportError:
        print('web_demo: gradio is not installed; install the demo extra: '
              'pip install "mmrefer[demo]" (or pip install -r requirements/demo.txt)',
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s %(message)s')
    from mmrefer.apis import RefInferencer
    inferencer = RefInferencer(args.config, weights=args.weights, device=args.device,
                               cfg_options=args.cfg_options)
    folder = args.examples if args.examples is not None else 'data/synthref'
    examples = load_examples(folder)
    weights = (f'`{osp.basename(args.weights)}`' if args.weights
               else '**random initialisation** (no `--weights`)')
    header = (f'Model `{osp.basename(str(args.config))}` with weights {weights} on '
              f'`{args.device}`. Upload an image or click an example, type one sentence per '
              f'line (at most {MAX_SENTENCES}) and press **Ground**.')
    ui = build_ui(WebDemo(inferencer), examples, header)
    print(f'web_demo: {len(examples)} example(s) from {folder}; serving on '
          f'http://{args.host}:{args.port}', flush=True)
    allowed = [osp.abspath(folder)] if examples else []
    ui.queue(default_concurrency_limit=1).launch(**launch_kwargs(args, allowed))
    return 0


if __name__ == '__main__':
    sys.exit(main())
