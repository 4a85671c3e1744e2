"""Labels for photographs from an mlkd-cache ONNX export, with onnxruntime, Pillow and numpy only.

python run_onnx.py student.onnx photo.jpg [more.jpg ...]
"""

import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
size, names = int(meta["mlkd_cache.img_size"]), json.loads(meta["mlkd_cache.class_names"])
stored = json.loads(meta["mlkd_cache.thresholds"])  # null: the model stores none, use 0.5
thresholds = np.array(stored["values"]) if stored else np.full(len(names), 0.5)
resample = getattr(Image.Resampling, meta["mlkd_cache.interpolation"].upper())
for path in sys.argv[2:]:
    image = Image.open(path)
    if meta["mlkd_cache.decode"] == "reduced":
        image.draft(None, (size, size))  # a large JPEG decoded at reduced scale, as in training
    image = ImageOps.exif_transpose(image).convert("RGB").resize((size, size), resample)
    pixels = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)[None]  # uint8 [1, 3, S, S]
    logits, probabilities = session.run(["logits", "probabilities"], {"pixels": pixels})
    labels = [name for name, p, t in zip(names, probabilities[0], thresholds) if p >= t]
    print(path, ";".join(labels), json.dumps([round(float(p), 6) for p in probabilities[0]]))
