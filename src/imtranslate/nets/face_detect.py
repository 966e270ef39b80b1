"""Face detectors with five landmarks: MTCNN (our own P/R/O-Net code) and OpenCV's YuNet.

Both return a list of :class:`Face` (box, score, 5 landmarks: left eye, right eye, nose, left and
right mouth corner, pixel x, y, "left" as seen in the picture), best first.

**MTCNN** (Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded Convolutional
Networks", 2016): three small nets in a cascade.

1. *P-Net*, fully convolutional, over an image pyramid (scale factor 0.709, smallest face
   ``min_face`` px mapped to its 12 px window): a face probability and a box offset per 12x12 window
   at stride 2; non-maximum suppression per scale and over all scales.
2. *R-Net* re-scores each candidate on a 24x24 crop of its squared box and refines the box.
3. *O-Net* does the same on 48x48 crops and adds the five landmarks (as fractions of the box).

Pixels enter as ``(x - 127.5) / 128`` in RGB order. The weights are those inside the
``facenet-pytorch`` wheel (converted from the authors' Caffe models; their dense layers expect the
feature map flattened in (W, H, C) order, hence the permute before ``flatten``), installed as
safetensors by ``imtranslate weights install mtcnn`` and found through :mod:`imtranslate.weights`.

**YuNet** (OpenCV Zoo's ``face_detection_yunet_2023mar.onnx``) runs through
``cv2.FaceDetectorYN`` when the user gives its ONNX file.

:func:`build_detector` picks one: ``"auto"`` takes MTCNN when its weights are installed, else YuNet
when a model file was given, else raises :class:`~imtranslate.errors.WeightsMissingError` naming both.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import weights
from ..errors import WeightsMissingError

__all__ = ["Face", "PNet", "RNet", "ONet", "MTCNN", "YuNet", "build_detector", "DETECTORS"]

DETECTORS = ("auto", "mtcnn", "yunet")


@dataclass
class Face:
    """One detected face: ``box`` (x1, y1, x2, y2), ``score`` in [0, 1], ``landmarks`` (5, 2) pixel x, y."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray = field(repr=False)

    @property
    def size(self) -> float:
        """The face's side: the larger of the box's width and height, in pixels."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


# ---- the three nets -------------------------------------------------------------------------------
class PNet(nn.Module):
    """Proposal net: (B, 3, H, W) -> face probability (B, H', W') and box offsets (B, 4, H', W')."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / not-face logits
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box offsets as fractions of the window

    def forward(self, x):
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_1(x).softmax(1)[:, 1], self.conv4_2(x)


class RNet(nn.Module):
    """Refine net: (B, 3, 24, 24) -> face probability (B,), box offsets (B, 4)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x):
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(x))  # (B, 64, 3, 3)
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).flatten(1)))  # Caffe's (W, H, C) order
        return self.dense5_1(x).softmax(1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output net: (B, 3, 48, 48) -> probability (B,), box offsets (B, 4), landmarks (B, 10): x1..x5, y1..y5."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x):
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu4(self.conv4(x))  # (B, 128, 3, 3)
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).flatten(1)))
        return self.dense6_1(x).softmax(1)[:, 1], self.dense6_2(x), self.dense6_3(x)


# ---- the cascade ------------------------------------------------------------------------------------
def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Each box grown to a square around its centre (side = the longer side)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    cx, cy = boxes[:, 0] + w / 2, boxes[:, 1] + h / 2
    return torch.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], 1)


def _refine(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Apply the regressed offsets (fractions of the box's width/height) to each corner."""
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + offsets * wh


def _crops(img: np.ndarray, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, size, size) crops of the boxes out of img (H, W, 3 float32); outside the picture is zero."""
    import cv2

    H, W = img.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.float32)
    for i, (x1, y1, x2, y2) in enumerate(boxes.round().long().tolist()):
        x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
        patch = np.zeros((y2 - y1, x2 - x1, 3), np.float32)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, W), min(y2, H)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = img[sy1:sy2, sx1:sx2]
        out[i] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(out).permute(0, 3, 1, 2)


class MTCNN(nn.Module):
    """The MTCNN cascade. ``MTCNN.from_weights()`` loads the installed weights; ``MTCNN()`` is random.

    ``detector(image)``: uint8 (H, W, 3) RGB array -> list of :class:`Face`, best first.
    """

    def __init__(self, *, min_face: int = 20, thresholds=(0.6, 0.7, 0.7), factor: float = 0.709,
                 nms=(0.5, 0.7, 0.7, 0.7)):
        super().__init__()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        self.min_face, self.thresholds, self.factor, self.nms = min_face, tuple(thresholds), factor, tuple(nms)

    @classmethod
    def from_weights(cls, folder=None, **kwargs) -> "MTCNN":
        """Load the three stages by the weights search order (``folder``: an explicit folder holding them)."""
        net = cls(**kwargs)
        for stage in ("pnet", "rnet", "onet"):
            name = f"mtcnn_{stage}"
            explicit = None
            if folder is not None:
                explicit = next((Path(folder) / f for f in weights.NETWORKS[name].files
                                 if (Path(folder) / f).is_file()), Path(folder) / weights.NETWORKS[name].files[0])
            tensors, _ = weights.read_state_dict(weights.find(name, explicit), what=weights.NETWORKS[name].title)
            try:
                getattr(net, stage).load_state_dict(tensors)
            except RuntimeError as e:
                raise WeightsMissingError(f"{name}: the file does not hold MTCNN {stage} weights "
                                          f"({str(e).splitlines()[0]})") from None
        return net.eval()

    @torch.no_grad()
    def forward(self, image: np.ndarray) -> list[Face]:
        import cv2

        img = (np.asarray(image, np.float32) - 127.5) / 128.0  # (H, W, 3); OpenCV's area resize is fast
        H, W = img.shape[:2]
        from torchvision.ops import nms

        # stage 1: P-Net over the pyramid
        boxes, scores, offsets = [], [], []
        scale = 12.0 / self.min_face
        side = min(H, W) * scale
        while side >= 12:
            level = cv2.resize(img, (int(W * scale + 1), int(H * scale + 1)), interpolation=cv2.INTER_AREA)
            level = torch.from_numpy(level).permute(2, 0, 1)[None]  # (1, 3, h, w)
            prob, reg = self.pnet(level)  # (1, h, w), (1, 4, h, w)
            ys, xs = torch.nonzero(prob[0] >= self.thresholds[0], as_tuple=True)
            if len(ys):
                s = prob[0, ys, xs]
                b = torch.stack([xs * 2 + 1, ys * 2 + 1, xs * 2 + 12, ys * 2 + 12], 1).float() / scale
                b = b.floor()
                keep = nms(b, s, self.nms[0])
                boxes.append(b[keep]), scores.append(s[keep]), offsets.append(reg[0][:, ys, xs].T[keep])
            scale *= self.factor
            side *= self.factor
        if not boxes:
            return []
        b, s, r = torch.cat(boxes), torch.cat(scores), torch.cat(offsets)
        keep = nms(b, s, self.nms[1])
        b = _square(_refine(b[keep], r[keep]))

        # stage 2: R-Net on 24x24 crops
        prob, reg = self.rnet(_crops(img, b, 24))
        keep = prob >= self.thresholds[1]
        b, s, reg = b[keep], prob[keep], reg[keep]
        if not len(b):
            return []
        keep = nms(b, s, self.nms[2])
        b = _square(_refine(b[keep], reg[keep]))

        # stage 3: O-Net on 48x48 crops, with landmarks
        prob, reg, lm = self.onet(_crops(img, b, 48))
        keep = prob >= self.thresholds[2]
        b, s, reg, lm = b[keep], prob[keep], reg[keep], lm[keep]
        if not len(b):
            return []
        wh = b[:, 2:] - b[:, :2]
        pts = torch.stack([b[:, :1] + wh[:, :1] * lm[:, :5], b[:, 1:2] + wh[:, 1:] * lm[:, 5:]], 2)  # (N, 5, 2)
        b = _refine(b, reg)
        # the minimum-area overlap of the original: a small box inside a larger one is dropped too
        keep = _nms_min(b, s, self.nms[3])
        b, s, pts = b[keep], s[keep], pts[keep]
        b[:, 0::2] = b[:, 0::2].clamp(0, W)
        b[:, 1::2] = b[:, 1::2].clamp(0, H)
        return [Face(bb.numpy(), float(sc), p.numpy().astype(np.float32))
                for bb, sc, p in zip(b, s, pts)]


def _nms_min(boxes: torch.Tensor, scores: torch.Tensor, thresh: float) -> torch.Tensor:
    """Greedy NMS whose overlap is intersection / the smaller box's area (MTCNN's last stage)."""
    order = scores.argsort(descending=True)
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    keep = []
    while len(order):
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        lt = torch.maximum(boxes[i, :2], boxes[rest, :2])
        rb = torch.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = (rb - lt).clamp(min=0).prod(1)
        overlap = inter / torch.minimum(area[i], area[rest]).clamp(min=1e-6)
        order = rest[overlap <= thresh]
    return torch.tensor(keep, dtype=torch.long)


class YuNet:
    """OpenCV's YuNet through ``cv2.FaceDetectorYN`` (the user's ONNX file, e.g. OpenCV Zoo's
    ``face_detection_yunet_2023mar.onnx``). ``detector(image)`` -> list of :class:`Face`."""

    def __init__(self, model, *, score_threshold: float = 0.6, nms_threshold: float = 0.3, min_face: int = 20):
        import cv2

        path = Path(model).expanduser()
        if not path.is_file():
            raise WeightsMissingError(f"{path}: no such YuNet ONNX file (OpenCV Zoo, models/face_detection_yunet/"
                                      "face_detection_yunet_2023mar.onnx)")
        try:
            self.det = cv2.FaceDetectorYN.create(str(path), "", (320, 320), score_threshold, nms_threshold, 5000)
        except cv2.error as e:
            raise WeightsMissingError(f"{path}: OpenCV cannot load it as a YuNet model ({str(e).strip()[:120]})") from None
        self.min_face = min_face

    def __call__(self, image: np.ndarray) -> list[Face]:
        import cv2

        h, w = image.shape[:2]
        self.det.setInputSize((w, h))
        _, found = self.det.detect(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
        faces = []
        for row in ([] if found is None else found):
            x, y, bw, bh = row[:4]
            # YuNet's landmarks: right eye, left eye (the person's), nose, right and left mouth corner;
            # as seen in the picture that is already left-to-right
            faces.append(Face(np.array([x, y, x + bw, y + bh], np.float32), float(row[14]),
                              row[4:14].reshape(5, 2).astype(np.float32)))
        return [f for f in sorted(faces, key=lambda f: -f.score) if f.size >= self.min_face]


def build_detector(kind: str = "auto", *, mtcnn_weights=None, yunet_model=None, min_face: int = 20):
    """A callable ``image -> list[Face]``. ``kind``: ``auto`` | ``mtcnn`` | ``yunet``."""
    if kind not in DETECTORS:
        raise WeightsMissingError(f"unknown face detector {kind!r}; choose one of {', '.join(DETECTORS)}")
    if kind == "yunet" or (kind == "auto" and yunet_model):
        if not yunet_model:
            raise WeightsMissingError("--detector yunet needs --yunet-model FILE.onnx (OpenCV Zoo's "
                                      "face_detection_yunet_2023mar.onnx)")
        return YuNet(yunet_model, min_face=min_face)
    try:
        return MTCNN.from_weights(mtcnn_weights, min_face=max(12, min_face))
    except WeightsMissingError as e:
        if kind == "mtcnn" or mtcnn_weights:
            raise
        raise WeightsMissingError(
            "no face detector available: run `imtranslate weights install mtcnn` (fetches the facenet-pytorch "
            f"wheel with pip, no dependencies, and converts MTCNN's weights into {weights.weights_dir()}), or give "
            "--detector yunet --yunet-model face_detection_yunet_2023mar.onnx (OpenCV Zoo). "
            f"[{str(e).split('.')[0]}]") from None
