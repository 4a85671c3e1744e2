"""Real image quirks become the RGB picture a viewer shows, through the loader teacher and student
share: grayscale, CMYK and palette files, transparency, 16-bit PNG and EXIF-rotated phone photos,
all made from a real COCO 2017 photograph of ../shared/data/coco2017-tiny."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlkd_cache.data.base import EXIF_ORIENTATION, load_rgb

from ..conftest import shared_data

PHOTO = ("coco2017-tiny", "val2017", "000000397133.jpg")  # under ../shared/data: 640 x 427, RGB


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """The photograph's RGB pixels, uint8 [H, W, 3]."""
    with Image.open(shared_data(*PHOTO)) as im:
        assert im.mode == "RGB"
        return np.asarray(im.convert("RGB"))


def loaded(path: Path) -> np.ndarray:
    im = load_rgb(str(path))
    assert im.mode == "RGB"
    return np.asarray(im)


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_grayscale_jpeg_and_png(tmp_path, photo):
    gray = Image.fromarray(photo).convert("L")
    gray.save(tmp_path / "g.png")
    gray.save(tmp_path / "g.jpg", quality=95)
    rgb = loaded(tmp_path / "g.png")
    assert np.array_equal(rgb, np.repeat(np.asarray(gray)[..., None], 3, axis=2))
    jpg = loaded(tmp_path / "g.jpg")
    assert (jpg[..., 0] == jpg[..., 1]).all() and (jpg[..., 1] == jpg[..., 2]).all()
    assert mean_abs(jpg[..., 0], np.asarray(gray)) < 2.0


def test_cmyk_jpeg(tmp_path, photo):
    Image.fromarray(photo).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    with Image.open(tmp_path / "c.jpg") as im:
        assert im.mode == "CMYK"
    assert mean_abs(loaded(tmp_path / "c.jpg"), photo) < 3.0


def test_palette_png_with_and_without_transparency(tmp_path, photo):
    pal = Image.fromarray(photo).quantize(colors=256)
    pal.save(tmp_path / "p.png")
    assert mean_abs(loaded(tmp_path / "p.png"), photo) < 6.0  # 256 colours
    # palette entry 0 transparent: its pixels become white, the others keep their colour
    pal.save(tmp_path / "pt.png", transparency=0)
    index = np.asarray(pal)
    got, opaque = loaded(tmp_path / "pt.png"), np.asarray(pal.convert("RGB"))
    assert (index == 0).any() and (got[index == 0] == 255).all()
    assert np.array_equal(got[index != 0], opaque[index != 0])


def test_rgba_is_composited_on_white(tmp_path, photo):
    alpha = np.full(photo.shape[:2], 255, dtype=np.uint8)
    alpha[:, : photo.shape[1] // 2] = 0  # the left half transparent
    alpha[:10] = 128  # a half-transparent band
    Image.fromarray(np.dstack([photo, alpha]), "RGBA").save(tmp_path / "a.png")
    got = loaded(tmp_path / "a.png")
    right = photo.shape[1] // 2
    assert np.array_equal(got[10:, right:], photo[10:, right:])
    assert (got[10:, :right] == 255).all()
    band = (photo[:10].astype(np.int32) * 128 + 255 * 127 + 127) // 255
    assert np.abs(got[:10, right:].astype(np.int32) - band[:, right:]).max() <= 1


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path, photo):
    gray = np.asarray(Image.fromarray(photo).convert("L"))
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "16.png")  # the same picture in 16 bits
    with Image.open(tmp_path / "16.png") as im:
        assert im.mode.startswith("I")
    got = loaded(tmp_path / "16.png")
    assert np.array_equal(got[..., 0], gray) and np.array_equal(got[..., 2], gray)


@pytest.mark.parametrize(
    "orientation, undo", [(3, Image.Transpose.ROTATE_180), (6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270)]
)
def test_exif_rotated_phone_photo_is_upright(tmp_path, photo, orientation, undo):
    """A phone stores the sensor's pixels and an orientation tag; the loader shows them upright."""
    upright = Image.fromarray(photo)
    stored = upright.transpose(undo)  # what the camera wrote: orientation tag `orientation` turns it back
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    stored.save(tmp_path / "phone.jpg", quality=95, exif=exif)
    got = loaded(tmp_path / "phone.jpg")
    assert got.shape == photo.shape
    assert mean_abs(got, photo) < 3.0


@pytest.mark.slow
def test_teacher_and_student_see_the_same_pixels_of_every_quirk(tmp_path, photo):
    """A csv dataset of every quirk: the cache's fingerprints of the teacher's views match every
    student input (replay_check 1.0), so both stages decoded each file identically."""
    from mlkd_cache.commands import distill_student as distill
    from mlkd_cache.commands import dump_targets as dump
    from mlkd_cache.commands import teacher_train as teacher
    from mlkd_cache.config import load_config

    from ..conftest import tiny_config
    from .fixtures import make_csv_tree

    img = tmp_path / "csv" / "img"
    img.mkdir(parents=True)
    base = Image.fromarray(photo)
    base.convert("L").save(img / "gray.jpg")
    base.convert("CMYK").save(img / "cmyk.jpg")
    base.quantize(colors=64).save(img / "palette.png", transparency=0)
    Image.fromarray(np.dstack([photo, np.full(photo.shape[:2], 90, np.uint8)]), "RGBA").save(img / "rgba.png")
    Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257).save(img / "16bit.png")
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    base.transpose(Image.Transpose.ROTATE_90).save(img / "phone.jpg", exif=exif)
    files = ["gray.jpg", "cmyk.jpg", "palette.png", "rgba.png", "16bit.png", "phone.jpg"]
    root = make_csv_tree(
        tmp_path / "csv",
        train=[(f"img/{f}", ["a", "b"][: 1 + k % 2]) for k, f in enumerate(files)],
        test=[(f"img/{f}", ["a"]) for f in files[:2]],
    )
    cfg = load_config(
        tiny_config(
            tmp_path,
            dataset="'csv'",
            data_root=repr(str(root)),
            batch_size="2",
            max_epoch_t="1",
            max_epoch_s="2",
            dataset_para="dict(train_file='train.csv', test_file='test.csv')",
            cache="dict(views=2)",
            replay_check="1.0",
        )
    )
    teacher.run(cfg, tmp_path / "teacher", progress=False)
    dump.run(cfg, tmp_path / "teacher" / "teacher.pt", tmp_path / "cache", progress=False)
    result = distill.run(cfg, tmp_path / "student", cache=tmp_path / "cache", progress=False)
    assert result["epochs"] == 2  # a single differing pixel would have stopped it (replay check)
