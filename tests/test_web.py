"""The web page: its API through FastAPI's TestClient (limits, types, errors), then the real page in a
headless Chromium (upload, run, move a slider, read the canvas back and check the blend formula)."""
from __future__ import annotations

import base64
import io
import shutil
import socket
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="the web page needs the 'web' extra (fastapi, uvicorn, python-multipart)")
with warnings.catch_warnings():  # Starlette's notice that it prefers httpx2 (not yet released everywhere)
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from fastapi.testclient import TestClient  # noqa: E402

from imtranslate.infer.stylize import Stylizer, blend  # noqa: E402
from imtranslate.nets.inverse import InverseNet  # noqa: E402
from imtranslate.web.app import Limits, create_app  # noqa: E402


@pytest.fixture(scope="module")
def stylizer():
    torch.manual_seed(0)
    inverse = InverseNet(in_channels=128, n_up=1, ngf=8, depth=3)
    with torch.no_grad():  # an untrained net paints almost flat grey; a livelier picture makes a sharper test
        inverse.body[-1][0].weight.mul_(40)
    return Stylizer(inverse, encoder_layer="relu2_1", vgg_weights="random", device="cpu")


@pytest.fixture(scope="module")
def translator():
    from imtranslate.tasks import load_config
    from imtranslate.infer.predictor import Predictor
    from imtranslate.nets import build_net

    cfg = load_config(None, ["task=pix2pix", "data.dataset=folders", "data.root=/unused", "model.num_downs=3",
                             "model.ngf=4"])
    torch.manual_seed(0)
    G = build_net("unet", in_channels=3, out_channels=3, num_downs=3, ngf=4)
    return Predictor(G, cfg, device="cpu")


def picture(h=30, w=41, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:h, :w]
    base = np.stack([x * 6, y * 8, (x + y) * 3], -1) % 256
    return np.clip(base + rng.integers(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)


def png_bytes(arr, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def decode_data_url(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


# ------------------------------------------------------------------------------------------------
# API
# ------------------------------------------------------------------------------------------------
def test_api_stylize_translate_and_limits(stylizer, translator):
    client = TestClient(create_app(stylizer, translator, limits=Limits(max_mb=0.05, max_pixels=5000)))
    page = client.get("/")
    assert page.status_code == 200 and "canvas" in page.text and "/static/app.js" in page.text
    assert "R3 = a*R1" in client.get("/static/app.js").text
    assert client.get("/static/../app.py").status_code == 404
    info = client.get("/api/info").json()
    assert info["stylize"] and info["translate"] and info["limits"]["max_pixels"] == 5000

    content, style = picture(), picture(36, 36, seed=1)
    res = client.post("/api/stylize", files={"content": ("c.png", png_bytes(content)),
                                             "style": ("s.jpg", png_bytes(style, "JPEG"))})
    assert res.status_code == 200, res.text
    body = res.json()
    assert (body["width"], body["height"]) == (41, 30)
    assert np.array_equal(decode_data_url(body["content"]), content)
    stylised = decode_data_url(body["stylized"])
    assert stylised.shape == content.shape
    jpeg_style = np.asarray(Image.open(io.BytesIO(png_bytes(style, "JPEG"))).convert("RGB"))
    assert np.array_equal(stylised, stylizer.stylize(content, jpeg_style))  # the page gets exactly the API's picture

    res = client.post("/api/translate", files={"image": ("t.png", png_bytes(content))})
    assert res.status_code == 200, res.text
    assert decode_data_url(res.json()["output"]).shape == content.shape
    assert np.array_equal(decode_data_url(res.json()["output"]), translator(content))  # the predictor's own pixels

    def post(content_file, style_file=("s.png", png_bytes(style)), **form):
        return client.post("/api/stylize", files={"content": content_file, "style": style_file}, data=form)

    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    meta.add_text("padding", "x" * 60_000)  # a small picture in a file over the 0.05 MB limit
    buf = io.BytesIO()
    Image.fromarray(content).save(buf, format="PNG", pnginfo=meta)
    res = post(("big.png", buf.getvalue()))
    assert res.status_code == 413 and "big.png" in res.json()["error"] and "MB" in res.json()["error"]
    res = post(("wide.png", png_bytes(np.zeros((50, 120, 3), np.uint8))))
    assert res.status_code == 413 and "pixels" in res.json()["error"]
    res = post(("notes.txt", b"hello, not a picture"))
    assert res.status_code == 415 and "notes.txt" in res.json()["error"]
    res = post(("anim.gif", png_bytes(content, "GIF")))
    assert res.status_code == 415 and "GIF" in res.json()["error"]
    data = png_bytes(content)
    res = post(("cut.png", data[: len(data) // 2]))
    assert res.status_code == 400 and "cut.png" in res.json()["error"]
    res = post(("c.png", png_bytes(content)), patch="3", stride="5")
    assert res.status_code == 400 and "stride" in res.json()["error"]
    res = post(("c.png", png_bytes(content)), style_file=("tiny.png", png_bytes(np.zeros((3, 40, 3), np.uint8))))
    assert res.status_code == 400 and "too small" in res.json()["error"]
    huge = client.post("/api/stylize", content=b"x" * 300_000,
                       headers={"content-type": "multipart/form-data; boundary=zz"})
    assert huge.status_code == 413

    bare = TestClient(create_app(None, None))
    assert bare.get("/api/info").json() == {**bare.get("/api/info").json(), "stylize": False, "translate": False}
    res = bare.post("/api/translate", files={"image": ("t.png", png_bytes(content))})
    assert res.status_code == 404 and "--translate" in res.json()["error"]


# ------------------------------------------------------------------------------------------------
# The page in a real headless browser
# ------------------------------------------------------------------------------------------------
def _browser():
    """(chromium, chromedriver) paths, or a reason to skip."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None, "selenium is not installed (pip install 'imtranslate[test]')"
    chrome = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    driver = shutil.which("chromedriver")
    if not chrome or not driver:
        return None, "no chromium / chromedriver on this machine (Debian: apt-get install chromium chromium-driver)"
    return (chrome, driver), ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(stylizer, translator):
    import uvicorn

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(stylizer, translator), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the web server did not start within 20 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def test_page_in_headless_chromium(server, tmp_path):
    found, why = _browser()
    if found is None:
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    chrome, driver_path = found
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--force-color-profile=srgb", "--window-size=1200,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(server + "/")
        wait.until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
        content = picture(26, 35, seed=3)
        Image.fromarray(content).save(tmp_path / "content.png")
        Image.fromarray(picture(32, 32, seed=4)).save(tmp_path / "style.png")
        driver.find_element(By.ID, "content").send_keys(str(tmp_path / "content.png"))
        driver.find_element(By.ID, "style").send_keys(str(tmp_path / "style.png"))
        driver.find_element(By.ID, "run").click()
        wait.until(lambda d: d.execute_script("return document.getElementById('canvas').dataset.ready") == "1"
                   or d.find_element(By.ID, "error").text)
        assert driver.find_element(By.ID, "error").text == ""
        stylised = decode_data_url(driver.find_element(By.ID, "stylized-img").get_attribute("src"))
        assert stylised.std() > 20 and np.abs(stylised.astype(int) - content).mean() > 20  # blends will show

        def canvas() -> np.ndarray:
            flat = driver.execute_script(
                "const c = document.getElementById('canvas');"
                "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);")
            return np.array(flat, dtype=np.uint8).reshape(content.shape[0], content.shape[1], 4)[..., :3]

        def renders() -> int:
            return int(driver.execute_script("return document.getElementById('canvas').dataset.renders"))

        first = canvas()
        assert np.abs(first.astype(int) - stylised).max() <= 2  # all weights 0: the stylised picture
        # locked: moving R moves all three
        n = renders()
        slider = driver.find_element(By.ID, "r")
        slider.send_keys(*([Keys.ARROW_RIGHT] * 30))
        wait.until(lambda d: renders() > n and d.execute_script("return document.getElementById('canvas')"
                                                                 ".dataset.weights") == "0.30,0.30,0.30")
        shown = canvas()
        assert not np.array_equal(shown, first)
        assert np.abs(shown.astype(int) - blend(content, stylised, 0.3).astype(int)).max() <= 2
        # unlocked: each channel its own weight
        driver.find_element(By.ID, "lock").click()
        n = renders()
        driver.execute_script("const g = document.getElementById('g'); g.value = 80;"
                              "g.dispatchEvent(new Event('input'));")
        wait.until(lambda d: renders() > n)
        shown = canvas()
        assert driver.find_element(By.ID, "canvas").get_attribute("data-weights") == "0.30,0.80,0.30"
        assert np.abs(shown.astype(int) - blend(content, stylised, 0.3, 0.8, 0.3).astype(int)).max() <= 2
        # an unreadable upload: the error is shown on the page
        (tmp_path / "bad.png").write_bytes(b"not a png at all")
        driver.find_element(By.ID, "content").send_keys(str(tmp_path / "bad.png"))
        driver.find_element(By.ID, "run").click()
        wait.until(lambda d: d.find_element(By.ID, "error").text)
        assert "bad.png" in driver.find_element(By.ID, "error").text
    finally:
        driver.quit()


# ------------------------------------------------------------------------------------------------
# `imtranslate serve`, started as a user starts it
# ------------------------------------------------------------------------------------------------
def _multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = "imtranslate-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_serve_starts_and_translates(tmp_path, capsys):
    import json
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    from conftest import tiny_overrides
    from imtranslate.cli import main
    from imtranslate.infer.predictor import Predictor

    assert main(["serve"]) == 2  # nothing to serve: said, not a traceback
    assert "nothing to serve" in capsys.readouterr().err
    assert main(["train", *tiny_overrides("pix2pix", tmp_path, steps=1, **{"data.synthetic.input": "contour"})]) == 0
    ckpt = next((tmp_path / "runs").iterdir()) / "checkpoints" / "last.safetensors"
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "imtranslate", "serve", "--translate", str(ckpt), "--port", str(port),
                             "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    url = f"http://127.0.0.1:{port}"
    try:
        assert f"imtranslate page on {url}/" in proc.stdout.readline()
        deadline, info = time.monotonic() + 60, None
        while info is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                info = json.loads(urllib.request.urlopen(f"{url}/api/info", timeout=5).read())
            except OSError:
                time.sleep(0.2)
        assert info is not None, proc.stderr.read() if proc.poll() is not None else "no answer within 60 s"
        assert info["translate"] and not info["stylize"]
        assert "canvas" in urllib.request.urlopen(f"{url}/", timeout=5).read().decode()
        grey = picture(26, 35)[..., 0]
        body, ctype = _multipart("image", "g.png", png_bytes(grey))
        req = urllib.request.Request(f"{url}/api/translate", data=body, headers={"Content-Type": ctype})
        out = decode_data_url(json.loads(urllib.request.urlopen(req, timeout=60).read())["output"])
        assert np.array_equal(out, np.asarray(Predictor.from_checkpoint(ckpt, device="cpu")(Image.fromarray(grey))))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
