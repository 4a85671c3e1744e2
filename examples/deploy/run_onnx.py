"""Labels for images from an mlkd-cache ONNX export, with onnxruntime, Pillow and numpy only.

python run_onnx.py student.onnx photo.jpg [more.jpg ...]
"""

import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps


def to_rgb(image):
    """The 8-bit RGB picture mlkd-cache makes of an image (its data/base.py, to_rgb)."""
    image = ImageOps.exif_transpose(image)  # phone photos: the camera's orientation applied
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):  # 16-bit samples: scaled to 8 bits, not cut
        wide = np.minimum(np.asarray(image, dtype=np.uint32), 65535)
        image = Image.fromarray(((wide + 128) // 257).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode in ("P", "L", "RGB") and "transparency" in image.info):
        rgba = image.convert("RGBA")  # transparency: composited on white
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert("RGB")  # greyscale, palette, CMYK: converted by Pillow


session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
size, names = int(meta["mlkd_cache.img_size"]), json.loads(meta["mlkd_cache.class_names"])
stored = json.loads(meta["mlkd_cache.thresholds"])  # null: the model stores none, use 0.5
thresholds = np.array(stored["values"]) if stored else np.full(len(names), 0.5)
resample = getattr(Image.Resampling, meta["mlkd_cache.interpolation"].upper())
for path in sys.argv[2:]:
    image = Image.open(path)
    if meta["mlkd_cache.decode"] == "reduced" and image.format == "JPEG":
        image.draft(None, (size, size))  # a large JPEG decoded at reduced scale, as in training
    image = to_rgb(image).resize((size, size), resample)
    pixels = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)[None]  # uint8 [1, 3, S, S]
    logits, probabilities = session.run(["logits", "probabilities"], {"pixels": pixels})
    labels = [name for name, p, t in zip(names, probabilities[0], thresholds) if p >= t]
    print(path, ";".join(labels), json.dumps([round(float(p), 6) for p in probabilities[0]]))
