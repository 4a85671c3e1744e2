"""Builders of tiny dataset trees in the exact on-disk layouts, with real JPEG files.

Plain functions (no pytest), so any test module can use them::

    from tests.data.fixtures import make_voc_tree
    root = make_voc_tree(tmp_path)

Each builder returns the root folder; the ``*_EXPECTED`` constants give the labels it writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

IMAGE_SIZE = 24


def write_jpeg(path, size: int = IMAGE_SIZE, seed: int = 0) -> Path:
    """A real (decodable) ``size`` x ``size`` RGB JPEG with seeded random content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format="JPEG", quality=90)
    return path


def truncate_file(path, keep_fraction: float = 0.5) -> Path:
    """Cut a file to a fraction of its bytes (a truncated download)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep_fraction))])
    return path


# --------------------------------------------------------------------------------------------
# VOC 2007
# --------------------------------------------------------------------------------------------


def _voc_object(name: str, difficult: int = 0, truncated: int = 0, parts: Sequence[str] = (), pad_name: bool = False) -> str:
    shown = f"\n\t\t\t{name}\n\t\t" if pad_name else name
    part_xml = "".join(
        f"""
		<part>
			<name>{p}</name>
			<bndbox>
				<xmin>3</xmin>
				<ymin>3</ymin>
				<xmax>9</xmax>
				<ymax>9</ymax>
			</bndbox>
		</part>"""
        for p in parts
    )
    return f"""
	<object>
		<name>{shown}</name>
		<pose>Unspecified</pose>
		<truncated>{truncated}</truncated>
		<difficult>{difficult}</difficult>
		<bndbox>
			<xmin>1</xmin>
			<ymin>2</ymin>
			<xmax>20</xmax>
			<ymax>22</ymax>
		</bndbox>{part_xml}
	</object>"""


def voc_xml(image_id: str, objects: Sequence[dict]) -> str:
    """A VOC annotation in the real format (folder, filename, source, owner, size, segmented,
    objects with pose/truncated/difficult/bndbox and person parts)."""
    body = "".join(_voc_object(**o) for o in objects)
    return f"""<annotation>
	<folder>VOC2007</folder>
	<filename>{image_id}.jpg</filename>
	<source>
		<database>The VOC2007 Database</database>
		<annotation>PASCAL VOC2007</annotation>
		<image>flickr</image>
		<flickrid>341012865</flickrid>
	</source>
	<owner>
		<flickrid>Fried Camels</flickrid>
		<name>Jinky the Fruit Bat</name>
	</owner>
	<size>
		<width>{IMAGE_SIZE}</width>
		<height>{IMAGE_SIZE}</height>
		<depth>3</depth>
	</size>
	<segmented>0</segmented>{body}
</annotation>
"""


# image id -> objects; expected positive classes below
VOC_TRAIN_OBJECTS: Dict[str, List[dict]] = {
    # chairs, one of them difficult and one truncated (as the real 000005)
    "000005": [dict(name="chair"), dict(name="chair", truncated=1), dict(name="chair", difficult=1)],
    # a person with head/hand/foot parts and a horse: parts must not become labels
    "000009": [dict(name="horse"), dict(name="person", parts=("head", "hand", "hand", "foot"))],
    # only a difficult object: still positive
    "000012": [dict(name="car", difficult=1, truncated=1)],
    # whitespace around the name
    "000017": [dict(name="pottedplant", pad_name=True), dict(name="tvmonitor"), dict(name="aeroplane")],
}
VOC_TRAIN_EXPECTED = {
    "000005": {"chair"},
    "000009": {"horse", "person"},
    "000012": {"car"},
    "000017": {"pottedplant", "tvmonitor", "aeroplane"},
}
VOC_TEST_OBJECTS: Dict[str, List[dict]] = {
    "000001": [dict(name="dog"), dict(name="person", parts=("head",))],
    "000002": [dict(name="train")],
    "000004": [dict(name="car"), dict(name="car", difficult=1), dict(name="bicycle")],
}
VOC_TEST_EXPECTED = {
    "000001": {"dog", "person"},
    "000002": {"train"},
    "000004": {"car", "bicycle"},
}


def make_voc_tree(root, train: Optional[Dict[str, List[dict]]] = None, test: Optional[Dict[str, List[dict]]] = None) -> Path:
    """``<root>/VOCtrainval2007/...`` and ``<root>/VOCtest2007/...`` in the L2D layout."""
    root = Path(root)
    splits = (
        ("VOCtrainval2007", "trainval", VOC_TRAIN_OBJECTS if train is None else train),
        ("VOCtest2007", "test", VOC_TEST_OBJECTS if test is None else test),
    )
    for n, (top, imageset, objects) in enumerate(splits):
        base = root / top / "VOCdevkit" / "VOC2007"
        for sub in ("Annotations", "JPEGImages"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        (base / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        for k, (image_id, objs) in enumerate(objects.items()):
            write_jpeg(base / "JPEGImages" / f"{image_id}.jpg", seed=100 * n + k)
            (base / "Annotations" / f"{image_id}.xml").write_text(voc_xml(image_id, objs))
        (base / "ImageSets" / "Main" / f"{imageset}.txt").write_text("".join(f"{i}\n" for i in objects))
    return root


# --------------------------------------------------------------------------------------------
# COCO 2014
# --------------------------------------------------------------------------------------------

# file name -> category names (official names); the last image has no annotation at all
COCO_TRAIN_IMAGES: Dict[str, List[str]] = {
    "COCO_train2014_000000000009.jpg": ["bowl", "broccoli", "bowl", "orange"],
    "COCO_train2014_000000000025.jpg": ["giraffe"],
    "COCO_train2014_000000000030.jpg": ["potted plant", "vase"],
    "COCO_train2014_000000000034.jpg": ["zebra", "person", "airplane", "toothbrush"],
}
COCO_VAL_IMAGES: Dict[str, List[str]] = {
    "COCO_val2014_000000391895.jpg": ["person", "motorcycle", "bicycle", "person"],
    "COCO_val2014_000000522418.jpg": ["person", "knife", "cake", "sink"],
    "COCO_val2014_000000184613.jpg": ["cow", "person", "umbrella"],
    "COCO_val2014_000000000042.jpg": [],  # unannotated: dropped by L2D, zero row from instances
}


def coco_categories() -> List[dict]:
    """The official categories list, in id order (ids 1..90 with gaps)."""
    from mlkd_cache.data.coco import COCO_OFFICIAL_IDS, COCO_OFFICIAL_NAMES

    supers = {"person": "person", "bicycle": "vehicle"}
    return [{"supercategory": supers.get(n, "thing"), "id": i, "name": n} for i, n in zip(COCO_OFFICIAL_IDS, COCO_OFFICIAL_NAMES)]


def coco_instances_json(images: Dict[str, List[str]], first_id: int = 1000) -> dict:
    """An official-format instances dict for ``images`` (file name -> category names)."""
    cats = coco_categories()
    name_to_id = {c["name"]: c["id"] for c in cats}
    imgs, anns = [], []
    # image ids deliberately not in file order
    for k, (file_name, names) in enumerate(images.items()):
        image_id = first_id + 7 * (len(images) - k)
        imgs.append(
            {
                "license": 3,
                "file_name": file_name,
                "coco_url": "",
                "height": IMAGE_SIZE,
                "width": IMAGE_SIZE,
                "date_captured": "2013-11-14 16:28:13",
                "flickr_url": "",
                "id": image_id,
            }
        )
        for name in names:
            anns.append(
                {
                    "segmentation": [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0]],
                    "area": 16.0,
                    "iscrowd": 0,
                    "image_id": image_id,
                    "bbox": [1.0, 1.0, 4.0, 4.0],
                    "category_id": name_to_id[name],
                    "id": len(anns) + 1,
                }
            )
    anns = anns[::-1]  # annotations in no particular image order
    return {"info": {"description": "fixture"}, "images": imgs, "licenses": [], "annotations": anns, "categories": cats}


def coco_l2d_json(images: Dict[str, List[str]]) -> list:
    """L2D's format for ``images``: unannotated images dropped, labels = sorted-name indices."""
    from mlkd_cache.data.coco import COCO_CLASSES

    index = {c: k for k, c in enumerate(COCO_CLASSES)}
    out = []
    for file_name, names in images.items():
        if not names:
            continue
        labels = []
        for n in names:
            if index[n] not in labels:
                labels.append(index[n])
        out.append({"file_name": file_name, "labels": labels})
    return out


def make_coco_tree(
    root,
    fmt: str = "l2d",
    train: Optional[Dict[str, List[str]]] = None,
    val: Optional[Dict[str, List[str]]] = None,
    images: bool = True,
) -> Path:
    """``<root>/{train2014,val2014}/*.jpg`` plus annotations in ``fmt``: ``"l2d"``
    (``train_anno.json``/``val_anno.json``), ``"instances"`` (``annotations/instances_*.json``)
    or ``"both"``."""
    root = Path(root)
    train = COCO_TRAIN_IMAGES if train is None else train
    val = COCO_VAL_IMAGES if val is None else val
    for n, (folder, l2d_name, inst_name, content) in enumerate(
        (
            ("train2014", "train_anno.json", "instances_train2014.json", train),
            ("val2014", "val_anno.json", "instances_val2014.json", val),
        )
    ):
        (root / folder).mkdir(parents=True, exist_ok=True)
        if images:
            for k, file_name in enumerate(content):
                write_jpeg(root / folder / file_name, seed=200 + 50 * n + k)
        if fmt in ("l2d", "both"):
            (root / l2d_name).write_text(json.dumps(coco_l2d_json(content)))
        if fmt in ("instances", "both"):
            (root / "annotations").mkdir(exist_ok=True)
            (root / "annotations" / inst_name).write_text(json.dumps(coco_instances_json(content)))
    return root


# --------------------------------------------------------------------------------------------
# NUS-WIDE
# --------------------------------------------------------------------------------------------

NUS_CONCEPTS = ["airport", "animal", "beach", "bear", "birds"]
# (concept folder, file) -> positive concepts
NUS_TRAIN = [
    (("actor", "0001_2124494179.jpg"), {"animal"}),
    (("airport", "0002_156026393.jpg"), {"airport"}),
    (("beach", "0003_511281289.jpg"), {"beach", "birds"}),
    (("beach", "0004_1256483.jpg"), set()),
    (("bear", "0005_3099811321.jpg"), {"bear", "animal"}),
]
NUS_TEST = [
    (("birds", "0006_2395117.jpg"), {"birds", "animal"}),
    (("airport", "0007_41321.jpg"), {"airport", "beach"}),
    (("actor", "0008_9412.jpg"), set()),
]


def make_nus_tree(root, concepts: Sequence[str] = NUS_CONCEPTS, train=None, test=None) -> Path:
    """``<root>/{Flickr,ImageList,TrainTestLabels,Concepts81.txt}`` with Windows-style image
    lists (backslashes, CRLF)."""
    root = Path(root)
    train = NUS_TRAIN if train is None else train
    test = NUS_TEST if test is None else test
    (root / "ImageList").mkdir(parents=True, exist_ok=True)
    (root / "TrainTestLabels").mkdir(parents=True, exist_ok=True)
    (root / "Concepts81.txt").write_text("".join(f"{c}\n" for c in concepts))
    every = []
    for n, (list_name, tag, items) in enumerate((("TrainImagelist.txt", "Train", train), ("TestImagelist.txt", "Test", test))):
        lines = []
        for k, ((folder, file_name), _) in enumerate(items):
            write_jpeg(root / "Flickr" / folder / file_name, seed=300 + 50 * n + k)
            lines.append(f"{folder}\\{file_name}")
            every.append(f"C:\\ImageData\\Flickr\\{folder}\\{file_name}")
        (root / "ImageList" / list_name).write_bytes("".join(f"{name}\r\n" for name in lines).encode())
        for c in concepts:
            values = "".join(f"{int(c in pos)}\n" for _, pos in items)
            (root / "TrainTestLabels" / f"Labels_{c}_{tag}.txt").write_text(values)
    (root / "ImageList" / "Imagelist.txt").write_bytes("".join(f"{name}\r\n" for name in every).encode())
    return root


# --------------------------------------------------------------------------------------------
# CSV / JSON (a user's own data)
# --------------------------------------------------------------------------------------------

CSV_TRAIN = [("img/a.jpg", ["cat", "dog"]), ("img/b.jpg", ["dog"]), ("img/sub/c.jpg", ["bird", "cat"]), ("img/d.jpg", [])]
CSV_TEST = [("img/e.jpg", ["bird"]), ("img/f.jpg", ["dog", "cat"])]


def make_csv_tree(root, fmt: str = "csv", train=None, test=None) -> Path:
    """Images under ``<root>/img`` and ``<root>/train.<fmt>``, ``<root>/test.<fmt>``. In the CSV
    form the label separator alternates between ``;`` and a space."""
    root = Path(root)
    train = CSV_TRAIN if train is None else train
    test = CSV_TEST if test is None else test
    for n, (name, rows) in enumerate((("train", train), ("test", test))):
        for k, (image, _) in enumerate(rows):
            if not (root / image).exists():
                write_jpeg(root / image, seed=400 + 50 * n + k)
        if fmt == "json":
            (root / f"{name}.json").write_text(json.dumps([{"image": im, "labels": list(labels)} for im, labels in rows]))
        else:
            lines = ["image,labels"]
            for k, (image, labels) in enumerate(rows):
                sep = ";" if k % 2 == 0 else " "
                lines.append(f"{image},{sep.join(labels)}")
            (root / f"{name}.csv").write_text("\n".join(lines) + "\n")
    return root


def label_sets(dataset) -> Dict[str, set]:
    """key -> set of positive class names of a built dataset."""
    return {k: {dataset.class_names[c] for c in np.nonzero(row)[0]} for k, row in zip(dataset.keys, dataset.labels)}
