"""demo/web_demo.py in a real browser: the server as a subprocess on a free local port (tiny
quick-start Latent-VG, a saved random-init checkpoint, the session's SynthRef), driven by
headless Chromium through chromedriver and selenium.

Needs Debian's ``chromium`` + ``chromium-driver`` and the Python packages of
requirements/demo.txt (``.ci/run`` and ``tools/install_env.sh`` install them); skipped when one is
missing and ``CI`` is unset, a failure under CI.

``WEB_DEMO_SCREENSHOT=path.png`` also copies the answered page's screenshot there (how
docs/images/web_demo.png was made); with ``WEB_DEMO_WEIGHTS=CKPT WEB_DEMO_SYNTHREF=DIR`` the
server loads that trained quick-start Latent-VG checkpoint and the SynthRef it was trained on
(``work_dirs/quickstart/latentvg/...pth`` and ``data/synthref`` after ``make quickstart``)
instead of a random one and the session's SynthRef.
"""
import importlib.util
import json
import os
import os.path as osp
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.slow

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CHROME_FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                '--disable-component-update', '--disable-sync', '--no-first-run',
                '--disable-dev-shm-usage', '--window-size=1400,1200')
SERVER_START_S = 240  # model build + gradio import on a shared 2-core CPU
ANSWER_S = 120


def browser_tools():
    """``(chromium, chromedriver)`` paths; skip (fail under CI) when anything is missing."""
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    driver = shutil.which('chromedriver')
    missing = [name for name, ok in (('chromium', chromium), ('chromedriver', driver),
                                     ('selenium', importlib.util.find_spec('selenium')),
                                     ('gradio', importlib.util.find_spec('gradio'))) if not ok]
    if missing:
        reason = (f'web demo browser test needs {", ".join(missing)}: apt-get install chromium '
                  f'chromium-driver; pip install -r requirements/demo.txt (.ci/run does both)')
        if os.environ.get('CI'):
            pytest.fail(reason)
        pytest.skip(reason)
    return chromium, driver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_until_serving(proc, url, log_path, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f'web demo exited with {proc.returncode} before serving:\n'
                        f'{open(log_path).read()[-4000:]}')
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(1)
    pytest.fail(f'web demo did not serve {url} within {timeout} s:\n'
                f'{open(log_path).read()[-4000:]}')


def stop(proc):
    """SIGTERM the server's process group, SIGKILL after 15 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(15)


def demo_data(synthref_root):
    """``(SynthRef root, trained checkpoint or None)``: the session's SynthRef, or the pair named
    by ``WEB_DEMO_SYNTHREF`` / ``WEB_DEMO_WEIGHTS``."""
    weights = os.environ.get('WEB_DEMO_WEIGHTS')
    if not weights:
        return str(synthref_root), None
    root = os.environ.get('WEB_DEMO_SYNTHREF')
    if not root or not osp.isfile(weights):
        pytest.fail(f'WEB_DEMO_WEIGHTS={weights!r} needs an existing file and WEB_DEMO_SYNTHREF '
                    f'(the SynthRef it was trained on), got {root!r}')
    return root, weights


@pytest.fixture(scope='module')
def web_demo_url(synthref_root, tmp_path_factory):
    """URL of a running web demo (tiny Latent-VG, saved random checkpoint or ``WEB_DEMO_WEIGHTS``,
    SynthRef examples); the server is killed at the end, also on failure."""
    browser_tools()
    import torch
    from mmengine.runner import save_checkpoint

    from mmrefer.apis import RefInferencer
    root, ckpt = demo_data(synthref_root)
    work = tmp_path_factory.mktemp('web_demo')
    spm = f'{root}/tokenizers/beit3.spm'
    if ckpt is None:
        torch.manual_seed(0)
        model = RefInferencer('latentvg_tiny_synthref',
                              cfg_options={'model.tokenizer.spm_path': spm}).model
        ckpt = str(work / 'random_latentvg_tiny.pth')
        save_checkpoint(dict(state_dict=model.state_dict(), meta=dict(note='random init')), ckpt)
    port = free_port()
    log_path = str(work / 'server.log')
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1', MPLBACKEND='Agg',
               GRADIO_ANALYTICS_ENABLED='False', GRADIO_TEMP_DIR=str(work / 'gradio'))
    cmd = [sys.executable, osp.join(ROOT, 'demo', 'web_demo.py'), 'latentvg_tiny_synthref',
           '--weights', ckpt, '--port', str(port), '--host', '127.0.0.1', '--examples', root,
           '--cfg-options', f'model.tokenizer.spm_path={spm}']
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(cmd, cwd=str(work), env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f'http://127.0.0.1:{port}/'
    try:
        wait_until_serving(proc, url, log_path, SERVER_START_S)
        yield url
    finally:
        stop(proc)


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium through chromedriver, fresh profile; quit at the end."""
    chromium, driver_path = browser_tools()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in CHROME_FLAGS + (f'--user-data-dir={tmp_path / "chrome-profile"}', ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver, url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    driver.get(url)
    WebDriverWait(driver, 60).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, '#run-button'))


def field(driver, elem_id) -> str:
    from selenium.webdriver.common.by import By
    return driver.find_element(By.CSS_SELECTOR, f'#{elem_id} textarea').get_attribute('value')


def val_sentence(root):
    """(image path, sentence) of SynthRef's first gRefCOCO-format val reference with a target."""
    with open(osp.join(root, 'grefcoco', 'grefs(unc).json')) as f:
        ref = next(r for r in json.load(f) if r['split'] == 'val' and not r['no_target'])
    return osp.join(root, 'images', 'train2014', ref['file_name']), ref['sentences'][0]['sent']


def test_browser_grounds_uploaded_synthref_image(web_demo_url, browser, synthref_root, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    root, weights = demo_data(synthref_root)
    image, sentence = val_sentence(root)
    open_page(browser, web_demo_url)
    page = browser.find_element(By.TAG_NAME, 'body').text
    # the header names the loaded checkpoint
    assert osp.basename(weights or 'random_latentvg_tiny.pth') in page
    # upload (the hidden file input of the image component) and type a sentence
    browser.find_element(By.CSS_SELECTOR, '#input-image input[type=file]').send_keys(image)
    WebDriverWait(browser, 30).until(  # the uploaded image is previewed
        lambda d: d.find_elements(By.CSS_SELECTOR, '#input-image img'))
    browser.find_element(By.CSS_SELECTOR, '#sentences textarea').send_keys(sentence)
    browser.find_element(By.CSS_SELECTOR, '#run-button').click()
    WebDriverWait(browser, ANSWER_S).until(lambda d: field(d, 'answers'))
    answers = field(browser, 'answers')
    assert answers.startswith(f'1. "{sentence}": ')
    assert ': no target, score ' in answers or ': target found, score ' in answers
    assert field(browser, 'message').startswith('Answered 1 sentence(s) on a ')
    # the overlay picture (draw_ref: title, prediction with mask/box, expression maps) is shown
    WebDriverWait(browser, 30).until(lambda d: d.execute_script(
        "const i = document.querySelector('#results img');"
        "return i !== null && i.complete && i.naturalWidth > 0;"))
    width = browser.execute_script(
        "return document.querySelector('#results img').naturalWidth;")
    assert width >= 256  # SynthRef's ~128 px image drawn enlarged (min_size 256) with panels
    shot = str(tmp_path / 'web_demo.png')
    assert browser.save_screenshot(shot) and osp.getsize(shot) > 10_000
    if os.environ.get('WEB_DEMO_SCREENSHOT'):
        shutil.copyfile(shot, os.environ['WEB_DEMO_SCREENSHOT'])


def test_browser_shows_messages_for_bad_input(web_demo_url, browser, tmp_path):
    """Ground with no image, then with a file that is not an image: a message in the page each
    time (the message box and the warning pop-up), no answers, no stack trace."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    open_page(browser, web_demo_url)
    browser.find_element(By.CSS_SELECTOR, '#sentences textarea').send_keys('the red circle')
    browser.find_element(By.CSS_SELECTOR, '#run-button').click()
    WebDriverWait(browser, ANSWER_S).until(lambda d: field(d, 'message'))
    assert field(browser, 'message') == 'No image: upload an image (or click an example) first.'
    assert field(browser, 'answers') == ''
    WebDriverWait(browser, 30).until(  # the warning pop-up (textarea values are not page text)
        lambda d: 'No image: upload an image' in d.find_element(By.TAG_NAME, 'body').text)
    assert 'Traceback' not in browser.find_element(By.TAG_NAME, 'body').text
    # a text file named .jpg: Gradio's own preprocessing (PIL) is skipped, the demo reports it
    bad = tmp_path / 'notes.jpg'
    bad.write_text('not an image\n')
    browser.find_element(By.CSS_SELECTOR, '#input-image input[type=file]').send_keys(str(bad))
    WebDriverWait(browser, 30).until(  # uploaded: the component shows it (as a broken image)
        lambda d: d.find_elements(By.CSS_SELECTOR, '#input-image img'))
    browser.find_element(By.CSS_SELECTOR, '#run-button').click()
    WebDriverWait(browser, ANSWER_S).until(
        lambda d: field(d, 'message').startswith("Cannot read 'notes.jpg' as an image"))
    assert field(browser, 'answers') == ''
    assert 'Traceback' not in browser.find_element(By.TAG_NAME, 'body').text


def test_browser_example_fills_inputs(web_demo_url, browser, synthref_root):
    """Clicking the first example (a SynthRef val image and its sentences) fills the image and the
    sentences; Ground answers each of them."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    open_page(browser, web_demo_url)
    assert 'examples (click one, then Ground)' in browser.find_element(By.TAG_NAME, 'body').text
    browser.find_element(By.CSS_SELECTOR, '.gallery-item, tbody tr').click()
    WebDriverWait(browser, 30).until(lambda d: field(d, 'sentences'))
    sentences = field(browser, 'sentences').split('\n')
    browser.find_element(By.CSS_SELECTOR, '#run-button').click()
    WebDriverWait(browser, ANSWER_S).until(lambda d: field(d, 'answers'))
    lines = field(browser, 'answers').split('\n')
    assert [line.split(': ', 1)[0] for line in lines] == \
        [f'{k}. "{s}"' for k, s in enumerate(sentences, 1)]
