"""Face restoration (SPEC S5, inference): detector, alignment, fusion, parser, CLI and Python API.

The MTCNN tests need its weights installed (`imtranslate weights install mtcnn`, which .ci/run does);
the fusion tests use a stub detector with known landmarks, so they test the pipeline alone.
"""
import zipfile

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import imtranslate
from conftest import TINY_MODEL
from imtranslate import weights
from imtranslate.cli import main
from imtranslate.errors import WeightsMissingError
from imtranslate.infer.face_align import TEMPLATE, align, warp_back
from imtranslate.infer.restore import Restorer, feather_mask, landmark_mask, upscale_lanczos
from imtranslate.nets.face_detect import MTCNN, Face, build_detector

skimage_data = pytest.importorskip("skimage.data")


def _mtcnn_installed() -> bool:
    return all(weights.locate(f"mtcnn_{k}") for k in ("pnet", "rnet", "onet"))


needs_mtcnn = pytest.mark.skipif(not _mtcnn_installed(), reason="MTCNN weights not installed: run "
                                 "`imtranslate weights install mtcnn`")


@pytest.fixture(scope="module")
def mtcnn():
    return MTCNN.from_weights()


def _composite(n_faces: int) -> np.ndarray:
    """The astronaut's face pasted ``n_faces`` times onto the coffee photograph (480x270)."""
    face = skimage_data.astronaut()[40:200, 150:300]
    img = cv2.resize(skimage_data.coffee(), (480, 270))
    for x, y, s in [(10, 20, 110), (180, 60, 90), (330, 10, 130)][:n_faces]:
        f = cv2.resize(face, (s, int(s * 160 / 150)))
        img[y:y + f.shape[0], x:x + s] = f
    return img


class StubDetector:
    """Faces at given landmarks (the pipeline's tests do not depend on a detector's accuracy)."""

    def __init__(self, *landmark_sets):
        self.faces = []
        for lm in landmark_sets:
            lm = np.asarray(lm, np.float32)
            box = np.r_[lm.min(0) - 20, lm.max(0) + 20].astype(np.float32)
            self.faces.append(Face(box, 0.99, lm))

    def __call__(self, image):
        return list(self.faces)


def _landmarks(cx, cy, side):
    """The template's 5 points for a face of ``side`` pixels centred at (cx, cy)."""
    return (TEMPLATE - 0.5) * side + np.array([cx, cy], np.float32)


def _photo(h=96, w=128, seed=0):
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 255, (h // 8, w // 8, 3)).astype(np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    return base


# ---- detector -------------------------------------------------------------------------------------
@needs_mtcnn
def test_mtcnn_finds_the_one_face_of_the_astronaut(mtcnn):
    faces = mtcnn(skimage_data.astronaut())
    assert len(faces) == 1
    f = faces[0]
    x1, y1, x2, y2 = f.box
    assert 150 < x1 < 210 and 40 < y1 < 90 and 240 < x2 < 300 and 150 < y2 < 200  # her face, by eye
    le, re, nose, lm, rm = f.landmarks
    assert le[0] < nose[0] < re[0] and lm[0] < rm[0]  # left to right as seen
    assert max(le[1], re[1]) < nose[1] < min(lm[1], rm[1])  # eyes above the nose above the mouth
    assert all(x1 <= p[0] <= x2 and y1 <= p[1] <= y2 for p in f.landmarks)


@needs_mtcnn
def test_mtcnn_counts_zero_one_and_several_faces(mtcnn):
    assert mtcnn(cv2.resize(skimage_data.coffee(), (480, 270))) == []
    assert [len(mtcnn(_composite(n))) for n in (1, 3)] == [1, 3]


def test_no_detector_is_a_message_naming_both_ways(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path / "empty"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsMissingError, match="weights install mtcnn.*yunet-model"):
        build_detector("auto")
    with pytest.raises(WeightsMissingError, match="needs --yunet-model"):
        build_detector("yunet")
    with pytest.raises(WeightsMissingError, match="no such YuNet ONNX file"):
        build_detector("yunet", yunet_model=tmp_path / "missing.onnx")


def test_weights_install_converts_the_wheel_files_to_safetensors(tmp_path):
    """`weights install mtcnn --wheel` on a wheel-shaped zip: each .pt read (weights_only) and written as
    safetensors under the weights folder, loadable by MTCNN.from_weights."""
    ref = MTCNN()
    wheel = tmp_path / "facenet_pytorch-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for k in ("pnet", "rnet", "onet"):
            torch.save(getattr(ref, k).state_dict(), tmp_path / f"{k}.pt")
            zf.write(tmp_path / f"{k}.pt", f"facenet_pytorch/data/{k}.pt")
    dest = tmp_path / "w"
    out = weights.install("mtcnn", wheel=wheel, dest=dest, log=lambda m: None)
    assert sorted(p.name for p in out) == ["mtcnn_onet.safetensors", "mtcnn_pnet.safetensors", "mtcnn_rnet.safetensors"]
    net = MTCNN.from_weights(dest)
    for k in ("pnet", "rnet", "onet"):
        for (n, a), b in zip(getattr(ref, k).state_dict().items(), getattr(net, k).state_dict().values()):
            assert torch.equal(a, b), n
    with zipfile.ZipFile(tmp_path / "other.whl", "w") as zf:
        zf.writestr("x.txt", "")
    with pytest.raises(WeightsMissingError, match="has no facenet_pytorch/data/pnet.pt"):
        weights.install("mtcnn", wheel=tmp_path / "other.whl", dest=dest, log=lambda m: None)


# ---- alignment and fusion -------------------------------------------------------------------------
def test_alignment_round_trip_gives_back_the_picture():
    img = _photo(160, 200).astype(np.float32)
    lm = _landmarks(100, 80, 90) @ np.array([[0.96, 0.26], [-0.26, 0.96]], np.float32).T * 1.0  # rolled 15 deg
    lm += np.array([100, 80]) - lm.mean(0)
    crop, M = align(img, lm, 128)
    assert np.abs(np.c_[lm, np.ones(5)] @ M.T - TEMPLATE * 128).max() < 1.0  # landmarks on the template
    back = warp_back(crop, M, img.shape[:2])
    region = warp_back(np.ones((128, 128), np.float32), M, img.shape[:2]) > 0.999
    region = cv2.erode(region.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert region.sum() > 3000
    assert np.abs(back[region] - img[region]).mean() < 3.0  # two bilinear resamplings of a smooth picture


def test_identity_enhancer_changes_nothing_but_the_sr():
    img = _photo()
    det = StubDetector(_landmarks(64, 48, 50))
    for upscale in (1, 2):
        res = Restorer(detector=det, upscale=upscale, face_size=64)(img)
        assert len(res.faces) == 1
        np.testing.assert_array_equal(res.image, upscale_lanczos(img, upscale))


def test_fusion_changes_only_the_masked_face_without_a_seam():
    img = (_photo(128, 160) // 4 + 80).astype(np.uint8)  # mid-tones: the +60 below never clips
    det = StubDetector(_landmarks(80, 64, 70))
    brighter = lambda c: np.clip(c.astype(np.int16) + 60, 0, 255).astype(np.uint8)  # noqa: E731
    r = Restorer(detector=det, enhancer=brighter, upscale=1, face_size=64, color_match=False)
    res = r(img)
    diff = res.image.astype(np.int16) - img
    f = res.faces[0]
    assert diff.min() >= 0 and diff.max() <= 61
    # untouched where the paste mask is zero, changed at the face's centre
    footprint = cv2.dilate((warp_back(f.mask, f.matrix, img.shape[:2]) > 0).astype(np.uint8), np.ones((3, 3)))
    assert not diff[footprint == 0].any() and (footprint == 0).sum() > img.shape[0] * img.shape[1] / 3
    assert diff[64, 80].min() > 40
    # feathered: the +60 change rises over several pixels (a hard paste would step by 60 at once)
    step = max(np.abs(np.diff(diff.astype(np.float32), axis=a)).max() for a in (0, 1))
    assert step < 20
    # colour matching takes the enhancer's uniform offset away where face meets surroundings
    matched = Restorer(detector=det, enhancer=brighter, upscale=1, face_size=64)(img)
    assert np.abs(matched.image.astype(np.int16) - img).max() <= 2


def test_face_at_the_border_and_many_faces_and_limits():
    img = _photo(96, 128)
    det = StubDetector(_landmarks(4, 40, 40), _landmarks(64, 50, 60), _landmarks(110, 80, 30))
    plus = lambda c: np.clip(c.astype(np.int16) + 30, 0, 255).astype(np.uint8)  # noqa: E731
    res = Restorer(detector=det, enhancer=plus, upscale=2, face_size=48, color_match=False)(img)
    assert len(res.faces) == 3 and res.image.shape == (192, 256, 3)
    assert res.line("x.png") == "x.png: 3 face(s) found, 3 enhanced"
    # the face cut by the left border is enhanced too (changed pixels at x < 10 output pixels)
    assert (res.image[:, :10].astype(np.int16) - upscale_lanczos(img, 2)[:, :10]).max() > 10
    r = Restorer(detector=det, upscale=1, face_size=48, max_faces=1)
    one = r(img)
    biggest = max(det.faces, key=lambda f: f.size)
    assert len(one.faces) == 1 and np.array_equal(one.faces[0].landmarks, biggest.landmarks)
    assert "left out" in one.note
    assert len(Restorer(detector=det, upscale=1, face_size=48, min_face=53)(img).faces) == 2  # sides 55, 62, 51
    centre = Restorer(detector=det, upscale=1, face_size=48, only_center_face=True)(img)
    assert len(centre.faces) == 1 and abs(centre.faces[0].landmarks[:, 0].mean() - 64) < 5


def test_grey_and_rgba_input_and_no_face():
    det = StubDetector(_landmarks(32, 32, 30))
    r = Restorer(detector=det, upscale=2, face_size=32)
    grey = _photo(64, 64)[..., 0]
    out = r(grey)
    assert out.image.shape == (128, 128, 3) and len(out.faces) == 1
    assert np.array_equal(out.image[..., 0], out.image[..., 1])  # grey stays grey
    rgba = np.dstack([_photo(64, 64), np.full((64, 64), 128, np.uint8)])
    assert r(rgba).image.shape == (128, 128, 3)
    none = Restorer(detector=StubDetector(), upscale=2)(_photo(64, 64))
    assert none.faces == [] and "no face found" in none.note
    np.testing.assert_array_equal(none.image, upscale_lanczos(_photo(64, 64), 2))


def test_landmark_mask_covers_the_face_and_feathers():
    n = 128
    hard = landmark_mask(TEMPLATE * n, n)
    soft = feather_mask(hard)
    p = (TEMPLATE * n).astype(int)
    assert all(soft[y, x] > 0.95 for x, y in p)  # eyes, nose and mouth inside
    assert soft[2, 2] == 0 and soft[n // 2, 0] == 0 and soft[n - 1, n // 2] == 0  # zero at the crop's edge
    assert 0.05 < soft.mean() < 0.6
    assert np.abs(np.diff(soft, axis=1)).max() < 0.2  # no hard edge


# ---- parser -----------------------------------------------------------------------------------------
def test_parser_learns_the_synthetic_faces(tmp_path):
    """A short training on the task alone: held-out mean IoU well above the untrained net's."""
    from conftest import tiny_overrides
    from imtranslate.tasks import load_config
    from imtranslate.tasks.faceparse import FaceParseTask
    from imtranslate.train.stepping import build_task

    torch.manual_seed(0)
    cfg = load_config(None, tiny_overrides("faceparse", tmp_path, steps=60) + [
        "data.synthetic.n_train=16", "data.synthetic.n_val=4", "train.lr_g=0.005", "train.beta1=0.9", "model.width=8"])
    task = build_task(cfg, "cpu")
    stack = lambda ds: {k: torch.stack([ds[i][k] for i in range(len(ds))]) for k in ("A", "label")}  # noqa: E731
    train_all, val = stack(FaceParseTask.build_dataset(cfg, "train")), stack(FaceParseTask.build_dataset(cfg, "val"))

    def miou():
        G = task.generator.eval()
        with torch.no_grad():
            out = task.validation_metrics(G, val)["miou"].mean().item()
        G.train()
        return out

    first = miou()
    for step in range(60):
        idx = torch.arange(step * 4, step * 4 + 4) % 16
        task.train_step({k: v[idx] for k, v in train_all.items()}, step)
    last = miou()
    assert last > 0.10 and last > first + 0.08, (first, last)  # measured: 0.001 -> ~0.15


def test_parser_checkpoint_parses_and_evaluates(tmp_path):
    """A faceparse checkpoint loads into the pipeline's parser and `eval` gives its mean IoU."""
    from conftest import tiny_overrides
    from imtranslate.data.synthetic_faces import render_face, write_synthetic_faces
    from imtranslate.evaluate import evaluate
    from imtranslate.infer.restore import _ParserNet
    from imtranslate.tasks import load_config
    from imtranslate.train.loop import train

    run = train(load_config(None, tiny_overrides("faceparse", tmp_path, steps=2)), log=lambda m: None)
    ckpt = run / "checkpoints" / "last.safetensors"
    p = _ParserNet(ckpt)
    assert p.classes[:2] == ("background", "skin")
    labels = p(render_face(12345, 32).image)
    assert labels.shape == (32, 32) and labels.dtype.kind == "i"
    root = write_synthetic_faces(tmp_path / "faces", n_train=1, n_val=3, size=32)
    res = evaluate(ckpt, root / "val", device="cpu", progress=False)
    assert res["count"] == 3 and 0 <= res["metrics"]["miou"] <= 1 and "pixel_acc" in res["metrics"]
    # a parser checkpoint drives the restore pipeline's mask (regions by class name)
    det = StubDetector(_landmarks(32, 32, 30))
    r = Restorer(detector=det, parser=p, upscale=1, face_size=32, regions=("skin", "nose"))
    assert r(_photo(64, 64)).faces[0].labels.shape == (32, 32)
    with pytest.raises(imtranslate.ImtranslateError, match="none is a class of the parser"):
        Restorer(detector=det, parser=p, regions=("wings",))


# ---- CLI and Python API -------------------------------------------------------------------------
@needs_mtcnn
def test_cli_restore_end_to_end_on_composite_photos(tmp_path, capsys):
    src = tmp_path / "photos"
    src.mkdir()
    Image.fromarray(_composite(3)).save(src / "three.png")
    Image.fromarray(cv2.resize(skimage_data.coffee(), (240, 135))).save(src / "none.jpg")
    out = tmp_path / "out"
    assert main(["restore", str(src), "-o", str(out), "--upscale", "2", "--save-faces", "--save-masks",
                 "--face-size", "64"]) == 0
    text = capsys.readouterr().out
    assert "three.png: 3 face(s) found, 3 enhanced" in text
    assert "none.jpg: 0 face(s) found, 0 enhanced (no face found: SR picture only)" in text
    assert Image.open(out / "three.png").size == (960, 540) and Image.open(out / "none.png").size == (480, 270)
    assert len(list((out / "faces").glob("three_*_crop.png"))) == 3
    assert len(list((out / "masks").glob("three_*_mask.png"))) == 3
    # the Python API gives the same picture
    got = imtranslate.restore(src / "three.png", upscale=2, face_size=64)
    np.testing.assert_array_equal(got, np.asarray(Image.open(out / "three.png")))
    assert main(["restore", str(tmp_path / "nope.png"), "-o", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err


# ---- web page -------------------------------------------------------------------------------------------
@pytest.fixture
def restore_server():
    import socket
    import threading
    import time

    uvicorn = pytest.importorskip("uvicorn")
    from imtranslate.web.app import create_app

    restorer = Restorer(detector=StubDetector(_landmarks(40, 30, 36)), upscale=2, face_size=48,
                        enhancer=lambda c: np.clip(c.astype(np.int16) + 50, 0, 255).astype(np.uint8),
                        color_match=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(restorer=restorer), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the web server did not start within 20 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", restorer
    srv.should_exit = True
    thread.join(timeout=10)


def test_restore_tab_in_headless_chromium(restore_server, tmp_path):
    """Upload a photo on the Restore tab: faces reported, before/after shown with a slider, download link."""
    from test_web import _browser, decode_data_url

    found, why = _browser()
    if found is None:
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, restorer = restore_server
    chrome, driver_path = found
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(url + "/")
        wait.until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
        assert driver.find_element(By.ID, "panel-restore").is_displayed()  # the only tab this server has
        photo = _photo(64, 80)
        Image.fromarray(photo).save(tmp_path / "photo.png")
        driver.find_element(By.ID, "r-image").send_keys(str(tmp_path / "photo.png"))
        driver.find_element(By.ID, "r-run").click()
        wait.until(lambda d: d.find_element(By.ID, "r-result").get_attribute("data-ready") == "1"
                   or d.find_element(By.ID, "error").text)
        assert driver.find_element(By.ID, "error").text == ""
        assert driver.find_element(By.ID, "r-faces").text.startswith("1 face(s) found, 1 enhanced")
        after = decode_data_url(driver.find_element(By.ID, "r-after").get_attribute("src"))
        before = decode_data_url(driver.find_element(By.ID, "r-before").get_attribute("src"))
        np.testing.assert_array_equal(after, restorer(photo).image)
        np.testing.assert_array_equal(before, upscale_lanczos(photo, 2))
        assert driver.find_element(By.ID, "r-download").get_attribute("href") == \
            driver.find_element(By.ID, "r-after").get_attribute("src")
        width = lambda: driver.execute_script("return document.getElementById('r-after-wrap').clientWidth")  # noqa: E731
        w50 = width()
        driver.execute_script("const s = document.getElementById('r-split'); s.value = 90;"
                              "s.dispatchEvent(new Event('input'));")
        assert width() > w50 > 0  # the slider moves the divider
    finally:
        driver.quit()


@needs_mtcnn
def test_demo_faces_writes_its_report(tmp_path):
    from imtranslate.demo_faces import run_faces_demo

    res = run_faces_demo(tmp_path / "demo", steps=2, device="cpu", log=lambda m: None, photo_size=(320, 180),
                         parser_overrides=["model.width=4", "data.synthetic.n_train=8", "data.synthetic.n_val=2",
                                           "data.crop_size=32"],
                         enhancer_overrides=[*TINY_MODEL["faceenhance"], "train.steps=2", "train.batch_size=2",
                                             "train.val_every=0", "data.synthetic.n_train=8", "data.synthetic.n_val=2",
                                             "data.crop_size=32"])
    text = res["report"].read_text()
    assert "before (Lanczos x2)" in text and text.count("<img") >= 10
    assert res["enhancer"].endswith("last.safetensors") and "enhancer: faceenhance, trained here" in text
    astro = res["photos"]["astronaut (real photograph, landmark mask)"]
    assert astro["faces"] == 1 and res["photos"]["composite, 3 faces"]["faces"] >= 1


def test_sr_checkpoint_up_scales_the_whole_picture_tiled_when_large(tmp_path):
    """--sr: a stylesr target=sr checkpoint through the predictor (tiled on request), resized to --upscale."""
    from conftest import tiny_overrides
    from imtranslate.infer.predictor import Predictor
    from imtranslate.tasks import load_config
    from imtranslate.train.loop import train

    run = train(load_config(None, tiny_overrides("stylesr", tmp_path, steps=1) + ["model.target=sr"]),
                log=lambda m: None)
    sr = Predictor.from_checkpoint(run / "checkpoints" / "last.safetensors", device="cpu")
    img = _photo(48, 64)
    det = StubDetector(_landmarks(32, 24, 24))
    net_out = sr(img)  # (4 H, 4 W, 3): the net's own output
    for upscale in (2, 4):
        res = Restorer(detector=det, sr=sr, upscale=upscale, face_size=32)(img)
        assert res.image.shape == (48 * upscale, 64 * upscale, 3) and len(res.faces) == 1
        # identity enhancer: the picture is the net's (area-resized for --upscale 2), exactly
        expect = net_out if upscale == sr.scale else cv2.resize(net_out, (64 * upscale, 48 * upscale),
                                                                interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(res.image, expect)
    whole = Restorer(detector=StubDetector(), sr=sr, upscale=sr.scale)(img).image
    tiled = Restorer(detector=StubDetector(), sr=sr, upscale=sr.scale, tile=32)(img).image
    assert sr.last_tiling.tile == 32  # the tiling engine ran
    assert np.abs(whole.astype(int) - tiled).mean() < 2
