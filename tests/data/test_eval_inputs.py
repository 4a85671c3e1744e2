"""The one eval input pipeline (``eval_inputs``): a split's samples and loose image files are
decoded, resized and converted alike, the reduced-size JPEG decode included, on real photographs
(../shared/data/coco2017-tiny)."""

from __future__ import annotations

import pytest
import torch

from mlkd_cache.data import build_dataset
from mlkd_cache.data.image_files import ImageFiles
from mlkd_cache.data.transforms import EvalTransform, TransformSpec, model_input
from mlkd_cache.data.views import eval_inputs
from mlkd_cache.errors import DataError

from ..conftest import shared_data


@pytest.fixture(scope="module")
def photos():
    root = shared_data("coco2017-tiny")
    return build_dataset("coco", "test", str(root))  # val2017: 50 photographs, 427-640 px a side


@pytest.mark.parametrize("decode", ["full", "reduced"])
def test_loose_files_see_what_the_split_sees(photos, decode):
    """ImageFiles of the split's own files gives every pixel the split's eval view gives, in the
    order the files were named; the float input made on the device is EvalTransform's, bit for bit."""
    spec = TransformSpec(img_size=64, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), decode=decode)
    picks = [7, 0, 31]
    files = eval_inputs(ImageFiles([photos.image_paths[i] for i in picks]), spec)
    split = eval_inputs(photos, spec)
    assert len(files) == 3 and files.keys == [photos.image_paths[i] for i in picks]
    for j, i in enumerate(picks):
        item = files[j]
        assert item.image.dtype == torch.uint8 and item.image.shape == (3, 64, 64)
        assert torch.equal(item.image, split[i].image), i
    batch = torch.stack([files[j].image for j in range(3)])
    floats = model_input(batch, spec, torch.device("cpu"))
    reference = torch.stack([EvalTransform(spec)(photos.load_image(i, spec.decode_size)) for i in picks])
    assert torch.equal(floats, reference)


def test_reduced_decode_reaches_loose_files(photos):
    """decode='reduced' decodes a photograph over twice img_size at a fraction of its size: the
    loose file's pixels then differ from a full decode's (as a split's do), so the pipeline did
    not silently fall back to the full decode."""
    path = photos.image_paths[0]
    full = eval_inputs(ImageFiles([path]), TransformSpec(img_size=64))[0].image
    reduced = eval_inputs(ImageFiles([path]), TransformSpec(img_size=64, decode="reduced"))[0].image
    assert not torch.equal(full, reduced)
    # close in content all the same: the same photograph at the same size
    assert float((full.float() - reduced.float()).abs().mean()) < 8.0


def test_no_files_is_one_line():
    with pytest.raises(DataError, match="no image files given"):
        ImageFiles([])
