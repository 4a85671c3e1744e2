"""Build ``voc2007-rf144``, the data of the real-photograph benchmark, from the official PASCAL VOC 2007 release.

::

    python tools/build_voc_rf144.py VOCDEVKIT OUT [--test 1000] [--val 500]

``VOCDEVKIT`` is the extracted trainval archive (``VOCtrainval_06-Nov-2007.tar``): the
``VOCdevkit`` folder, its ``VOC2007`` folder or the folder holding ``VOCdevkit``; it must hold
``VOC2007/JPEGImages``, ``VOC2007/Annotations`` and ``VOC2007/ImageSets/Main/trainval.txt``.
``OUT`` is a new folder, written as::

    OUT/images/<id>.jpg                 one photograph per VOC id
    OUT/train.csv, val.csv, test.csv    columns image,labels: images/<id>.jpg and the class
                                        names joined with ";" (VOC class order); rows by id
    OUT/README.md                       how it was built: source, rules, counts

the layout ``configs/voc-rf144/resnet10t_to_test_resnet_l2d.py`` reads (``dataset="csv"``, its
``train_file``, ``val_file`` and ``test_file``).

The rules:

* images: every id of ``trainval.txt`` whose annotation has at least one object;
* labels: the set of classes of the annotation's top-level ``<object>`` elements, ``difficult``
  objects included, ``<part>`` elements (head, hand, foot) not objects. This is the rule of the
  ``voc`` dataset (``mlkd_cache/data/voc.py``, L2D's convention), whose parser this script uses:
  the rebuilt labels are those ``build_dataset("voc", "train")`` gives the same images. The
  devkit's statistics count non-difficult objects only, so a class's image count here can be a
  little above its figure there;
* pixels: decoded as the library decodes every image (EXIF orientation applied; greyscale, CMYK
  and palette images converted to RGB), resized with Pillow's LANCZOS filter so that the short
  side is 144 px and the long side is ``long * 144 / short`` rounded half up, saved as JPEG
  quality 90 without metadata (no EXIF, ICC profile or comment);
* split, fixed and by id, never by label: sort the kept ids by the SHA-256 hex digest of the
  id's UTF-8 bytes (``hashlib.sha256(b"000005").hexdigest()``); the first ``--test`` (1,000) are
  test, the next ``--val`` (500) val, the rest train.

The shared copy ``../shared/data/voc2007-rf144`` was made from a public re-export of VOC 2007
whose boxes differ from the official annotations, and its split rule is not recorded: a rebuilt
folder has other labels and another split (docs/results.md says what that means for comparing
figures).

Everything is written to a temporary folder next to ``OUT`` and renamed at the end, so a folder
named ``OUT`` is complete. A ``VOCDEVKIT`` without the layout, an ``OUT`` that exists, split
sizes that leave no training image, a missing or undecodable photograph or a malformed
annotation: one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

SHORT_SIDE = 144
JPEG_QUALITY = 90
SPLITS = ("train", "val", "test")
REQUIRED = ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main", "trainval.txt"))
PROG = "build_voc_rf144.py"


class Refused(Exception):
    """A user's mistake: printed as one line, exit code 2."""


def split_rule(n_test: int, n_val: int) -> str:
    """The split rule in words, as printed and written to the README."""
    return (
        "sort the ids by the SHA-256 hex digest of the id's UTF-8 bytes; "
        f"the first {n_test:,} are test, the next {n_val:,} val, the rest train"
    )


def split_key(image_id: str) -> str:
    """The sort key of the split rule: ``sha256(id).hexdigest()``."""
    return hashlib.sha256(image_id.encode("utf-8")).hexdigest()


def assign_splits(ids: Sequence[str], n_test: int, n_val: int) -> Dict[str, List[str]]:
    """split -> its ids in id order, by :func:`split_rule`."""
    order = sorted(ids, key=split_key)
    return {
        "test": sorted(order[:n_test]),
        "val": sorted(order[n_test : n_test + n_val]),
        "train": sorted(order[n_test + n_val :]),
    }


def resized_size(width: int, height: int, short: int = SHORT_SIDE) -> Tuple[int, int]:
    """``(width, height)`` with the short side ``short`` and the long one scaled, rounded half up."""
    if width <= height:
        return short, (height * short + width // 2) // width
    return (width * short + height // 2) // height, short


def find_voc2007(path: Path) -> Optional[Path]:
    """The ``VOC2007`` folder of the release at ``path`` (the VOCdevkit folder, VOC2007 itself or
    the folder above VOCdevkit), or None."""
    for candidate in (path / "VOC2007", path, path / "VOCdevkit" / "VOC2007"):
        if all((candidate / sub).exists() for sub in REQUIRED):
            return candidate
    return None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def read_labels(voc: Path, ids: Sequence[str]) -> Dict[str, List[str]]:
    """id -> its class names in VOC class order (empty: no object)."""
    from mlkd_cache.data.base import unknown_class_error
    from mlkd_cache.data.voc import VOC_CLASSES, parse_voc_xml

    labels = {}
    for image_id in ids:
        xml = voc / "Annotations" / f"{image_id}.xml"
        if not xml.is_file():
            raise Refused(f"annotation missing: {xml}; re-extract the VOC archive")
        names = set(parse_voc_xml(str(xml)))
        unknown = sorted(names - set(VOC_CLASSES))
        if unknown:
            raise unknown_class_error(unknown[0], str(xml), VOC_CLASSES)
        labels[image_id] = [c for c in VOC_CLASSES if c in names]
    return labels


def write_photograph(src: Path, dst: Path) -> None:
    """``src`` decoded as RGB, short side 144 px (LANCZOS), saved to ``dst`` as JPEG q90 without metadata."""
    from PIL import Image

    from mlkd_cache.data.base import load_rgb

    image = load_rgb(str(src))
    small = image.resize(resized_size(*image.size), Image.LANCZOS)
    small.info = {}  # no EXIF, ICC profile or comment travels to the new file
    small.save(dst, format="JPEG", quality=JPEG_QUALITY)


def split_counts(splits: Dict[str, List[str]], labels: Dict[str, List[str]]) -> Dict[str, Dict[str, object]]:
    """split -> images, images with >= 2 labels, its rarest class and that class's images, person images."""
    from mlkd_cache.data.voc import VOC_CLASSES

    table: Dict[str, Dict[str, object]] = {}
    for split in SPLITS:
        ids = splits[split]
        counts = {c: sum(c in labels[i] for i in ids) for c in VOC_CLASSES}
        rarest = min(VOC_CLASSES, key=lambda c: counts[c])
        multi = sum(len(labels[i]) >= 2 for i in ids)
        table[split] = dict(images=len(ids), multi=multi, rarest=rarest, rarest_images=counts[rarest], person=counts["person"])
    return table


def readme(n_listed: int, splits: Dict[str, List[str]], labels: Dict[str, List[str]], n_test: int, n_val: int) -> str:
    from mlkd_cache.data.voc import VOC_CLASSES

    kept = sum(len(ids) for ids in splits.values())
    per_class = ", ".join(f"{c} {sum(c in labels[i] for ids in splits.values() for i in ids):,}" for c in VOC_CLASSES)
    lines = [
        f"# voc2007-rf144, rebuilt: {kept:,} PASCAL VOC 2007 trainval photographs, multi-label, short side {SHORT_SIDE} px",
        "",
        "Built by `tools/build_voc_rf144.py` (mlkd-cache) from the official PASCAL VOC 2007 trainval",
        f"release (`VOCdevkit/VOC2007`, {n_listed:,} ids in `ImageSets/Main/trainval.txt`). The photographs",
        "are under the PASCAL VOC terms of use (research use).",
        "",
        f"- images: the ids whose annotation has at least one object ({n_listed - kept:,} without one left out),",
        "  named by their VOC id (`images/000005.jpg`);",
        "- labels: the set of classes of the annotation's objects (the 20 VOC classes), `difficult`",
        "  objects included, `<part>` elements not objects (the rule of the `voc` dataset);",
        f"- resized so that the short side is {SHORT_SIDE} px (Pillow LANCZOS, long side rounded half up), RGB,",
        f"  JPEG quality {JPEG_QUALITY}, metadata stripped;",
        f"- split by the VOC id, not by label: {split_rule(n_test, n_val)}.",
        "  `train.csv`, `val.csv`, `test.csv`: columns `image,labels`, labels joined with `;`, rows by id.",
        "",
        "| split | images | with ≥ 2 labels | rarest class | person |",
        "|---|---:|---:|---|---:|",
        *(
            f"| {split} | {c['images']:,} | {c['multi']:,} | {c['rarest']} {c['rarest_images']:,} | {c['person']:,} |"
            for split, c in split_counts(splits, labels).items()
        ),
        "",
        f"Images per class: {per_class}.",
        "",
        "These are not the labels nor the split of the shared copy the project's published figures",
        "were measured on (a public re-export's labels, a split rule not recorded): compare figures",
        "between runs on the same folder.",
        "",
    ]
    return "\n".join(lines)


def build(voc: Path, out: Path, n_test: int, n_val: int) -> None:
    from mlkd_cache.data.voc import read_image_set

    ids = read_image_set(str(voc / "ImageSets" / "Main" / "trainval.txt"))
    if not ids:
        raise Refused(f"{voc / 'ImageSets' / 'Main' / 'trainval.txt'} lists no image; re-extract the VOC archive")
    if len(set(ids)) != len(ids):
        raise Refused(f"{voc / 'ImageSets' / 'Main' / 'trainval.txt'} lists some id twice; re-extract the VOC archive")
    photos = set(os.listdir(voc / "JPEGImages"))
    missing = [i for i in ids if f"{i}.jpg" not in photos]
    if missing:
        raise Refused(
            f"{len(missing):,} of {len(ids):,} photographs missing from {voc / 'JPEGImages'}, "
            f"first: {missing[0]}.jpg; re-extract the VOC archive"
        )
    labels = read_labels(voc, ids)
    kept = [i for i in ids if labels[i]]
    print(f"{voc}: {len(ids):,} ids in trainval.txt, {len(kept):,} with at least one object (difficult ones count)")
    if n_test + n_val >= len(kept):
        raise Refused(f"--test {n_test} and --val {n_val} leave no training image among {len(kept):,}; lower them")
    splits = assign_splits(kept, n_test, n_val)
    print(f"split: {split_rule(n_test, n_val)}")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's folder is private; OUT gets the permissions of a plain mkdir
    try:
        (tmp / "images").mkdir()
        start = time.perf_counter()
        for n, image_id in enumerate(sorted(kept), 1):
            write_photograph(voc / "JPEGImages" / f"{image_id}.jpg", tmp / "images" / f"{image_id}.jpg")
            if n % 500 == 0 or n == len(kept):
                print(f"  {n:,}/{len(kept):,} photographs resized ({time.perf_counter() - start:.0f} s)", flush=True)
        for split in SPLITS:
            rows = "".join(f"images/{i}.jpg,{';'.join(labels[i])}\n" for i in splits[split])
            (tmp / f"{split}.csv").write_text("image,labels\n" + rows, encoding="utf-8")
        (tmp / "README.md").write_text(readme(len(ids), splits, labels, n_test, n_val), encoding="utf-8")
        if out.exists():
            raise Refused(f"{out} appeared while building; nothing written there")
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for split, c in split_counts(splits, labels).items():
        print(
            f"{split}.csv: {c['images']:,} images, {c['multi']:,} with >= 2 labels, "
            f"rarest class {c['rarest']} ({c['rarest_images']:,}), person {c['person']:,}"
        )
    print(f"wrote {out} (images/, train.csv, val.csv, test.csv, README.md)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Build voc2007-rf144 (short side 144 px, train/val/test csv files) from the official VOC 2007 trainval release.",
    )
    parser.add_argument("vocdevkit", type=Path, help="the extracted VOC 2007 trainval release (VOCdevkit, or VOCdevkit/VOC2007)")
    parser.add_argument("out", type=Path, help="the folder to create (must not exist)")
    parser.add_argument("--test", type=positive_int, default=1000, help="images in test.csv (default 1000)")
    parser.add_argument("--val", type=positive_int, default=500, help="images in val.csv (default 500)")
    args = parser.parse_args(argv)
    try:
        voc = find_voc2007(args.vocdevkit)
        if voc is None:
            raise Refused(
                f"no VOC 2007 release at {args.vocdevkit}: expected VOCdevkit/VOC2007 with "
                "JPEGImages/, Annotations/ and ImageSets/Main/trainval.txt (the extracted VOCtrainval_06-Nov-2007.tar)"
            )
        if args.out.exists():
            raise Refused(f"{args.out} exists; name a new folder (this script never writes into an existing one)")
        # the library (and torch with it) is imported after these checks, so that they answer at once
        from mlkd_cache.errors import MlkdError

        try:
            build(voc, args.out, args.test, args.val)
        except MlkdError as e:
            raise Refused(str(e)) from None
    except Refused as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
