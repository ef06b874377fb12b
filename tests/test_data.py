"""Tests of `lth.data`: built-in loaders on the real offline files, verification errors, the TFDS
path under `tfds.testing.mock_data`, and the on-device augmentation. Nothing here downloads."""

import gzip
import io
import os
import shutil
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth.config.schema import DatasetConfig
from lth.data import BUILTIN, DataError, Dataset, load_dataset, load_raw, split_validation
from lth.data import augment, checksums, idx, mnist1d
from lth.data.checksums import IDX_FILES


def need(data_dir, rel):
    path = os.path.join(data_dir, rel)
    if not os.path.exists(path):
        pytest.skip(f"{path} is not available")
    return path


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Keep the MNIST-1D fallback cache (~/.cache/lth) inside the test's tmp directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def mnist(data_dir):
    need(data_dir, "mnist")
    cfg = DatasetConfig(name="mnist", val_size=5000, split_seed=0)
    return load_raw(cfg, data_dir), load_dataset(cfg, data_dir)


@pytest.fixture(scope="module")
def cifar(data_dir):
    need(data_dir, "cifar10/cifar10.npz")
    return load_dataset(DatasetConfig(name="cifar10", val_size=5000), data_dir)


@pytest.fixture(scope="module")
def mnist1d_reference(data_dir):
    with np.load(need(data_dir, "mnist1d/mnist1d.npz")) as z:
        return {k: z[k] for k in z.files}


# ----------------------------------------------------------------------------- split and Dataset


def test_split_validation_is_a_seeded_partition():
    x, y = np.arange(100) * 10, np.arange(100)
    xt, yt, xv, yv = split_validation(x, y, 30, split_seed=7)
    perm = np.random.default_rng(7).permutation(100)
    np.testing.assert_array_equal(yv, perm[:30])
    np.testing.assert_array_equal(yt, np.sort(perm[30:]))  # the rest, in the original order
    np.testing.assert_array_equal(xt, yt * 10)
    assert set(yt).isdisjoint(yv) and sorted(np.concatenate([yt, yv])) == list(range(100))
    _, _, xv0, _ = split_validation(x, y, 0, split_seed=7)
    assert xv0.shape == (0,)
    with pytest.raises(DataError, match="val_size=100"):
        split_validation(x, y, 100, split_seed=0)


def test_normalize_works_on_numpy_and_jax():
    x = np.arange(24, dtype=np.uint8).reshape(2, 2, 2, 3)
    ds = Dataset("toy", x, np.zeros(2, np.int32), x[:0], np.zeros(0, np.int32), x, np.zeros(2, np.int32),
                 num_classes=2, mean=np.array([0.1, 0.2, 0.3], np.float32), std=np.array([0.5, 0.5, 2.0], np.float32),
                 scale=255.0)
    assert ds.input_shape == (2, 2, 3) and ds.num_train == 2
    want = (x / 255.0 - [0.1, 0.2, 0.3]) / [0.5, 0.5, 2.0]
    got_np = ds.normalize(x)
    got_jax = jax.jit(ds.normalize)(jnp.asarray(x))
    assert got_np.dtype == np.float32 and got_jax.dtype == jnp.float32
    np.testing.assert_allclose(got_np, want, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(got_jax), want, rtol=1e-6)


# ----------------------------------------------------------------------------- real data


def test_mnist_shapes_counts_and_split(mnist):
    raw, ds = mnist
    assert ds.name == "mnist" and ds.num_classes == 10 and ds.scale == 255.0
    assert ds.x_train.shape == (55000, 28, 28, 1) and ds.x_val.shape == (5000, 28, 28, 1)
    assert ds.x_test.shape == (10000, 28, 28, 1) and ds.input_shape == (28, 28, 1) and ds.num_train == 55000
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
    for y in (ds.y_train, ds.y_val, ds.y_test):
        assert y.min() == 0 and y.max() == 9
    # validation = the seeded permutation's first 5000, train = the rest in order: together the original set
    perm = np.random.default_rng(0).permutation(60000)
    val_idx, train_idx = perm[:5000], np.sort(perm[5000:])
    assert set(val_idx).isdisjoint(train_idx)
    np.testing.assert_array_equal(ds.x_val, raw.x_train[val_idx])
    np.testing.assert_array_equal(ds.x_train, raw.x_train[train_idx])
    np.testing.assert_array_equal(np.concatenate([ds.y_train, ds.y_val]).sum(), raw.y_train.sum())
    np.testing.assert_array_equal(np.bincount(np.concatenate([ds.y_train, ds.y_val])), np.bincount(raw.y_train))


def test_mnist_normalize_standardises_the_train_split(mnist):
    _, ds = mnist
    np.testing.assert_allclose(ds.mean, [0.1307])
    np.testing.assert_allclose(ds.std, [0.3081])
    z = ds.normalize(ds.x_train[:20000])
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1.0) < 0.01


def test_normalize_false_only_scales(data_dir):
    need(data_dir, "mnist1d/mnist1d.npz")
    ds = load_dataset(DatasetConfig(name="mnist1d", normalize=False), data_dir)
    np.testing.assert_array_equal(ds.mean, [0.0])
    np.testing.assert_array_equal(ds.std, [1.0])
    np.testing.assert_array_equal(ds.normalize(ds.x_test), ds.x_test)


def test_cifar10_shapes_and_class_balance(cifar):
    ds = cifar
    assert ds.x_train.shape == (45000, 32, 32, 3) and ds.x_val.shape == (5000, 32, 32, 3)
    assert ds.x_test.shape == (10000, 32, 32, 3) and ds.x_train.dtype == np.uint8 and ds.num_classes == 10
    np.testing.assert_array_equal(np.bincount(ds.y_test, minlength=10), [1000] * 10)
    np.testing.assert_array_equal(np.bincount(np.concatenate([ds.y_train, ds.y_val]), minlength=10), [5000] * 10)
    val_counts = np.bincount(ds.y_val, minlength=10)
    assert val_counts.min() >= 430 and val_counts.max() <= 570, val_counts
    np.testing.assert_allclose(ds.mean, [0.4914, 0.4822, 0.4465])
    np.testing.assert_allclose(ds.std, [0.2470, 0.2435, 0.2616])
    z = ds.normalize(ds.x_train[:5000])
    np.testing.assert_allclose(z.mean((0, 1, 2)), 0.0, atol=0.03)
    np.testing.assert_allclose(z.std((0, 1, 2)), 1.0, atol=0.03)


def test_mnist1d_from_the_shared_file(data_dir):
    need(data_dir, "mnist1d/mnist1d.npz")
    ds = load_dataset(DatasetConfig(name="mnist1d", val_size=500), data_dir)
    assert ds.x_train.shape == (3500, 40) and ds.x_val.shape == (500, 40) and ds.x_test.shape == (1000, 40)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32 and ds.scale == 1.0
    assert ds.mean.shape == (1,) and ds.std.shape == (1,)
    assert sorted(np.unique(ds.y_test)) == list(range(10))


def test_mnist1d_regenerated_by_the_package_equals_the_reference(tmp_path, mnist1d_reference, monkeypatch):
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    raw = load_raw(DatasetConfig(name="mnist1d"), str(tmp_path))  # nothing there: generated (~3-10 s)
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # the global RNG is left alone
    for k in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(raw, k), mnist1d_reference[k].astype(getattr(raw, k).dtype))
    cached = tmp_path / "mnist1d" / "mnist1d.npz"
    assert cached.is_file() and not [p for p in cached.parent.iterdir() if p.name.endswith(".tmp")]
    with np.load(cached) as z:
        assert checksums.mnist1d_content_sha256(z) == checksums.MNIST1D_CONTENT_SHA256
    monkeypatch.setattr(mnist1d, "generate", lambda: pytest.fail("regenerated although cached"))
    again = load_raw(DatasetConfig(name="mnist1d"), str(tmp_path))
    np.testing.assert_array_equal(again.x_train, raw.x_train)


def test_mnist1d_caches_under_home_when_data_dir_is_not_writable(tmp_path, mnist1d_reference, monkeypatch):
    monkeypatch.setattr(mnist1d, "generate", lambda: dict(mnist1d_reference))
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the data directory should be")
    raw = load_raw(DatasetConfig(name="mnist1d"), str(blocker))
    assert raw.x_train.shape == (4000, 40)
    assert (tmp_path / "home" / ".cache" / "lth" / "datasets" / "mnist1d" / "mnist1d.npz").is_file()


def test_mnist1d_generation_that_differs_is_an_error(tmp_path, mnist1d_reference, monkeypatch):
    bad = dict(mnist1d_reference, x_train=mnist1d_reference["x_train"] + 1)
    monkeypatch.setattr(mnist1d, "generate", lambda: bad)
    with pytest.raises(DataError, match="sha256"):
        load_raw(DatasetConfig(name="mnist1d"), str(tmp_path))
    assert not (tmp_path / "mnist1d" / "mnist1d.npz").exists()


def test_pinned_checksums_match_the_shared_sha256sums(data_dir):
    sums = dict(line.split()[::-1] for line in open(need(data_dir, "SHA256SUMS")).read().splitlines() if line.strip())
    for f in IDX_FILES:
        assert checksums.GZ_SHA256[("mnist", f)] == sums[f"mnist/{f}"]
    assert checksums.CIFAR10_NPZ_SHA256 == sums["cifar10/cifar10.npz"]


# ----------------------------------------------------------------------------- missing and corrupt data


def _copy_mnist(data_dir, dst):
    (dst / "mnist").mkdir(parents=True)
    for f in IDX_FILES:
        shutil.copy(os.path.join(need(data_dir, "mnist"), f), dst / "mnist" / f)
    return dst / "mnist"


def test_regzipped_mnist_is_accepted_by_its_decompressed_hash(data_dir, tmp_path):
    folder = _copy_mnist(data_dir, tmp_path)
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), mtime=0))  # other header, same contents
    assert checksums.sha256_file(str(path)) != checksums.GZ_SHA256[("mnist", path.name)]
    assert load_raw(DatasetConfig(name="mnist"), str(tmp_path)).y_test.shape == (10000,)


@pytest.mark.parametrize("damage", ["truncate", "modify"])
def test_corrupt_mnist_file_is_a_data_error(data_dir, tmp_path, damage):
    folder = _copy_mnist(data_dir, tmp_path)
    path = folder / "train-labels-idx1-ubyte.gz"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    else:
        raw = bytearray(gzip.decompress(path.read_bytes()))
        raw[100] = (raw[100] + 1) % 10
        path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError) as e:
        load_dataset(DatasetConfig(name="mnist", val_size=5000), str(tmp_path))
    msg = str(e.value)
    assert "sha256" in msg and str(path) in msg and "mnist" in msg
    assert checksums.GZ_SHA256[("mnist", path.name)] in msg  # the expected value
    assert "storage.googleapis.com" in msg  # how to get it


def test_corrupt_cifar10_npz_is_a_data_error(tmp_path):
    (tmp_path / "cifar10").mkdir()
    path = tmp_path / "cifar10" / "cifar10.npz"
    np.savez(path, x_train=np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match="sha256") as e:
        load_dataset(DatasetConfig(name="cifar10"), str(tmp_path))
    assert str(path) in str(e.value) and checksums.CIFAR10_NPZ_SHA256 in str(e.value)


@pytest.mark.parametrize("content", ["garbage", "modified"])
def test_corrupt_mnist1d_file_is_a_data_error(tmp_path, mnist1d_reference, content):
    (tmp_path / "mnist1d").mkdir()
    path = tmp_path / "mnist1d" / "mnist1d.npz"
    if content == "garbage":
        path.write_bytes(b"not an npz")
    else:
        np.savez(path, **dict(mnist1d_reference, y_test=(mnist1d_reference["y_test"] + 1) % 10))
    with pytest.raises(DataError) as e:
        load_dataset(DatasetConfig(name="mnist1d"), str(tmp_path))
    assert str(path) in str(e.value) and "mnist1d" in str(e.value)
    if content == "modified":
        assert "sha256" in str(e.value)


@pytest.mark.parametrize("name,folder", [("mnist", "mnist"), ("cifar10", "cifar10")])
def test_missing_data_names_where_it_looked(tmp_path, name, folder):
    with pytest.raises(DataError) as e:
        load_dataset(DatasetConfig(name=name), str(tmp_path))
    msg = str(e.value)
    assert "missing" in msg and str(tmp_path / folder) in msg
    assert "paths.data_dir" in msg and "LTH_DATA_DIR" in msg and "dataset.source=tfds" in msg


def test_fashion_mnist_missing_lists_both_places(tmp_path, monkeypatch):
    monkeypatch.setattr(idx, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "debian"))
    with pytest.raises(DataError) as e:
        load_dataset(DatasetConfig(name="fashion_mnist"), str(tmp_path))
    msg = str(e.value)
    assert str(tmp_path / "fashion_mnist") in msg and str(tmp_path / "debian") in msg and "fashion-mnist" in msg


def test_fashion_mnist_from_debian_package(tmp_path):
    if not all(os.path.isfile(os.path.join(idx.DEBIAN_FASHION_MNIST_DIR, f)) for f in IDX_FILES):
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    ds = load_dataset(DatasetConfig(name="fashion_mnist", val_size=5000), str(tmp_path))
    assert ds.x_train.shape == (55000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(ds.y_test), [1000] * 10)
    np.testing.assert_allclose(ds.mean, [0.2860], atol=1e-4)
    np.testing.assert_allclose(ds.std, [0.3530], atol=1e-4)


def test_cifar10_official_binary_archive(tmp_path, cifar, monkeypatch):
    """The official `cifar-10-binary.tar.gz` layout (a small stand-in, with its hash pinned)."""
    xs, ys = cifar.x_test[:60], cifar.y_test[:60]
    records = np.concatenate([ys[:, None].astype(np.uint8), xs.transpose(0, 3, 1, 2).reshape(60, -1)], axis=1)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    (tmp_path / "cifar10").mkdir()
    path = tmp_path / "cifar10" / "cifar-10-binary.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for i, n in enumerate(names):
            blob = records[i * 10 : (i + 1) * 10].tobytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{n}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(DataError, match="sha256"):
        load_raw(DatasetConfig(name="cifar10"), str(tmp_path))
    monkeypatch.setattr(checksums, "CIFAR10_BINARY_SHA256", checksums.sha256_file(str(path)))
    raw = load_raw(DatasetConfig(name="cifar10"), str(tmp_path))
    np.testing.assert_array_equal(raw.x_train, xs[:50])
    np.testing.assert_array_equal(raw.x_test, xs[50:])
    np.testing.assert_array_equal(raw.y_train, ys[:50])
    assert raw.y_train.dtype == np.int32


# ----------------------------------------------------------------------------- names and sources


@pytest.mark.parametrize("source", ["auto", "files", "tfds"])
def test_unknown_name_lists_the_builtins(tmp_path, source):
    with pytest.raises(DataError) as e:
        load_dataset(DatasetConfig(name="foo", source=source), str(tmp_path))
    msg = str(e.value)
    assert "dataset" in msg and "'foo'" in msg and all(b in msg for b in BUILTIN)


def test_tfds_only_settings_on_a_builtin_are_an_error(tmp_path):
    with pytest.raises(DataError, match="train_split"):
        load_dataset(DatasetConfig(name="mnist", train_split="train[:10%]"), str(tmp_path))


def test_val_size_too_large_is_an_error(data_dir):
    need(data_dir, "mnist1d/mnist1d.npz")
    with pytest.raises(DataError, match="val_size=4000"):
        load_dataset(DatasetConfig(name="mnist1d", val_size=4000), data_dir)


# ----------------------------------------------------------------------------- TFDS (mocked, no download)


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_source_under_mock_data(tmp_path, name, shape):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=24):
        ds = load_dataset(DatasetConfig(name=name, source="tfds", val_size=4, download=False), str(tmp_path))
    assert ds.x_train.shape == (20, *shape) and ds.x_val.shape == (4, *shape) and ds.x_test.shape == (24, *shape)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32 and ds.num_classes == 10 and ds.scale == 255.0
    assert ds.mean.shape == (shape[-1],) and ds.std.shape == (shape[-1],)
    assert 0 <= ds.y_train.min() and ds.y_train.max() < 10


def test_tfds_variable_size_images_need_image_size(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        ds = load_dataset(DatasetConfig(name="imagenette/160px", val_size=2, image_size=24), str(tmp_path))
        assert ds.x_train.shape == (4, 24, 24, 3) and ds.num_classes == 10
        with pytest.raises(DataError, match="image_size"):
            load_dataset(DatasetConfig(name="imagenette/160px", val_size=2), str(tmp_path))


def test_tfds_manual_dir_reaches_the_download_config(tmp_path, monkeypatch):
    """imagenet2012 is prepared from archives downloaded by hand: dataset.tfds_manual_dir is where
    TFDS looks for them (its DownloadConfig.manual_dir), for every split lth opens."""
    tfds = pytest.importorskip("tensorflow_datasets")
    seen = []
    real = tfds.data_source

    def spy(name, **kw):
        seen.append(kw.get("download_and_prepare_kwargs"))
        return real(name, **kw)

    monkeypatch.setattr(tfds, "data_source", spy)
    manual = tmp_path / "manual"
    manual.mkdir()
    with tfds.testing.mock_data(num_examples=6):
        load_dataset(DatasetConfig(name="mnist", source="tfds", val_size=2, tfds_manual_dir=str(manual)), str(tmp_path))
        load_dataset(DatasetConfig(name="mnist", source="tfds", val_size=2), str(tmp_path))
    assert [s["download_config"].manual_dir for s in seen[:2]] == [str(manual)] * 2
    assert seen[2:] == [None, None]
    with pytest.raises(DataError, match="tfds_manual_dir"):
        load_dataset(DatasetConfig(name="mnist", source="tfds", tfds_manual_dir=str(tmp_path / "nope")), str(tmp_path))


def test_center_crop_resize():
    from lth.data.tfds import center_crop_resize

    img = np.zeros((40, 20, 3), np.uint8)
    img[10:30] = 200  # the centre 20x20 after cropping
    out = center_crop_resize(img, 20)
    assert out.shape == (20, 20, 3) and (out == 200).all()
    assert center_crop_resize(np.zeros((64, 48, 1), np.uint8), 16).shape == (16, 16, 1)


# ----------------------------------------------------------------------------- augmentation


def test_crop_is_a_window_of_the_zero_padded_image_and_flip_mirrors():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, size=(64, 32, 32, 3), dtype=np.uint8)  # no zeros: padding is visible
    key = jax.random.key(3)
    out = np.asarray(augment.random_crop_flip(key, jnp.asarray(images)))
    assert out.dtype == np.uint8 and out.shape == images.shape
    dy, dx, flip = (np.asarray(a) for a in augment.crop_flip_offsets(key, 64, 4))
    assert dy.min() >= 0 and dy.max() <= 8 and dx.min() >= 0 and dx.max() <= 8
    assert 0 < flip.sum() < 64 and len(set(dy)) > 3
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    for i in range(64):
        want = padded[i, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32]
        if flip[i]:
            want = want[:, ::-1]
        np.testing.assert_array_equal(out[i], want)


def test_per_image_function():
    img = jnp.arange(4 * 4 * 1, dtype=jnp.float32).reshape(4, 4, 1) + 1
    same = augment.crop_flip_image(img, 2, 2, False, pad=2)
    np.testing.assert_array_equal(same, img)
    np.testing.assert_array_equal(augment.crop_flip_image(img, 2, 2, True, pad=2), img[:, ::-1])
    corner = np.asarray(augment.crop_flip_image(img, 0, 0, False, pad=2))
    assert (corner[:2] == 0).all() and (corner[:, :2] == 0).all()
    np.testing.assert_array_equal(corner[2:, 2:], img[:2, :2])


def test_augmentation_keys_and_jit_vmap():
    batch = np.random.default_rng(1).integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8)
    images = jnp.asarray(np.stack([batch] * 3))  # the same batch for 3 replicates
    fn = jax.jit(jax.vmap(augment.random_crop_flip))  # e.g. vmapped over replicates in a training step
    keys = jax.random.split(jax.random.key(0), 3)
    a, b = fn(keys, images), fn(keys, images)
    np.testing.assert_array_equal(a, b)
    c = fn(jax.random.split(jax.random.key(1), 3), images)
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    assert not np.array_equal(np.asarray(a[0]), np.asarray(a[1]))  # different replicate keys, different crops
    np.testing.assert_array_equal(a[1], augment.random_crop_flip(keys[1], images[1]))
    assert a.dtype == jnp.uint8
