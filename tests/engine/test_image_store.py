"""The image store (``dump-targets --images raw|jpeg``) on real photographs, and the caches
written before it: the targets do not change, a student needs only the cache folder, and a
format-1 cache is still read."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from mlkd_cache.cache.format import dataset_shapes
from mlkd_cache.cache.reader import TargetCache
from mlkd_cache.cache.replay import CachedViews
from mlkd_cache.data.transforms import ReplayableTransform, fingerprint, to_float

from ..conftest import REPO, assert_one_line_error, run_cli_in_process, shared_data

pytestmark = pytest.mark.slow

CONFIG = (
    "dataset = 'coco'\nmodel_t = 'test_resnet'\nmodel_s = 'test_resnet'\nimg_size = 48\nbatch_size = 10\n"
    "embed_dim = 16\nworkers = 0\nlog_every = 0\nmax_epoch_t = 1\nmax_epoch_s = 1\nlr_t = 3e-3\nlr_s = 3e-3\n"
    "cache = dict(views=2, shard_size=32)\n"
)


def cli(*args):
    proc = run_cli_in_process([str(a) for a in args])
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def photo_caches(tmp_path_factory):
    """A teacher and three dumps of a copy of coco2017-tiny (no store, raw, jpeg q75); then the
    copy of the photographs is deleted: every later use has only the caches."""
    tmp = tmp_path_factory.mktemp("store")
    root = tmp / "coco"
    shutil.copytree(shared_data("coco2017-tiny"), root)
    cfg = tmp / "coco_tiny.py"
    cfg.write_text(CONFIG + f"data_root = {str(root)!r}\n")
    cli("teacher-train", "-c", cfg, "--no-progress", "-o", tmp / "teacher")
    teacher = tmp / "teacher" / "teacher.pt"
    dumps = {}
    for mode in ("none", "raw", "jpeg"):
        dumps[mode] = tmp / f"cache-{mode}"
        cli(
            "dump-targets", "-c", cfg, "-t", teacher, "-o", dumps[mode], "--images", mode, "--jpeg-quality", "75", "--no-progress"
        )
    # a raw store of another V than the config's cache.views (2), as `dump-targets --views 3` makes it
    dumps["raw3"] = tmp / "cache-raw3"
    cli("dump-targets", "-c", cfg, "-t", teacher, "-o", dumps["raw3"], "--images", "raw", "--views", "3", "--no-progress")
    # a rerun into the raw cache keeps its shards and eval parts (judged by attributes and sha256)
    rerun = cli("dump-targets", "-c", cfg, "-t", teacher, "-o", dumps["raw"], "--images", "raw", "--no-progress").stdout
    # the no-store student, trained from the photographs, as the reference of the raw store's
    cli("distill-student", "-c", cfg, "--cache", dumps["none"], "-o", tmp / "from-folder", "--no-progress")
    shutil.rmtree(root)
    return {"tmp": tmp, "cfg": cfg, "teacher": teacher, "rerun": rerun, **dumps}


def target_datasets(path):
    """Every dataset of a shard but the image store's, by name."""
    with h5py.File(path, "r") as f:
        return {name: f[name][()] for name in f if name not in ("images", "jpeg", "jpeg_offsets")}


def test_the_store_leaves_every_target_bit_as_it_was(photo_caches):
    """raw: the targets of every shard are the no-store dump's bit for bit (the views are made
    from the same pixels), and so are the attributes but the store's own; jpeg: views are made
    from the decoded JPEG, so only the data-side datasets stay (keys, labels, seeds)."""
    for k in range(2):  # 50 train photographs, shards of 32
        name = f"shard-0000{k}.h5"
        plain, raw, jpeg = (target_datasets(photo_caches[m] / name) for m in ("none", "raw", "jpeg"))
        assert plain.keys() == raw.keys() == jpeg.keys()
        for key in plain:
            assert np.array_equal(plain[key], raw[key]), key
        for key in ("keys", "labels", "view_seed", "emb_class", "emb_offsets"):
            assert np.array_equal(plain[key], jpeg[key]), key
        assert not np.array_equal(plain["fingerprint"], jpeg["fingerprint"])  # other pixels: other fingerprints
        with h5py.File(photo_caches["none"] / name) as a, h5py.File(photo_caches["raw"] / name) as b:
            assert "images" not in a.attrs  # a cache without a store keeps the attributes caches always had
            assert {k for k in b.attrs if k not in a.attrs} == {"images", "jpeg_quality"}
            assert all(np.array_equal(a.attrs[k], b.attrs[k]) for k in a.attrs if k != "created")


def test_stored_pixels_are_the_prepared_images_and_replay_from_them(photo_caches):
    """Every stored image is the decoded, resized photograph (raw) or its JPEG (whose decoding the
    teacher saw); the fingerprints of views replayed from the store equal the cached ones."""
    raw, jpeg = TargetCache(photo_caches["raw"]), TargetCache(photo_caches["jpeg"])
    for cache in (raw, jpeg):
        split = cache.stored_split("train")
        assert split.keys == cache.keys and np.array_equal(split.labels, cache.labels)
        transform = ReplayableTransform(cache.spec.transform_spec)
        got = cache.get(np.arange(len(split)), np.ones(len(split), dtype=np.int64))["fingerprint"]
        for i in range(0, len(split), 7):
            pixels = transform.pixels(split.load_image(i), cache.get([i], [1])["view_seed"].item())
            assert to_float(pixels, (0, 0, 0), (1, 1, 1)).shape == (3, 48, 48)
            assert fingerprint(pixels) == int(got[i]) % 2**64
        held = cache.stored_split("eval")
        assert held.split == "test" and len(held) == 50 and held.class_names == list(cache.spec.class_names)
    a, b = raw.stored_split("train"), jpeg.stored_split("train")
    diff = np.abs(np.asarray(a.load_image(3), np.int16) - np.asarray(b.load_image(3), np.int16))
    assert 0 < diff.mean() < 8  # q75 JPEG: close to the raw pixels, not equal


def test_students_need_only_the_cache(photo_caches):
    """With the photographs gone: offline (replay_check=1.0) from a raw store gives the very
    student the no-store cache gave from the photographs; a jpeg store trains and scores too;
    the no-KD and online baselines read the same store; a student without a store is refused."""
    tmp, cfg = photo_caches["tmp"], photo_caches["cfg"]
    cli(
        "distill-student",
        "-c",
        cfg,
        "--cache",
        photo_caches["raw"],
        "-o",
        tmp / "raw",
        "--set",
        "replay_check=1.0",
        "--no-progress",
    )
    ref = torch.load(tmp / "from-folder" / "student.pt", map_location="cpu", weights_only=True)
    got = torch.load(tmp / "raw" / "student.pt", map_location="cpu", weights_only=True)
    assert all(torch.equal(ref["model"][k], got["model"][k]) for k in ref["model"])
    assert got["metrics"] == ref["metrics"] and got["card"]["provenance"]["images"].startswith("raw store")
    rows = [json.loads(line) for line in (tmp / "raw" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["replay_checked"] == 50

    out = cli(
        "distill-student",
        "-c",
        cfg,
        "--cache",
        photo_caches["jpeg"],
        "-o",
        tmp / "jpeg",
        "--set",
        "replay_check=1.0",
        "--no-progress",
    )
    assert "test mAP" in out.stdout and "images from the jpeg store" in out.stdout
    for flags, name in ((["--no-kd"], "nokd"), (["-t", photo_caches["teacher"]], "online")):
        out = cli("distill-student", "-c", cfg, "--cache", photo_caches["raw"], *flags, "-o", tmp / name, "--no-progress")
        assert "images from the raw store" in out.stdout
    refused = run_cli_in_process(
        ["distill-student", "-c", str(cfg), "--cache", str(photo_caches["none"]), "--no-kd", "-o", str(tmp / "x")]
    )
    assert_one_line_error(refused, "holds no images")
    refused = run_cli_in_process(["distill-student", "-c", str(cfg), "--cache", str(photo_caches["none"]), "-o", str(tmp / "y")])
    assert_one_line_error(refused, "data root not found")  # no store, no photographs: the folder is named
    other = run_cli_in_process(
        [
            "distill-student",
            "-c",
            str(cfg),
            "--cache",
            str(photo_caches["raw"]),
            "--set",
            "eval_split='val'",
            "-o",
            str(tmp / "z"),
        ]
    )
    assert other.returncode == 2 and "stores the test split" in other.stderr


def test_online_on_a_store_replays_that_caches_views(photo_caches):
    """The online twin of a cache dumped with --views 3 (the config says 2) replays 3 views from
    the cache's base seed, as the offline student from it does; a --views that differs is refused."""
    tmp, cfg = photo_caches["tmp"], photo_caches["cfg"]
    spec = TargetCache(photo_caches["raw3"]).spec
    assert spec.views == 3
    args = ["distill-student", "-c", cfg, "-t", photo_caches["teacher"], "--cache", photo_caches["raw3"], "--no-progress"]
    out = cli(*args, "-o", tmp / "online3")
    assert "(3 views)" in out.stdout
    card = torch.load(tmp / "online3" / "student.pt", map_location="cpu", weights_only=True)["card"]
    assert card["provenance"]["distill"]["views"] == 3 and card["provenance"]["distill"]["base_seed"] == spec.base_seed
    refused = run_cli_in_process([str(a) for a in [*args, "--views", "2", "-o", tmp / "online2"]])
    assert_one_line_error(refused, "holds 3 views")
    refused = run_cli_in_process(
        [str(a) for a in ["distill-student", "-c", cfg, "--cache", photo_caches["raw3"], "--views", "2"]]
    )
    assert_one_line_error(refused, "drop --views")


def test_inspect_verify_and_the_api_read_the_store(photo_caches):
    out = cli("inspect", photo_caches["jpeg"])
    assert "images     jpeg quality 75 at 48 px: 50 train + 50 test" in out.stdout
    assert "not stored" in cli("inspect", photo_caches["none"]).stdout
    out = cli("verify", photo_caches["raw"], "-t", photo_caches["teacher"], "-k", "8")
    assert "input fingerprints: 8/8 equal" in out.stdout and "verify passed" in out.stdout
    views = CachedViews.from_cache(photo_caches["jpeg"], replay_check=1.0, image_dtype="uint8")
    loader = torch.utils.data.DataLoader(views, 10, sampler=views.sampler(), num_workers=2, collate_fn=views.collate)
    batch = next(iter(loader))
    assert batch.image.dtype == torch.uint8 and views.to_input(batch.image, "cpu").dtype == torch.float32
    assert views.targets(batch, "cpu")["z_t"].shape == (10, 80) and views.checked == 10
    assert len(views.eval_split()) == 50


def test_a_rerun_keeps_the_stored_parts_and_a_dry_run_plans_every_mode(photo_caches, tmp_path):
    assert "0 shard(s) written, 2 already complete" in photo_caches["rerun"]
    manifest = json.loads((photo_caches["raw"] / "manifest.json").read_text())
    assert manifest["eval"]["split"] == "test" and [e["file"] for e in manifest["eval"]["shards"]] == [
        "eval-00000.h5",
        "eval-00001.h5",
    ]
    shapes = dataset_shapes(TargetCache(photo_caches["raw"]).spec, 32, 0)
    assert shapes["images"] == ((32, 48, 48, 3), 1)
    cfg = tmp_path / "c.py"
    cfg.write_text(CONFIG + f"data_root = {str(shared_data('coco2017-tiny'))!r}\n")
    out = cli("dump-targets", "-c", cfg, "--dry-run", "--images", "jpeg")
    assert "images     50 train + 50 eval: raw 675.0 KiB" in out.stdout and "jpeg q90 about" in out.stdout


def test_a_format_1_cache_is_still_read():
    """tests/fixtures/cache-v1 was written by the code before the store (its fingerprints hash the
    float32 input): a student replays it with every fingerprint checked."""
    fixture = REPO / "tests" / "fixtures" / "cache-v1"
    cache = TargetCache(fixture / "cache", verify_checksums=True)
    assert cache.format_version == 1 and cache.fingerprint_of == "float32" and not cache.spec.stores_images
    views = CachedViews.from_cache(fixture / "cache", replay_check=1.0)
    loader = torch.utils.data.DataLoader(views, 8, sampler=views.sampler(shuffle=False), collate_fn=views.collate)
    for batch in loader:
        views.targets(batch, "cpu")
    assert views.checked == 24
    views.view_data.fingerprint_of = "uint8"  # read as a format-2 cache, every replay would differ
    with pytest.raises(Exception, match="replay diverged"):
        views.targets(next(iter(loader)), "cpu")


def test_a_store_refuses_a_config_of_other_data_or_other_preparation(photo_caches, tmp_path):
    """With a store, the config must describe the stored split (dataset_para as dumped) and the
    stored images' preparation (img_size); an eval part belongs to one version of its split; a
    jpeg store never replays from the photographs."""
    from mlkd_cache.cache.format import split_digest
    from mlkd_cache.cache.writer import eval_is_complete
    from mlkd_cache.errors import CacheMismatchError

    cfg, raw = str(photo_caches["cfg"]), str(photo_caches["raw"])
    proc = run_cli_in_process(
        ["distill-student", "-c", cfg, "--cache", raw, "--set", "dataset_para=dict(year=2017)", "-o", str(tmp_path / "a")]
    )
    assert_one_line_error(proc, r"stores the images of dataset_para \{\}, the config asks for \{'year': 2017\}")
    proc = run_cli_in_process(
        ["distill-student", "-c", cfg, "--cache", raw, "--no-kd", "--set", "img_size=64", "-o", str(tmp_path / "b")]
    )
    assert_one_line_error(proc, r"prepared with img_size 48, the config asks for 64")
    cache = TargetCache(photo_caches["raw"])
    held = cache.stored_split("eval")
    digest = split_digest(held.keys, held.labels)
    part = photo_caches["raw"] / "eval-00000.h5"
    assert eval_is_complete(part, cache.spec, "test", 0, 0, 32, 50, digest)
    assert not eval_is_complete(part, cache.spec, "test", 0, 0, 32, 50, split_digest(held.keys[::-1], held.labels))
    with pytest.raises(CacheMismatchError, match="stored JPEG pixels"):
        CachedViews.from_cache(photo_caches["jpeg"], data_root=str(tmp_path))
