"""Build ``coco2017-tiny`` (100 real COCO 2017 images in the official layout) from an official COCO 2017 download.

::

    python tools/build_coco_tiny.py COCO2017 OUT [--names FILE]

``COCO2017`` holds the official download extracted (``train2017.zip``, ``val2017.zip``,
``annotations_trainval2017.zip``): ``train2017/``, ``val2017/`` and
``annotations/instances_{train,val}2017.json``. ``OUT`` is a new folder, written as::

    OUT/train2017/*.jpg    the 50 images of TRAIN_NAMES, copied unchanged
    OUT/val2017/*.jpg      the 50 images of VAL_NAMES, copied unchanged
    OUT/annotations/instances_{train,val}2017.json

Each annotation file is the official one filtered to those images, in the official instances
format: ``info``, ``licenses`` and ``categories`` (all 80) unchanged, ``images`` the entries of
those file names and ``annotations`` the entries of their ids, both in the official file's order.
An image without annotations stays (``build_dataset`` gives it an all-zero label row).
``mlkd_cache.data.build_dataset("coco", split, root=OUT)`` reads the folder (train = train2017,
test = val2017).

The file names below are those of the shared copy ``../shared/data/coco2017-tiny`` (its
``train2017/`` and ``val2017/``, sorted). ``--names FILE`` takes others: one ``train2017/NAME`` or
``val2017/NAME`` per line, at least one of each folder.

Each annotation file is read whole: ``instances_train2017.json`` (about 450 MB) takes a minute
and several GB of memory, as with pycocotools. Everything is written to a temporary folder next
to ``OUT`` and renamed at the end, so a folder named ``OUT`` is complete. A ``COCO2017`` folder
missing an annotation file or any of the images (on disk or in its annotation file), an ``OUT``
that exists or a malformed ``--names`` file: one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

PROG = "build_coco_tiny.py"
FOLDERS = ("train2017", "val2017")

# The images of ../shared/data/coco2017-tiny: file names without ".jpg", sorted.
TRAIN_IDS = """
000000005802 000000012448 000000051191 000000060623 000000060760 000000079841 000000086408 000000111076 000000113588 000000118113
000000144941 000000166532 000000173350 000000184613 000000191381 000000193271 000000204805 000000222564 000000223648 000000224736
000000242611 000000262284 000000269105 000000293802 000000294832 000000309022 000000318219 000000324266 000000328757 000000337264
000000360772 000000368402 000000372938 000000374628 000000384213 000000384553 000000386164 000000391895 000000403013 000000412151
000000462565 000000483108 000000515289 000000522418 000000540186 000000542145 000000554625 000000562150 000000574769 000000579003
"""
VAL_IDS = """
000000006818 000000017627 000000025560 000000037777 000000041888 000000058636 000000085329 000000087038 000000122745 000000143931
000000153299 000000174482 000000181666 000000184321 000000184791 000000219578 000000226111 000000233771 000000239274 000000252219
000000286994 000000289393 000000296649 000000297343 000000303818 000000308394 000000314294 000000322864 000000329323 000000331352
000000336587 000000348881 000000386912 000000397133 000000403385 000000403817 000000418281 000000443303 000000456496 000000458054
000000460347 000000463730 000000480985 000000491497 000000500663 000000502136 000000511321 000000522713 000000555705 000000565778
"""
TRAIN_NAMES = tuple(f"{i}.jpg" for i in TRAIN_IDS.split())
VAL_NAMES = tuple(f"{i}.jpg" for i in VAL_IDS.split())
DEFAULT_NAMES: Dict[str, Sequence[str]] = {"train2017": TRAIN_NAMES, "val2017": VAL_NAMES}


class Refused(Exception):
    """A user's mistake: printed as one line, exit code 2."""


def annotation_file(folder: str) -> str:
    """``annotations/instances_train2017.json`` for ``train2017``, relative to the root."""
    return os.path.join("annotations", f"instances_{folder}.json")


def read_names(path: Path) -> Dict[str, List[str]]:
    """folder -> file names, from a ``--names`` file (``train2017/NAME`` lines)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise Refused(f"cannot read --names file {path}: {e}") from None
    names: Dict[str, List[str]] = {folder: [] for folder in FOLDERS}
    for number, line in enumerate(lines, 1):
        entry = line.strip()
        if not entry:
            continue
        folder, _, name = entry.partition("/")
        if folder not in names or not name or "/" in name:
            raise Refused(f"{path} line {number}: {entry!r} is not train2017/NAME or val2017/NAME")
        if name in names[folder]:
            raise Refused(f"{path} line {number}: {entry} is listed twice")
        names[folder].append(name)
    for folder in FOLDERS:
        if not names[folder]:
            raise Refused(f"{path} lists no {folder} image; name at least one of each folder")
    return names


def check_source(root: Path, names: Dict[str, Sequence[str]]) -> None:
    """Refused unless ``root`` has both annotation files and every named image file."""
    for folder in FOLDERS:
        if not (root / annotation_file(folder)).is_file():
            raise Refused(
                f"no COCO 2017 download at {root}: {root / annotation_file(folder)} is missing "
                "(expected train2017/, val2017/, annotations/instances_{train,val}2017.json)"
            )
    missing = [f"{folder}/{n}" for folder in FOLDERS for n in names[folder] if not (root / folder / n).is_file()]
    if missing:
        total = sum(len(v) for v in names.values())
        raise Refused(f"{len(missing)} of {total} images missing from {root}, first: {missing[0]}")


def filtered(path: Path, file_names: Sequence[str]) -> dict:
    """The instances file at ``path`` reduced to the images ``file_names`` and their annotations."""
    try:
        with open(path, "rb") as f:
            data = json.load(f)
        wanted = set(file_names)
        images = [im for im in data["images"] if im["file_name"] in wanted]
        ids = {im["id"] for im in images}
        annotations = [a for a in data["annotations"] if a["image_id"] in ids]
        kept = {
            "info": data["info"],
            "licenses": data["licenses"],
            "images": images,
            "annotations": annotations,
            "categories": data["categories"],
        }
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Refused(f"malformed JSON in {path}: {e}; re-download the annotations") from None
    except (KeyError, TypeError) as e:
        raise Refused(f"{path} is not an official instances file (missing {e}); re-download the annotations") from None
    found = {im["file_name"] for im in images}
    absent = [n for n in file_names if n not in found]
    if absent:
        raise Refused(f"{len(absent)} of the images are not in {path}, first: {absent[0]}; is it the COCO 2017 release?")
    if len(images) != len(found):
        raise Refused(f"{path} lists some of the images twice; re-download the annotations")
    return kept


def build(root: Path, out: Path, names: Dict[str, Sequence[str]]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's folder is private; OUT gets the permissions of a plain mkdir
    try:
        (tmp / "annotations").mkdir()
        for folder in FOLDERS:
            (tmp / folder).mkdir()
            for name in names[folder]:
                shutil.copyfile(root / folder / name, tmp / folder / name)
            print(f"{folder}: copied {len(names[folder])} images")
            source = root / annotation_file(folder)
            print(f"reading {source}", flush=True)
            kept = filtered(source, names[folder])
            with open(tmp / annotation_file(folder), "w", encoding="utf-8") as f:
                json.dump(kept, f, separators=(",", ":"))
            unannotated = len(kept["images"]) - len({a["image_id"] for a in kept["annotations"]})
            print(
                f"{annotation_file(folder)}: {len(kept['images'])} images ({unannotated} without annotation), "
                f"{len(kept['annotations'])} annotations, {len(kept['categories'])} categories"
            )
        if out.exists():
            raise Refused(f"{out} appeared while building; nothing written there")
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"wrote {out}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Build coco2017-tiny (100 images) from an official COCO 2017 download."
    )
    parser.add_argument("coco2017", type=Path, help="the official COCO 2017 download: train2017/, val2017/, annotations/")
    parser.add_argument("out", type=Path, help="the folder to create (must not exist)")
    parser.add_argument(
        "--names",
        type=Path,
        default=None,
        help="a file of train2017/NAME and val2017/NAME lines (default: the 100 embedded names)",
    )
    args = parser.parse_args(argv)
    try:
        names = DEFAULT_NAMES if args.names is None else read_names(args.names)
        if args.out.exists():
            raise Refused(f"{args.out} exists; name a new folder (this script never writes into an existing one)")
        check_source(args.coco2017, names)
        build(args.coco2017, args.out, names)
    except Refused as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
