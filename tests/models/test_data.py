"""Image sets: built-in data, the stored form (re-encoding, sizes, statistics, pixel cache), benchmark
layouts, the zero-shot split and the P×K sampler."""
import json
import re
from collections import Counter

import numpy as np

import pytest
import torch
from tests.support.benchmarks import cars_tree, cub_tree, inshop_tree, sop_tree
from tests.support.images import class_files, encode, solid
from PIL import Image

from models.config import SplitConfig
from models.data import (BENCHMARKS, BUILTIN_DATASETS, DatasetError, ImageSet, MPerClassSampler, export_zip,
                         fit_square, import_benchmark, import_builtin, import_files, import_zip, zero_shot_split)


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    return import_builtin("mnist5k", tmp_path_factory.mktemp("mnist") / "set").image_set


@pytest.fixture
def shapes(tmp_path):
    return import_builtin("synthetic", tmp_path / "shapes", num_classes=6, per_class=5, size=16).image_set


# ---- built-in sets ----

def test_builtin_names():
    assert set(BUILTIN_DATASETS) == {"mnist5k", "digits", "synthetic"}


@pytest.mark.slow
def test_mnist5k(mnist):
    assert len(mnist) == 5000 and mnist.class_names == [str(d) for d in range(10)]
    assert np.bincount(mnist.labels).tolist() == [500] * 10
    assert (mnist.channels, mnist.native_size) == (1, 28)
    assert mnist.mean[0] == pytest.approx(0.131, abs=0.005) and mnist.std[0] == pytest.approx(0.308, abs=0.005)
    px = mnist.pixels(28)
    assert px.shape == (5000, 1, 28, 28) and px.dtype == np.uint8 and px.max() == 255
    assert px.mean() / 255 == pytest.approx(mnist.mean[0], abs=1e-4)


def test_digits_are_scaled_to_full_range(tmp_path):
    s = import_builtin("digits", tmp_path / "d").image_set
    assert (len(s), len(s.class_names), s.native_size, s.channels) == (1797, 10, 8, 1)
    assert s.pixels(8).max() == 255


def test_synthetic_is_deterministic_by_seed(tmp_path, shapes):
    again = import_builtin("synthetic", tmp_path / "again", num_classes=6, per_class=5, size=16).image_set
    other = import_builtin("synthetic", tmp_path / "other", num_classes=6, per_class=5, size=16, seed=1).image_set
    assert np.array_equal(shapes.pixels(16), again.pixels(16))
    assert not np.array_equal(shapes.pixels(16), other.pixels(16))
    assert (shapes.channels, len(shapes.class_names), len(set(shapes.class_names))) == (3, 6, 6)


def test_builtin_errors(tmp_path):
    with pytest.raises(DatasetError, match="unknown built-in data set 'cifar'; choose one of: mnist5k"):
        import_builtin("cifar", tmp_path / "x")
    with pytest.raises(DatasetError, match="takes no parameters"):
        import_builtin("digits", tmp_path / "x", seed=3)
    with pytest.raises(DatasetError, match="num_classes must be 2..48"):
        import_builtin("synthetic", tmp_path / "x", num_classes=49)


def test_export_zip_round_trips(tmp_path, shapes):
    report = import_zip(export_zip(shapes, tmp_path / "shapes.zip"), tmp_path / "back")
    assert report.skipped == [] and report.image_set.class_names == shapes.class_names
    assert np.array_equal(report.image_set.pixels(16), shapes.pixels(16))


# ---- the stored form ----

def test_stored_layout_thumbnails_and_downscale(tmp_path):
    files = class_files(2, 2, size=(600, 300))
    s = import_files(files, tmp_path / "set", max_side=128).image_set
    assert json.loads((s.root / "meta.json").read_text())["max_side"] == 128
    with Image.open(s.image_path(0)) as im, Image.open(s.thumbnail_path(0)) as thumb:
        assert (im.format, im.size, thumb.size) == ("PNG", (128, 64), (64, 32))
    assert s.native_size is None  # not square
    assert sorted(p.name for p in s.root.iterdir()) == ["images", "meta.json", "thumbs"]


def test_mixed_grey_and_colour_becomes_rgb_and_all_grey_becomes_l(tmp_path):
    grey_rgb = encode(Image.new("RGB", (8, 8), (70, 70, 70)))  # RGB file, grey content
    grey = [("a/1.png", grey_rgb), ("a/2.png", solid(70, mode="L")), ("b/1.png", solid(200, mode="L")),
            ("b/2.png", solid(190, mode="L"))]
    assert import_files(grey, tmp_path / "grey").image_set.channels == 1
    mixed = import_files(grey[:3] + [("b/2.png", solid((200, 10, 10)))], tmp_path / "mixed").image_set
    assert mixed.channels == 3 and len(mixed.mean) == 3
    with Image.open(mixed.image_path(1)) as im, Image.open(mixed.thumbnail_path(1)) as thumb:
        assert im.mode == thumb.mode == "RGB"


def test_mean_and_std_are_per_channel_on_the_unit_scale(tmp_path):
    def flat(rgb):
        return encode(Image.new("RGB", (4, 4), rgb))

    files = [("a/1.png", flat((255, 0, 0))), ("a/2.png", flat((255, 0, 0))),
             ("b/1.png", flat((0, 0, 255))), ("b/2.png", flat((0, 0, 255)))]
    s = import_files(files, tmp_path / "set").image_set
    assert s.mean == pytest.approx((0.5, 0.0, 0.5)) and s.std == pytest.approx((0.5, 0.0, 0.5))


def test_labels_follow_natural_class_order(tmp_path):
    files = [(f"class{c}/{k}.png", solid(c % 6, seed=k)) for c in (10, 9, 2) for k in range(2)]
    s = import_files(files, tmp_path / "set").image_set
    assert s.class_names == ["class2", "class9", "class10"]
    assert s.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert s.paths[0] == "class2/0.png"


def test_destination_must_be_new_and_meta_is_required(tmp_path, shapes):
    with pytest.raises(DatasetError, match="already exists"):
        import_files(class_files(), shapes.root)
    with pytest.raises(DatasetError, match="meta.json is missing"):
        ImageSet(tmp_path)


def test_fit_square_crops_the_centre_after_resizing_the_short_side():
    arr = np.zeros((4, 12), dtype=np.uint8)
    arr[:, 4:8] = 255  # a white centre third
    out = np.asarray(fit_square(Image.fromarray(arr), 4))
    assert out.shape == (4, 4) and (out == 255).all()
    assert np.asarray(fit_square(Image.fromarray(arr.T), 2)).shape == (2, 2)


def test_pixel_cache_is_written_reused_and_rebuilt(shapes):
    px = shapes.pixels(12)
    cache = shapes.root / "cache_12.npy"
    assert cache.is_file() and px.shape == (30, 3, 12, 12)
    assert shapes.pixels(12) is px  # in memory
    assert np.array_equal(ImageSet(shapes.root).pixels(12), px)  # from disk
    cache.write_bytes(b"damaged")
    assert np.array_equal(ImageSet(shapes.root).pixels(12), px)
    assert [p.name for p in shapes.root.iterdir() if p.name.endswith(".tmp")] == []


def test_query_pixels_prepare_an_upload_like_the_training_images(shapes):
    data = shapes.image_path(7).read_bytes()
    assert np.array_equal(shapes.query_pixels(data, 12), shapes.pixels(12)[7])
    with pytest.raises(DatasetError, match="query image cannot be used: not an image"):
        shapes.query_pixels(b"text", 12)


# ---- benchmarks in their published layouts ----

def test_cub_layout(tmp_path):
    cub_tree(tmp_path / "cub", n_classes=4, per_class=3)
    s = import_benchmark("cub200", tmp_path / "cub", tmp_path / "set").image_set
    assert s.class_names == ["001.Bird_1", "002.Bird_2", "003.Bird_3", "004.Bird_4"]
    assert s.split.tolist() == [True] * 6 + [False] * 6  # classes 1..C/2 train
    assert s.paths[0] == "images/001.Bird_1/Bird_1_0.jpg"


@pytest.mark.parametrize("devkit", [False, True])
def test_cars_layouts(tmp_path, devkit):
    cars_tree(tmp_path / "cars", n_classes=4, per_class=2, devkit=devkit)
    s = import_benchmark("cars196", tmp_path / "cars", tmp_path / "set").image_set
    assert s.class_names == [f"Make {c} Model/V {2000 + c}" for c in range(1, 5)]
    assert s.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert s.split.tolist() == [True] * 4 + [False] * 4


def test_sop_layout_and_predefined_split(tmp_path):
    sop_tree(tmp_path / "sop")
    s = import_benchmark("sop", tmp_path / "sop", tmp_path / "set").image_set
    assert s.class_names == ["bicycle 1", "chair 2", "mug 3", "lamp 4"]
    train, test = zero_shot_split(s, SplitConfig(mode="predefined"))
    assert train.tolist() == [0, 1, 2, 3] and test.tolist() == [4, 5, 6, 7]


@pytest.mark.parametrize("eval_folder", [True, False])
def test_inshop_layout_trains_on_train_and_tests_on_query_plus_gallery(tmp_path, eval_folder):
    inshop_tree(tmp_path / "inshop", eval_folder=eval_folder)
    s = import_benchmark("inshop", tmp_path / "inshop", tmp_path / "set").image_set
    assert s.class_names == ["id_00000001", "id_00000007", "id_00000012", "id_00000030"]
    assert s.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert s.paths[0] == "img/WOMEN/Dresses/id_00000001/00_1_front.jpg"
    train, test = zero_shot_split(s, SplitConfig(mode="predefined"))
    assert train.tolist() == [0, 1, 2, 3] and test.tolist() == [4, 5, 6, 7]


def test_inshop_errors_name_the_file_and_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="list_eval_partition.txt is missing .*In-Shop"):
        import_benchmark("inshop", tmp_path / "empty", tmp_path / "set")
    inshop_tree(tmp_path / "bad", eval_folder=False)
    listing = tmp_path / "bad" / "list_eval_partition.txt"
    listing.write_text(listing.read_text() + "img/x.jpg id_00000099 validation\n")
    with pytest.raises(DatasetError, match=re.escape("line 11 is not 'img/… id_NNNNNNNN train|query|gallery'")):
        import_benchmark("inshop", tmp_path / "bad", tmp_path / "set")


def test_benchmark_errors_say_what_is_missing(tmp_path):
    assert set(BENCHMARKS) == {"cub200", "cars196", "sop", "inshop"}
    cub_tree(tmp_path / "cub")
    (tmp_path / "cub" / "CUB_200_2011" / "classes.txt").unlink()
    with pytest.raises(DatasetError, match="classes.txt is missing; the CUB-200-2011 layout"):
        import_benchmark("cub200", tmp_path / "cub", tmp_path / "set")
    with pytest.raises(DatasetError, match="does not look like the Cars196 layout"):
        import_benchmark("cars196", tmp_path / "cub", tmp_path / "set")
    with pytest.raises(DatasetError, match="unknown benchmark 'imagenet'; choose one of: cub, cars, cub200"):
        import_benchmark("imagenet", tmp_path, tmp_path / "set")


def test_benchmark_missing_image_is_skipped(tmp_path):
    cub_tree(tmp_path / "cub", n_classes=4, per_class=3)
    (tmp_path / "cub" / "CUB_200_2011" / "images" / "002.Bird_2" / "Bird_2_0.jpg").unlink()
    report = import_benchmark("cub200", tmp_path / "cub", tmp_path / "set")
    assert [s.path for s in report.skipped] == ["images/002.Bird_2/Bird_2_0.jpg"]
    assert "cannot be read" in report.skipped[0].reason and len(report.image_set) == 11


# ---- zero-shot split ----

def test_first_half_splits_classes_in_order(mnist):
    train, test = zero_shot_split(mnist, SplitConfig())
    assert set(mnist.labels[train]) == {0, 1, 2, 3, 4} and set(mnist.labels[test]) == {5, 6, 7, 8, 9}
    assert len(train) + len(test) == 5000 and np.all(np.diff(train) > 0)


def test_random_half_is_seeded_and_disjoint(mnist):
    a = zero_shot_split(mnist, SplitConfig(mode="random_half", seed=1))
    b = zero_shot_split(mnist, SplitConfig(mode="random_half", seed=1))
    c = zero_shot_split(mnist, SplitConfig(mode="random_half", seed=2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not set(mnist.labels[a[0]]) & set(mnist.labels[a[1]])
    assert len(set(mnist.labels[a[0]])) == 5
    assert set(mnist.labels[a[0]]) != set(mnist.labels[c[0]])


def test_split_errors(tmp_path, mnist):
    with pytest.raises(DatasetError, match="no predefined split"):
        zero_shot_split(mnist, SplitConfig(mode="predefined"))
    three = import_files(class_files(3, 2), tmp_path / "three").image_set
    with pytest.raises(DatasetError, match="needs 4 or more classes \\(it has 3\\)"):
        zero_shot_split(three, SplitConfig())


def test_odd_class_count_trains_on_the_larger_half(tmp_path):
    five = import_builtin("synthetic", tmp_path / "five", num_classes=5, per_class=2, size=8).image_set
    train, test = zero_shot_split(five, SplitConfig())
    assert set(five.labels[train]) == {0, 1, 2} and set(five.labels[test]) == {3, 4}


# ---- P×K sampler ----

def test_every_batch_is_p_classes_by_k_samples_from_the_given_indices():
    labels = np.repeat(np.arange(6), 10)
    indices = np.flatnonzero(labels < 4)[::2]  # classes 0..3, 5 images each
    sampler = MPerClassSampler(labels, indices, classes_per_batch=3, samples_per_class=4, num_batches=20,
                               generator=torch.Generator().manual_seed(0))
    batches = list(sampler)
    assert len(batches) == len(sampler) == 20
    allowed = set(indices.tolist())
    for batch in batches:
        counts = Counter(labels[batch].tolist())
        assert len(counts) == 3 and set(counts.values()) == {4}
        assert set(batch) <= allowed
        assert len(set(batch)) == 12  # 5 images per class ≥ K: no repeats


def test_small_classes_are_topped_up_with_replacement():
    labels = np.array([0, 0, 1, 1, 1, 1, 1, 1])
    sampler = MPerClassSampler(labels, np.arange(8), 2, 4, num_batches=5)
    for batch in sampler:
        zeros = [i for i in batch if labels[i] == 0]
        assert len(zeros) == 4 and set(zeros) == {0, 1}  # both images, then repeats


def test_sampler_is_deterministic_given_a_generator():
    labels = np.repeat(np.arange(8), 6)

    def draw(seed):
        return list(MPerClassSampler(labels, np.arange(48), 4, 3, 10, torch.Generator().manual_seed(seed)))

    assert draw(3) == draw(3) and draw(3) != draw(4)


def test_sampler_rejects_more_classes_than_available():
    with pytest.raises(DatasetError, match="only 2 classes; lower classes_per_batch to at most 2"):
        MPerClassSampler(np.array([0, 0, 1, 1]), np.arange(4), 3, 2, 1)
