"""tools/build_voc_rf144.py and tools/build_coco_tiny.py, run as processes on small trees in the
official VOC 2007 and COCO 2017 layouts: the benchmark's data must be rebuildable from the
official releases, in the layout the shipped VOC config and the ``coco`` loader read."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
from PIL import Image

from mlkd_cache.config import load_config
from mlkd_cache.data import build_dataset
from tests.data.fixtures import coco_instances_json, label_sets, voc_xml, write_jpeg

from .conftest import REPO, shared_data

pytestmark = pytest.mark.slow  # every test runs a tool in a process

VOC_TOOL = REPO / "tools" / "build_voc_rf144.py"
COCO_TOOL = REPO / "tools" / "build_coco_tiny.py"
VOC_CONFIG = REPO / "configs" / "voc-rf144" / "resnet10t_to_test_resnet_l2d.py"

# id -> ((width, height), mode, objects): landscape, portrait, square, smaller than 144 px, an odd
# aspect ratio, a greyscale photograph; one image without objects, a class present only through a
# difficult object, person parts that are not objects.
VOC_IMAGES: Dict[str, Tuple[Tuple[int, int], str, List[dict]]] = {
    "000005": ((500, 375), "RGB", [dict(name="chair"), dict(name="chair", truncated=1), dict(name="dog", difficult=1)]),
    "000007": ((500, 333), "RGB", [dict(name="car")]),
    "000009": ((200, 300), "L", [dict(name="horse"), dict(name="person", parts=("head", "hand", "foot"))]),
    "000012": ((100, 75), "RGB", [dict(name="horse", difficult=1)]),
    "000016": ((97, 211), "RGB", [dict(name="bicycle")]),
    "000017": ((160, 160), "RGB", [dict(name="person"), dict(name="bicycle"), dict(name="horse")]),
    "000019": ((300, 200), "RGB", []),
    "000020": ((333, 500), "RGB", [dict(name="person", parts=("head",)), dict(name="car")]),
}
WITH_METADATA = "000017"  # saved with EXIF and an ICC profile: neither may reach the output
# The rule: every class of a top-level object, difficult ones included; images without objects left out.
VOC_LABELS = {
    "000005": "chair;dog",
    "000007": "car",
    "000009": "horse;person",
    "000012": "horse",
    "000016": "bicycle",
    "000017": "bicycle;horse;person",
    "000020": "car;person",
}
# --test 2 --val 1 by the sha256 order of the kept ids: 000016, 000020 | 000009 | the rest
# (000019, second in that order, has no object: kept, it would have been a test image)
VOC_SPLITS = {"test": ["000016", "000020"], "val": ["000009"], "train": ["000005", "000007", "000012", "000017"]}


def smooth_image(size: Tuple[int, int], mode: str, seed: int) -> Image.Image:
    """A seeded smooth picture (gradients): JPEG and resampling change it little, so the output
    can be compared with a resize of the source."""
    w, h = size
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(0.2, 1.0, size=(2, 3))
    y, x = np.mgrid[0:h, 0:w]
    channels = [(a[c] * 255 * x / w + b[c] * 255 * (1 - y / h)) / (a[c] + b[c]) for c in range(3)]
    rgb = Image.fromarray(np.stack(channels, axis=-1).round().astype(np.uint8), "RGB")
    return rgb if mode == "RGB" else rgb.convert(mode)


def make_voc_devkit(root: Path, images=VOC_IMAGES) -> Path:
    """``root/VOCdevkit/VOC2007`` as the official trainval archive extracts it."""
    voc = root / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for k, (image_id, (size, mode, objects)) in enumerate(images.items()):
        extra = {}
        if image_id == WITH_METADATA:
            exif = Image.Exif()
            exif[0x010F] = "fixture camera"  # Make
            extra = dict(exif=exif.tobytes(), icc_profile=b"fixture icc profile")
        smooth_image(size, mode, seed=k).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=95, **extra)
        (voc / "Annotations" / f"{image_id}.xml").write_text(voc_xml(image_id, objects))
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("".join(f"{i}\n" for i in images))
    return root / "VOCdevkit"


def run(tool: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(tool), *map(str, args)], capture_output=True, text=True, timeout=120)


def read_csv(path: Path) -> Dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "image,labels"
    return dict(line.split(",") for line in lines[1:])


def files_of(folder: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_refused(proc: subprocess.CompletedProcess, tool: Path, phrase: str) -> None:
    """One line on stderr naming the problem, exit code 2, no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"{tool.name}: error: ") and phrase in lines[0], proc.stderr


@pytest.fixture(scope="module")
def voc_built(tmp_path_factory):
    """The fixture devkit, built twice into two folders with --test 2 --val 1."""
    tmp = tmp_path_factory.mktemp("voc_build")
    devkit = make_voc_devkit(tmp / "src")
    outs = []
    for name in ("a", "b"):
        proc = run(VOC_TOOL, devkit, tmp / name, "--test", 2, "--val", 1)
        assert proc.returncode == 0, proc.stderr
        outs.append(tmp / name)
    return devkit / "VOC2007", outs, proc.stdout


@pytest.mark.slow  # the module's two builds start processes that load the library (torch)
def test_voc_photographs_short_side_144_aspect_kept_rgb_without_metadata(voc_built):
    voc, (out, _), _ = voc_built
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i}.jpg" for i in sorted(VOC_LABELS)]
    for image_id in VOC_LABELS:
        (w, h), _, _ = VOC_IMAGES[image_id]
        with Image.open(out / "images" / f"{image_id}.jpg") as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert "exif" not in im.info and "icc_profile" not in im.info and "comment" not in im.info
            W, H = im.size
            pixels = np.asarray(im, dtype=np.float64)
        assert min(W, H) == 144 and (W >= H) == (w >= h), (image_id, im.size)
        # the long side is the source's aspect ratio times 144, rounded
        assert abs(max(W, H) - max(w, h) * 144 / min(w, h)) <= 0.5, (image_id, im.size)
        with Image.open(voc / "JPEGImages" / f"{image_id}.jpg") as src:
            reference = np.asarray(src.convert("RGB").resize((W, H), Image.LANCZOS), dtype=np.float64)
        assert np.abs(pixels - reference).mean() < 2.0, image_id  # the same picture, only smaller


@pytest.mark.slow
def test_voc_labels_and_split_follow_the_stated_rule(voc_built):
    _, (out, _), stdout = voc_built
    rows = {split: read_csv(out / f"{split}.csv") for split in ("train", "val", "test")}
    for split, ids in VOC_SPLITS.items():
        assert list(rows[split]) == [f"images/{i}.jpg" for i in ids]  # rows in id order
        assert all(rows[split][f"images/{i}.jpg"] == VOC_LABELS[i] for i in ids)
    # the rule, recomputed: sort by sha256 of the id, 2 test, 1 val, the rest train
    order = sorted(VOC_LABELS, key=lambda i: hashlib.sha256(i.encode()).hexdigest())
    assert [sorted(order[:2]), sorted(order[2:3]), sorted(order[3:])] == [VOC_SPLITS[s] for s in ("test", "val", "train")]
    assert "SHA-256" in stdout and "first 2 are test, the next 1 val" in stdout
    assert "8 ids in trainval.txt, 7 with at least one object" in stdout
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "first 2 are test, the next 1 val" in readme and "| train | 4 | 2 |" in readme


@pytest.mark.slow
def test_voc_build_is_deterministic(voc_built):
    _, (a, b), _ = voc_built
    assert files_of(a) == files_of(b)
    assert not [p for p in a.parent.iterdir() if ".partial-" in p.name]


@pytest.mark.slow
def test_voc_shipped_config_reads_the_result(voc_built):
    _, (out, _), _ = voc_built
    cfg = load_config(VOC_CONFIG)
    assert cfg.dataset == "csv"
    for split, ids in VOC_SPLITS.items():
        # the students' train_size (the first 1,000 rows) exceeds the fixture: train as the teacher reads it
        para = {**cfg.dataset_para, **cfg.dataset_para_t} if split == "train" else cfg.dataset_para
        ds = build_dataset("csv", split, root=str(out), **para)
        expected = {f"images/{i}.jpg": set(VOC_LABELS[i].split(";")) for i in ids}
        assert label_sets(ds) == expected
        image, _ = ds[0]  # a photograph the loader decodes, as written
        assert image.mode == "RGB" and min(image.size) == 144


@pytest.mark.parametrize(
    "case, phrase",
    [
        ("no-trainval", "no VOC 2007 release at"),
        ("out-exists", "exists; name a new folder"),
        # refused after the library (torch) is loaded: 2 s each
        pytest.param("photograph-missing", "1 of 8 photographs missing", marks=pytest.mark.slow),
        pytest.param("no-train-left", "--test 6 and --val 1 leave no training image among 7", marks=pytest.mark.slow),
        pytest.param("unknown-class", "unknown class 'hors'", marks=pytest.mark.slow),
    ],
)
def test_voc_mistakes_are_one_line_and_exit_2(tmp_path, case, phrase):
    devkit = make_voc_devkit(tmp_path / "src")
    voc = devkit / "VOC2007"
    out = tmp_path / "out"
    args = ["--test", 2, "--val", 1]
    if case == "no-trainval":
        (voc / "ImageSets" / "Main" / "trainval.txt").unlink()
    elif case == "out-exists":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif case == "photograph-missing":
        (voc / "JPEGImages" / "000012.jpg").unlink()
    elif case == "no-train-left":
        args = ["--test", 6, "--val", 1]
    elif case == "unknown-class":
        (voc / "Annotations" / "000012.xml").write_text(voc_xml("000012", [dict(name="hors")]))
    assert_refused(run(VOC_TOOL, devkit, out, *args), VOC_TOOL, phrase)
    if case == "out-exists":
        assert files_of(out) == {"keep.txt": b"mine"}
    else:
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


# --------------------------------------------------------------------------------------------
# COCO 2017
# --------------------------------------------------------------------------------------------

# folder -> file name -> category names; "+" marks the images the --names file lists
COCO_IMAGES = {
    "train2017": {
        "000000000009.jpg+": ["bowl", "broccoli", "bowl"],
        "000000000025.jpg+": ["giraffe"],
        "000000000030.jpg": ["potted plant", "vase"],
        "000000000034.jpg+": [],  # listed, without any annotation
    },
    "val2017": {
        "000000000139.jpg": ["person", "tv"],
        "000000000285.jpg+": ["bear"],
        "000000000632.jpg+": ["bed", "book", "person"],
    },
}


def make_coco2017(root: Path) -> Tuple[Path, Path]:
    """``root/{train2017,val2017,annotations}`` in the official layout, and a --names file."""
    names = []
    for n, (folder, images) in enumerate(COCO_IMAGES.items()):
        content = {name.rstrip("+"): cats for name, cats in images.items()}
        for k, name in enumerate(content):
            write_jpeg(root / folder / name, size=24 + 8 * k, seed=10 * n + k)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        data = coco_instances_json(content, first_id=100 * (n + 1))
        data["licenses"] = [{"url": "http://creativecommons.org/licenses/by/2.0/", "id": 4, "name": "Attribution License"}]
        (root / "annotations" / f"instances_{folder}.json").write_text(json.dumps(data))
        names += [f"{folder}/{name.rstrip('+')}" for name in images if name.endswith("+")]
    names_file = root.parent / "names.txt"
    names_file.write_text("\n".join(names) + "\n")
    return root, names_file


def test_coco_build_filters_annotations_copies_images_and_loads(tmp_path):
    src, names_file = make_coco2017(tmp_path / "coco")
    out = tmp_path / "tiny"
    proc = run(COCO_TOOL, src, out, "--names", names_file)
    assert proc.returncode == 0, proc.stderr
    assert "instances_train2017.json: 3 images (1 without annotation), 4 annotations, 80 categories" in proc.stdout
    listed = {folder: [n.rstrip("+") for n in images if n.endswith("+")] for folder, images in COCO_IMAGES.items()}
    for folder, names in listed.items():
        assert sorted(p.name for p in (out / folder).iterdir()) == sorted(names)
        assert all((out / folder / n).read_bytes() == (src / folder / n).read_bytes() for n in names)  # unchanged
        full = json.loads((src / "annotations" / f"instances_{folder}.json").read_text())
        kept = json.loads((out / "annotations" / f"instances_{folder}.json").read_text())
        assert list(kept) == ["info", "licenses", "images", "annotations", "categories"]
        assert kept["info"] == full["info"] and kept["licenses"] == full["licenses"]
        assert kept["categories"] == full["categories"]
        assert kept["images"] == [im for im in full["images"] if im["file_name"] in names]
        ids = {im["id"] for im in kept["images"]}
        assert kept["annotations"] == [a for a in full["annotations"] if a["image_id"] in ids]
    for split, folder in (("train", "train2017"), ("test", "val2017")):
        built, whole = build_dataset("coco", split, root=str(out)), build_dataset("coco", split, root=str(src))
        expected = {k: v for k, v in label_sets(whole).items() if k.split("/")[1] in listed[folder]}
        assert label_sets(built) == expected
    assert label_sets(built)["val2017/000000000632.jpg"] == {"bed", "book", "person"}
    again = tmp_path / "again"
    assert run(COCO_TOOL, src, again, "--names", names_file).returncode == 0
    assert files_of(again) == files_of(out)


@pytest.mark.parametrize(
    "case, phrase",
    [
        ("image-missing", "1 of 5 images missing from"),
        ("not-in-annotations", "1 of the images are not in"),
        ("no-annotations", "instances_val2017.json is missing"),
        ("out-exists", "exists; name a new folder"),
        ("bad-names", "is not train2017/NAME or val2017/NAME"),
    ],
)
def test_coco_mistakes_are_one_line_and_exit_2(tmp_path, case, phrase):
    src, names_file = make_coco2017(tmp_path / "coco")
    out = tmp_path / "out"
    if case == "image-missing":
        (src / "val2017" / "000000000285.jpg").unlink()
    elif case == "not-in-annotations":  # on disk, but not an image of the annotation file
        write_jpeg(src / "val2017" / "000000999999.jpg")
        names_file.write_text(names_file.read_text() + "val2017/000000999999.jpg\n")
    elif case == "no-annotations":
        (src / "annotations" / "instances_val2017.json").unlink()
    elif case == "out-exists":
        out.mkdir()
    elif case == "bad-names":
        names_file.write_text("train2017/000000000009.jpg\ntest2017/000000000001.jpg\n")
    assert_refused(run(COCO_TOOL, src, out, "--names", names_file), COCO_TOOL, phrase)
    assert out.exists() == (case == "out-exists")
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_coco_default_names_rebuild_the_shared_copy(tmp_path):
    """The embedded names are the shared copy's images: built from that copy (itself in the
    official layout), the result holds the same photographs and labels."""
    shared = shared_data("coco2017-tiny")
    out = tmp_path / "tiny"
    proc = run(COCO_TOOL, shared, out)
    assert proc.returncode == 0, proc.stderr
    for folder in ("train2017", "val2017"):
        assert files_of(out / folder) == files_of(shared / folder)
    for split in ("train", "test"):
        built, original = build_dataset("coco", split, root=str(out)), build_dataset("coco", split, root=str(shared))
        assert built.keys == original.keys and np.array_equal(built.labels, original.labels)
