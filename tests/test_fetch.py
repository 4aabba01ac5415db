"""Finding, downloading and checking dataset files, against a local HTTP server only."""

import dataclasses
import errno
import gzip
import hashlib
import http.server
import io
import os
import re
import shutil
import socket
import ssl
import threading
import time
import urllib.error
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest

import trainer.data.catalog as catalog
import trainer.data.fetch as fetch
from tests.data_helpers import IDX_FILES, make_idx_dataset
from trainer.data import load_dataset
from trainer.data.fetch import cache_root, download_urls, load_split
from trainer.data.idx import read_idx, write_idx
from trainer.errors import UsageError
from trainer.fsutil import umask

DEAD_URL = "http://127.0.0.1:9/"  # the discard port: nothing listens, the connection is refused at once


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www; `.requests` lists the paths asked for."""
    root = tmp_path / "www"
    root.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.root, httpd.requests = root, requests
    httpd.url = f"http://127.0.0.1:{httpd.server_port}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def waits(monkeypatch):
    """The waits between download attempts, recorded rather than slept."""
    slept = []
    monkeypatch.setattr(fetch, "_sleep", slept.append)
    return slept


@pytest.fixture
def serve():
    """serve(do_get) -> the URL of an HTTP server on 127.0.0.1 that answers every GET with do_get(handler)."""
    servers = []

    def start(do_get):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                do_get(self)

            def log_message(self, *args):
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_port}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def drop_once(folder, seen, handler, ranges=True):
    """Serve `folder`'s files (any /<dataset>/ prefix), honouring `Range: bytes=N-` if `ranges`. The first
    request for each file is cut short: the full Content-Length, half the bytes, then the connection closes."""
    wanted = handler.headers.get("Range")
    seen.append((handler.path, wanted))
    body = (folder / handler.path.rsplit("/", 1)[-1]).read_bytes()
    start = int(re.fullmatch(r"bytes=(\d+)-", wanted)[1]) if wanted and ranges else 0
    handler.send_response(206 if start else 200)
    if start:
        handler.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
    handler.send_header("Content-Length", str(len(body) - start))
    handler.end_headers()
    first = [path for path, _ in seen].count(handler.path) == 1
    handler.wfile.write(body[start:len(body) // 2] if first else body[start:])
    handler.close_connection = True


def md5(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def spec_for(base, folder, split_files=IDX_FILES, prefix="", with_md5=True, with_sha256=True, **changes):
    """`base` (a catalog entry) re-pointed at the synthetic files in `folder`: their shapes and checksums."""
    splits = {}
    for split, names in split_files.items():
        files = []
        for name in names:
            array = read_idx(folder / name)
            files.append(catalog.IdxFile(
                prefix + name, array.shape,
                md5=md5(folder / name) if with_md5 else None,
                sha256=hashlib.sha256(array.tobytes()).hexdigest() if with_sha256 else None))
        splits[split] = tuple(files)
    return dataclasses.replace(base, splits=splits, **changes)


@pytest.fixture
def synthetic(tmp_path):
    return make_idx_dataset(tmp_path / "synthetic", num_classes=10, n_train=40, n_test=20)


def publish(server, folder, dataset="zalando"):
    """Put the synthetic files where a mirror serves them: <mirror>/<dataset>/<file>."""
    (server.root / dataset).mkdir(exist_ok=True)
    for f in folder.iterdir():
        (server.root / dataset / f.name).write_bytes(f.read_bytes())


def cache_files():
    folder = cache_root() / "datasets"
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_download_verifies_caches_and_then_stays_offline(server, synthetic):
    spec = spec_for(catalog.ZALANDO, synthetic, system_dir=None)
    publish(server, synthetic)
    log = io.StringIO()
    images, labels = load_split(spec, "train", mirror=server.url, stream=log)
    np.testing.assert_array_equal(images, read_idx(synthetic / "train-images-idx3-ubyte.gz"))
    assert labels.dtype == np.int64 and len(labels) == 40
    assert cache_files() == ["zalando/train-images-idx3-ubyte.gz", "zalando/train-labels-idx1-ubyte.gz"]
    assert md5(cache_root() / "datasets/zalando/train-images-idx3-ubyte.gz") == md5(synthetic / "train-images-idx3-ubyte.gz")
    assert server.requests == ["/zalando/train-images-idx3-ubyte.gz", "/zalando/train-labels-idx1-ubyte.gz"]
    progress = log.getvalue()
    assert "downloading train-images-idx3-ubyte.gz" in progress and "(100%)" in progress and "KiB" in progress

    # Second time: from the cache, with the network gone.
    again, _ = load_split(spec, "train", mirror=DEAD_URL, stream=log)
    np.testing.assert_array_equal(again, images)
    assert len(server.requests) == 2

    # The test split is fetched when first asked for, and only it.
    load_split(spec, "test", mirror=server.url, stream=log)
    assert server.requests[2:] == ["/zalando/t10k-images-idx3-ubyte.gz", "/zalando/t10k-labels-idx1-ubyte.gz"]


def test_mirror_from_the_environment_and_load_dataset(server, synthetic, monkeypatch, capsys):
    monkeypatch.setitem(catalog.CATALOG, "mnist", spec_for(catalog.MNIST, synthetic))
    monkeypatch.setenv("GANKIT_DATA_MIRROR", server.url + "/")
    publish(server, synthetic, "mnist")
    data = load_dataset("mnist", split="test")
    assert data.images.shape == (20, 28, 28, 1) and data.class_names == tuple("0123456789")
    assert server.requests == ["/mnist/t10k-images-idx3-ubyte.gz", "/mnist/t10k-labels-idx1-ubyte.gz"]
    assert "downloading t10k-images-idx3-ubyte.gz" in capsys.readouterr().err


def test_checksum_mismatch_is_an_error_and_leaves_nothing(server, synthetic):
    spec = spec_for(catalog.ZALANDO, synthetic, system_dir=None)
    images_file = dataclasses.replace(spec.splits["train"][0], md5="0" * 32)
    spec = dataclasses.replace(spec, splits={"train": (images_file, spec.splits["train"][1])})
    publish(server, synthetic)
    with pytest.raises(UsageError) as e:
        load_split(spec, "train", mirror=server.url, stream=io.StringIO())
    message = str(e.value)
    assert "cannot download zalando's train-images-idx3-ubyte.gz" in message
    assert f"checksum mismatch: md5 {md5(synthetic / 'train-images-idx3-ubyte.gz')}, the publisher lists {'0' * 32}" in message
    assert "--data-dir" in message
    assert cache_files() == []  # no half-written or unverified file, not even a hidden temp file


def test_404_is_a_clear_error(server, synthetic):
    spec = spec_for(catalog.ZALANDO, synthetic, system_dir=None)
    with pytest.raises(UsageError, match=r"cannot download zalando's train-images-idx3-ubyte.gz: "
                                         r"http://127\.0\.0\.1:\d+/zalando/train-images-idx3-ubyte\.gz: HTTP 404"):
        load_split(spec, "train", mirror=server.url, stream=io.StringIO())
    assert cache_files() == []
    assert len(server.requests) == 1  # a 404 will not pass: not tried again


def test_unreachable_host_is_a_clear_error(synthetic):
    spec = spec_for(catalog.ZALANDO, synthetic, system_dir=None)
    with pytest.raises(UsageError, match="cannot download .*refused.*check the network"):
        load_split(spec, "train", mirror=DEAD_URL, stream=io.StringIO())
    assert cache_files() == []


@pytest.mark.parametrize("reason, attempts", [
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), 1),  # a misspelt host: at once
    (ssl.SSLCertVerificationError("certificate verify failed"), 1),  # a bad certificate will not mend itself
    (socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), fetch.ATTEMPTS),
    (TimeoutError("timed out"), fetch.ATTEMPTS),
])
def test_only_a_connection_failure_that_may_pass_is_tried_again(synthetic, monkeypatch, waits, reason, attempts):
    tried = []

    def connect(request, timeout):  # where the socket layer fails, as urllib reports it
        tried.append(request.full_url)
        raise urllib.error.URLError(reason)

    monkeypatch.setattr(fetch.urllib.request, "urlopen", connect)
    spec = spec_for(catalog.ZALANDO, synthetic, system_dir=None)
    with pytest.raises(UsageError, match="cannot download .*check the network"):
        load_split(spec, "train", mirror="http://mirror.example/", stream=io.StringIO())
    assert len(tried) == attempts and len(waits) == attempts - 1
    assert cache_files() == []


def test_publisher_urls_are_tried_in_order(server, synthetic):
    publish(server, synthetic)
    spec = spec_for(catalog.ZALANDO, synthetic, system_dir=None, urls=(DEAD_URL, server.url + "/zalando/"))
    assert download_urls(spec) == spec.urls
    images, _ = load_split(spec, "train", stream=io.StringIO())
    assert len(images) == 40 and len(server.requests) == 2


def test_a_corrupted_cache_copy_is_downloaded_again(server, synthetic, tmp_path):
    spec = spec_for(catalog.ZALANDO, synthetic, system_dir=None)
    publish(server, synthetic)
    images, _ = load_split(spec, "train", mirror=server.url, stream=io.StringIO())
    cache = cache_root() / "datasets/zalando"
    cached = cache / "train-images-idx3-ubyte.gz"
    damaged = images.copy()
    damaged[0, 0, 0] ^= 1  # valid structure, wrong content
    for damage, problem in [(lambda: write_idx(cached, damaged), r"is not the published .*decoded sha256"),
                            (lambda: write_idx(cached, images[:10]), r"holds a 10x28x28 array, not the published 40x28x28"),
                            (lambda: cached.write_bytes(b"\x1f\x8b not gzip"), r"corrupt IDX file .*: broken gzip data")]:
        damage()
        server.requests.clear()
        said = []
        again, _ = load_split(spec, "train", mirror=server.url, stream=io.StringIO(), log=said.append)
        np.testing.assert_array_equal(again, images)
        assert md5(cached) == md5(synthetic / "train-images-idx3-ubyte.gz")
        assert said[0] == f"data: zalando from gankit's cache ({cache})"
        assert len(said) == 2 and said[1].startswith("data: ") and str(cached) in said[1]
        assert re.search(problem, said[1]) and said[1].endswith("; gankit's cached copy is damaged: downloading it again")
        assert server.requests == ["/zalando/train-images-idx3-ubyte.gz", "/zalando/train-labels-idx1-ubyte.gz"]

    # A --data-dir copy is the user's: refused, never replaced.
    own = tmp_path / "own"
    shutil.copytree(cache, own)
    write_idx(own / "train-images-idx3-ubyte.gz", damaged)
    server.requests.clear()
    with pytest.raises(UsageError, match=r"is not the published .*replace it with an intact copy"):
        load_split(spec, "train", data_dir=own, mirror=server.url)
    assert server.requests == []

    # The publisher serving a copy that passes its md5 but not the decoded checksum: downloaded once, then refused.
    doctored = tmp_path / "doctored.gz"
    write_idx(doctored, damaged)
    (server.root / "zalando/train-images-idx3-ubyte.gz").write_bytes(doctored.read_bytes())
    images_file = dataclasses.replace(spec.splits["train"][0], md5=md5(doctored))
    doctored_spec = dataclasses.replace(spec, splits={**spec.splits, "train": (images_file, spec.splits["train"][1])})
    write_idx(cached, damaged)
    server.requests.clear()
    fresh = r"is not the published .*; a fresh download fails this check too; pass --data-dir DIR with intact files$"
    with pytest.raises(UsageError, match=fresh):
        load_split(doctored_spec, "train", mirror=server.url, stream=io.StringIO())
    assert len(server.requests) == 2  # the cached copy's split, downloaded again once
    for f in cache.iterdir():
        f.unlink()
    server.requests.clear()
    with pytest.raises(UsageError, match=fresh):
        load_split(doctored_spec, "train", mirror=server.url, stream=io.StringIO())
    assert len(server.requests) == 2  # just downloaded: not downloaded a second time


def test_a_damaged_cached_file_is_downloaded_again_when_its_partner_was_missing(server, synthetic):
    """The cache had the images (damaged) but not the labels: the labels are downloaded, and the images, gankit's
    to mend, are downloaded again rather than blamed on the publisher."""
    spec = spec_for(catalog.ZALANDO, synthetic, system_dir=None)
    publish(server, synthetic)
    images, _ = load_split(spec, "train", mirror=server.url, stream=io.StringIO())
    cache = cache_root() / "datasets/zalando"
    damaged = images.copy()
    damaged[0, 0, 0] ^= 1
    write_idx(cache / "train-images-idx3-ubyte.gz", damaged)
    (cache / "train-labels-idx1-ubyte.gz").unlink()
    server.requests.clear()
    again, _ = load_split(spec, "train", mirror=server.url, stream=io.StringIO())
    np.testing.assert_array_equal(again, images)
    assert md5(cache / "train-images-idx3-ubyte.gz") == md5(synthetic / "train-images-idx3-ubyte.gz")
    assert server.requests == ["/zalando/train-labels-idx1-ubyte.gz", "/zalando/train-images-idx3-ubyte.gz",
                               "/zalando/train-labels-idx1-ubyte.gz"]


def test_system_copy_is_used_when_the_cache_is_empty(tmp_path, synthetic, monkeypatch):
    system = tmp_path / "system"
    (system / "fashion-mnist").mkdir(parents=True)
    for f in synthetic.iterdir():  # recompressed, as Debian's are: other .gz bytes, same arrays
        (system / "fashion-mnist" / f.name).write_bytes(gzip.compress(gzip.decompress(f.read_bytes()), 9, mtime=1))
    monkeypatch.setenv("GANKIT_SYSTEM_DATASETS", str(system))
    spec = spec_for(catalog.ZALANDO, synthetic)
    assert md5(system / "fashion-mnist/train-images-idx3-ubyte.gz") != spec.splits["train"][0].md5
    images, _ = load_split(spec, "train", mirror=DEAD_URL)
    np.testing.assert_array_equal(images, read_idx(synthetic / "train-images-idx3-ubyte.gz"))
    assert cache_files() == []  # read in place, not copied

    # A cache copy wins over the system's.
    cache = cache_root() / "datasets/zalando"
    write_idx(cache / "train-images-idx3-ubyte.gz", images)
    write_idx(cache / "train-labels-idx1-ubyte.gz", read_idx(synthetic / "train-labels-idx1-ubyte.gz"))
    (system / "fashion-mnist/train-images-idx3-ubyte.gz").write_bytes(b"broken, but never read")
    assert len(load_split(spec, "train", mirror=DEAD_URL)[0]) == 40

    # A damaged system copy (and an empty cache) is an error that says how to repair it.
    for f in cache.iterdir():
        f.unlink()
    with pytest.raises(UsageError, match=r"fashion-mnist/train-images-idx3-ubyte.gz.*reinstall"):
        load_split(spec, "train", mirror=DEAD_URL)


def test_data_dir_is_the_only_place_looked_when_given(tmp_path, synthetic):
    spec = spec_for(catalog.ZALANDO, synthetic)
    with pytest.raises(UsageError, match=r"--data-dir .*nowhere is not a folder"):
        load_split(spec, "train", data_dir=tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match=rf"{empty} has no train-images-idx3-ubyte.gz \(the zalando train split\)"):
        load_split(spec, "train", data_dir=empty, mirror=DEAD_URL)
    # Uncompressed copies are fine too.
    plain = tmp_path / "plain"
    for name in IDX_FILES["train"]:
        write_idx(plain / name.removesuffix(".gz"), read_idx(synthetic / name))
    assert load_split(spec, "train", data_dir=plain)[0].shape == (40, 28, 28)


def test_data_dir_with_the_published_shape_must_hold_the_published_data(tmp_path, synthetic):
    spec = spec_for(catalog.ZALANDO, synthetic)
    own = tmp_path / "own"
    labels = read_idx(synthetic / "train-labels-idx1-ubyte.gz")
    write_idx(own / "train-images-idx3-ubyte.gz", read_idx(synthetic / "train-images-idx3-ubyte.gz"))
    write_idx(own / "train-labels-idx1-ubyte.gz", (labels + 1) % 10)
    with pytest.raises(UsageError, match=r"train-labels-idx1-ubyte.gz is not the published .*replace it with an intact copy"):
        load_split(spec, "train", data_dir=own)
    # Another size is your own data: checked by structure only.
    write_idx(own / "train-images-idx3-ubyte.gz", read_idx(synthetic / "train-images-idx3-ubyte.gz")[:30])
    write_idx(own / "train-labels-idx1-ubyte.gz", labels[:30])
    assert load_split(spec, "train", data_dir=own)[1].shape == (30,)


def emnist_archive(tmp_path):
    """A stand-in for NIST's gzip.zip: the balanced files among others, in a gzip/ folder."""
    source = make_idx_dataset(tmp_path / "emnist-src", num_classes=47, n_train=50, n_test=47)
    archive = tmp_path / "gzip.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("gzip/", "")
        z.writestr("gzip/emnist-letters-train-images-idx3-ubyte.gz", b"not ours")
        for f in sorted(source.iterdir()):
            z.write(f, f"gzip/emnist-balanced-{f.name}")
    return source, archive


def test_emnist_archive_is_verified_extracted_and_dropped(tmp_path, server):
    source, archive = emnist_archive(tmp_path)
    (server.root / "emnist").mkdir()
    (server.root / "emnist/gzip.zip").write_bytes(archive.read_bytes())
    spec = spec_for(catalog.EMNIST, source, prefix="emnist-balanced-", with_md5=False,
                    archive=catalog.Archive("gzip.zip", md5(archive)))
    images, labels = load_split(spec, "test", mirror=server.url, stream=io.StringIO())
    assert images.shape == (47, 28, 28) and sorted(labels) == list(range(47))
    assert cache_files() == sorted(f"emnist/emnist-balanced-{n}" for names in IDX_FILES.values() for n in names)
    assert server.requests == ["/emnist/gzip.zip"]
    assert len(load_split(spec, "train", mirror=DEAD_URL)[0]) == 50  # extracted with the first split

    # A wrong archive is refused before anything is extracted.
    for f in (cache_root() / "datasets/emnist").iterdir():
        f.unlink()
    bad = dataclasses.replace(spec, archive=catalog.Archive("gzip.zip", "f" * 32))
    with pytest.raises(UsageError, match="gzip.zip: checksum mismatch"):
        load_split(bad, "test", mirror=server.url, stream=io.StringIO())
    assert cache_files() == []


def test_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch, synthetic):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    monkeypatch.setenv("GANKIT_CACHE", str(blocker / "cache"))
    spec = spec_for(catalog.ZALANDO, synthetic, system_dir=None)
    with pytest.raises(UsageError, match="cannot create the dataset cache .*set GANKIT_CACHE"):
        load_split(spec, "train", mirror=DEAD_URL)


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("GANKIT_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("GANKIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg/gankit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home/.cache/gankit"


def emnist_archive_in_the_cache(tmp_path, with_sha256=True):
    """EMNIST's spec and its cache folder, holding a verified gzip.zip left there by an earlier run."""
    source, archive = emnist_archive(tmp_path)
    spec = spec_for(catalog.EMNIST, source, prefix="emnist-balanced-", with_md5=False, with_sha256=with_sha256,
                    archive=catalog.Archive("gzip.zip", md5(archive)))
    cache = cache_root() / "datasets/emnist"
    cache.mkdir(parents=True)
    shutil.copy(archive, cache / "gzip.zip")
    return spec, cache


def test_a_verified_archive_left_in_the_cache_is_reused(tmp_path):
    spec, cache = emnist_archive_in_the_cache(tmp_path)
    assert load_split(spec, "train", mirror=DEAD_URL)[0].shape == (50, 28, 28)
    assert not (cache / "gzip.zip").exists()


def test_an_archive_in_the_cache_that_fails_its_md5_is_downloaded_again_not_extracted(tmp_path, server):
    spec, cache = emnist_archive_in_the_cache(tmp_path, with_sha256=False)  # as the catalog's EMNIST: no sha256
    (server.root / "emnist").mkdir()
    shutil.copy(cache / "gzip.zip", server.root / "emnist/gzip.zip")
    # Another archive under the same name (put there by hand, say): the same members and shapes, other pictures.
    other = make_idx_dataset(tmp_path / "other", num_classes=47, n_train=50, n_test=47, seed=1)
    with zipfile.ZipFile(cache / "gzip.zip", "w") as z:
        for f in sorted(other.iterdir()):
            z.write(f, f"gzip/emnist-balanced-{f.name}")

    images, _ = load_split(spec, "train", mirror=server.url, stream=io.StringIO())
    assert server.requests == ["/emnist/gzip.zip"]
    assert np.array_equal(images, read_idx(tmp_path / "emnist-src/train-images-idx3-ubyte.gz"))


def test_stale_partial_downloads_are_swept(server, synthetic):
    spec = spec_for(catalog.ZALANDO, synthetic, system_dir=None)
    publish(server, synthetic)
    cache = cache_root() / "datasets/zalando"
    cache.mkdir(parents=True)
    stale, live = cache / ".train-images-idx3-ubyte.gz.abc.part", cache / ".train-images-idx3-ubyte.gz.def.part"
    stale.write_bytes(b"left by a killed run")
    live.write_bytes(b"another process, still downloading")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    load_split(spec, "train", mirror=server.url, stream=io.StringIO())
    assert not stale.exists() and live.exists()


def test_the_log_says_where_the_files_came_from(server, synthetic, tmp_path, monkeypatch):
    system = tmp_path / "system"
    (system / "fashion-mnist").mkdir(parents=True)
    monkeypatch.setenv("GANKIT_SYSTEM_DATASETS", str(system))
    spec = spec_for(catalog.ZALANDO, synthetic)
    publish(server, synthetic)
    said = []
    load_split(spec, "train", mirror=server.url, stream=io.StringIO(), log=said.append)
    cache = cache_root() / "datasets" / "zalando"
    assert said == [f"data: zalando downloaded from {server.url}/zalando/train-images-idx3-ubyte.gz "
                    f"into gankit's cache ({cache})"]
    load_split(spec, "train", mirror=DEAD_URL, log=said.append)
    assert said[-1] == f"data: zalando from gankit's cache ({cache})"
    for f in synthetic.iterdir():
        shutil.copy(f, system / "fashion-mnist" / f.name)
        (cache / f.name).unlink(missing_ok=True)
    load_split(spec, "train", mirror=DEAD_URL, log=said.append)
    assert said[-1] == f"data: zalando from Debian's copy ({system / 'fashion-mnist'}, package dataset-fashion-mnist)"
    load_split(spec, "train", data_dir=synthetic, log=said.append)
    assert said[-1] == f"data: zalando from --data-dir {synthetic}"


def test_staging_says_once_where_both_splits_came_from(synthetic, tmp_path):
    from trainer.dataset_staging import stage_dataset

    said = []
    stage_dataset("mnist", str(tmp_path / "bucket" / "datasets" / "mnist"), data_dir=synthetic, log=said.append)
    assert said == [f"data: mnist from --data-dir {synthetic}", f"staged mnist at {tmp_path / 'bucket' / 'datasets' / 'mnist'}"]


def test_staging_to_a_folder_on_a_full_disk_is_one_line_and_leaves_no_half_copied_file(synthetic, tmp_path):
    import resource
    import signal
    import subprocess
    import sys

    images = synthetic / "train-images-idx3-ubyte.gz"
    limit = images.stat().st_size // 2  # every file larger than this fails mid-write, as on a full disk

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    to = tmp_path / "bucket" / "datasets" / "mnist"
    done = subprocess.run([sys.executable, "-m", "trainer", "stage", "--dataset", "mnist", "--data-dir", str(synthetic),
                           "--to", str(to)], capture_output=True, text=True, preexec_fn=small_disk,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and images.name in errors[0] and "File too large" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    # What is there is complete: no copy cut short under its final name (nor a temp file), no manifest.
    for path in to.iterdir():
        assert path.name in IDX_FILES["train"] + IDX_FILES["test"] and path.read_bytes() == (synthetic / path.name).read_bytes()


def test_a_dropped_connection_is_resumed_where_it_stopped(serve, synthetic, waits):
    seen = []
    url = serve(partial(drop_once, synthetic, seen))
    spec = spec_for(catalog.ZALANDO, synthetic, system_dir=None)
    log = io.StringIO()
    images, _ = load_split(spec, "train", mirror=url, stream=log)
    np.testing.assert_array_equal(images, read_idx(synthetic / "train-images-idx3-ubyte.gz"))
    size = (synthetic / "train-images-idx3-ubyte.gz").stat().st_size
    assert seen[:2] == [("/zalando/train-images-idx3-ubyte.gz", None),
                        ("/zalando/train-images-idx3-ubyte.gz", f"bytes={size // 2}-")]
    assert [wanted for _, wanted in seen[2:]] == [None, "bytes=29-"]  # the 58-byte labels file, likewise
    for name in IDX_FILES["train"]:
        assert md5(cache_root() / "datasets/zalando" / name) == md5(synthetic / name)
    assert cache_files() == ["zalando/train-images-idx3-ubyte.gz", "zalando/train-labels-idx1-ubyte.gz"]  # no part left
    assert waits == [1.0, 1.0]
    assert (f"downloading train-images-idx3-ubyte.gz: got {size // 2} of {size} bytes; trying again in 1 s "
            f"(attempt 2 of 4)") in log.getvalue()


def test_a_server_that_ignores_range_is_read_again_from_the_start(serve, synthetic):
    seen = []
    url = serve(partial(drop_once, synthetic, seen, ranges=False))
    spec = spec_for(catalog.ZALANDO, synthetic, system_dir=None)
    images, labels = load_split(spec, "train", mirror=url, stream=io.StringIO())
    np.testing.assert_array_equal(images, read_idx(synthetic / "train-images-idx3-ubyte.gz"))
    assert len(labels) == 40 and len(seen) == 4 and seen[1][1] is not None  # asked to resume, answered 200
    for name in IDX_FILES["train"]:
        assert md5(cache_root() / "datasets/zalando" / name) == md5(synthetic / name)


def test_a_server_that_resumes_at_another_byte_is_read_again_from_the_start(serve, synthetic, waits):
    seen = []

    def resume_wrong(handler):  # a 206 for a Range, but of the whole file: appended, it would corrupt the part
        if handler.headers.get("Range") is None:
            return drop_once(synthetic, seen, handler)
        seen.append((handler.path, handler.headers["Range"]))
        body = (synthetic / handler.path.rsplit("/", 1)[-1]).read_bytes()
        handler.send_response(206)
        handler.send_header("Content-Range", f"bytes 0-{len(body) - 1}/{len(body)}")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        handler.close_connection = True

    url = serve(resume_wrong)
    spec = spec_for(catalog.ZALANDO, synthetic, system_dir=None)
    log = io.StringIO()
    images, _ = load_split(spec, "train", mirror=url, stream=log)
    np.testing.assert_array_equal(images, read_idx(synthetic / "train-images-idx3-ubyte.gz"))
    assert [wanted is None for _, wanted in seen[:3]] == [True, False, True]  # dropped, resumed wrong, afresh
    assert "the server resumed at another byte than" in log.getvalue()
    for name in IDX_FILES["train"]:
        assert md5(cache_root() / "datasets/zalando" / name) == md5(synthetic / name)


def test_a_part_left_by_a_failed_run_is_continued_by_the_next(serve, synthetic, monkeypatch):
    seen = []
    url = serve(partial(drop_once, synthetic, seen))
    spec = spec_for(catalog.ZALANDO, synthetic, system_dir=None)
    size = (synthetic / "train-images-idx3-ubyte.gz").stat().st_size
    monkeypatch.setattr(fetch, "ATTEMPTS", 1)
    with pytest.raises(UsageError, match=rf"got {size // 2} of {size} bytes \(gave up after 1 attempts\); check"):
        load_split(spec, "train", mirror=url, stream=io.StringIO())
    [part] = cache_files()
    assert part.startswith("zalando/.train-images-idx3-ubyte.gz.") and part.endswith(".part")
    assert (cache_root() / "datasets" / part).stat().st_size == size // 2
    (cache_root() / "datasets" / part).chmod(0o600)  # as a run under umask 077 leaves it

    monkeypatch.setattr(fetch, "ATTEMPTS", 4)
    load_split(spec, "train", mirror=url, stream=io.StringIO())
    assert seen[1] == ("/zalando/train-images-idx3-ubyte.gz", f"bytes={size // 2}-")
    done = cache_root() / "datasets/zalando/train-images-idx3-ubyte.gz"
    assert md5(done) == md5(synthetic / "train-images-idx3-ubyte.gz")
    assert oct(done.stat().st_mode & 0o777) == oct(0o666 & ~umask())  # as any file, not a temp file's 0600


@pytest.mark.parametrize("status", [500, 429, 408])  # 408: the server timed out waiting for us
def test_a_server_error_is_tried_again_then_a_one_line_error(serve, synthetic, waits, status):
    seen = []

    def fail(handler):
        seen.append(handler.path)
        handler.send_error(status)

    url = serve(fail)
    spec = spec_for(catalog.ZALANDO, synthetic, system_dir=None)
    with pytest.raises(UsageError) as e:
        load_split(spec, "train", mirror=url, stream=io.StringIO())
    message = str(e.value)
    assert "\n" not in message
    assert re.search(rf"/zalando/train-images-idx3-ubyte\.gz: HTTP {status} .*\(gave up after 4 attempts\); "
                     r"check the network", message)
    assert seen == ["/zalando/train-images-idx3-ubyte.gz"] * 4 and waits == [1.0, 2.0, 4.0]
    assert cache_files() == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full, where every write fails with ENOSPC")
def test_a_full_disk_is_not_blamed_on_the_network(server, synthetic, monkeypatch):
    spec = spec_for(catalog.ZALANDO, synthetic, system_dir=None)
    publish(server, synthetic)
    cache = cache_root() / "datasets/zalando"
    cache.mkdir(parents=True)
    images_file = spec.splits["train"][0]
    (cache / f".{images_file.name}.{images_file.md5[:12]}.part").symlink_to("/dev/full")  # the part: a full disk
    monkeypatch.setattr(fetch, "STALE_PART_S", float("inf"))  # /dev/full is as old as the boot: keep it
    with pytest.raises(UsageError) as e:
        load_split(spec, "train", mirror=server.url, stream=io.StringIO())
    message = str(e.value)
    assert message.startswith(f"cannot write into the dataset cache {cache}: the disk is full")
    assert "GANKIT_CACHE" in message and "network" not in message and len(server.requests) == 1


def test_two_loads_at_once_share_one_download(serve, synthetic):
    seen = []

    def slow(handler):  # half the body, a pause, the rest: the two loads overlap
        seen.append(handler.path)
        body = (synthetic / handler.path.rsplit("/", 1)[-1]).read_bytes()
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[:len(body) // 2])
        handler.wfile.flush()
        time.sleep(0.3)
        handler.wfile.write(body[len(body) // 2:])

    url = serve(slow)
    spec = spec_for(catalog.ZALANDO, synthetic, system_dir=None)
    results, errors = [], []

    def load():
        try:
            results.append(load_split(spec, "train", mirror=url, stream=io.StringIO())[0])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(results) == 2
    assert sorted(seen) == ["/zalando/train-images-idx3-ubyte.gz", "/zalando/train-labels-idx1-ubyte.gz"]
    assert cache_files() == ["zalando/train-images-idx3-ubyte.gz", "zalando/train-labels-idx1-ubyte.gz"]


def test_a_full_disk_while_extracting_keeps_the_verified_archive_for_the_next_run(tmp_path, monkeypatch):
    """EMNIST's archive is ~560 MB: a disk that fills while the files come out of it must not throw the verified
    download away (it was deleted, so the run after freeing space downloaded it all again)."""
    spec, cache = emnist_archive_in_the_cache(tmp_path)

    def full(src, out, length=0):
        out.write(src.read(10))
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(fetch.shutil, "copyfileobj", full)
        with pytest.raises(UsageError) as e:
            load_split(spec, "train", mirror=DEAD_URL)
    assert str(e.value).startswith(f"cannot write into the dataset cache {cache}: the disk is full")
    assert f"the verified download {cache / 'gzip.zip'} is kept" in str(e.value)
    assert sorted(p.name for p in cache.iterdir()) == ["gzip.zip"]  # and no half-extracted file
    assert load_split(spec, "train", mirror=DEAD_URL)[0].shape == (50, 28, 28)  # no download: DEAD_URL
    assert not (cache / "gzip.zip").exists()


def test_a_load_that_finds_the_archive_while_another_extracts_it_waits_for_the_files(tmp_path, server, monkeypatch):
    """EMNIST's archive is deleted once extracted: a second load that found it there (hashing its 560 MB takes
    a second) then failed to open it, although the first had just put every file in the cache."""
    source, archive = emnist_archive(tmp_path)
    (server.root / "emnist").mkdir()
    (server.root / "emnist/gzip.zip").write_bytes(archive.read_bytes())
    spec = spec_for(catalog.EMNIST, source, prefix="emnist-balanced-", with_md5=False,
                    archive=catalog.Archive("gzip.zip", md5(archive)))
    cached_archive = cache_root() / "datasets/emnist/gzip.zip"
    extracting, second_checked = threading.Event(), threading.Event()
    real_extract, real_md5 = fetch._extract, fetch._md5_of

    def extract(*args):  # the first load, between its download and its extraction: the second comes now
        if threading.current_thread().name == "first":
            extracting.set()
            second_checked.wait(2)  # (the second never hashes it once it waits its turn)
        return real_extract(*args)

    def md5_of(path):  # the second's hash of the archive outlasts the first's extraction
        digest = real_md5(path)
        if threading.current_thread().name == "second":
            second_checked.set()
            deadline = time.time() + 5
            while cached_archive.exists() and time.time() < deadline:
                time.sleep(0.01)
        return digest

    monkeypatch.setattr(fetch, "_extract", extract)
    monkeypatch.setattr(fetch, "_md5_of", md5_of)
    results, errors = {}, []

    def load(name):
        if name == "second":
            extracting.wait(5)
        try:
            results[name] = load_split(spec, "test", mirror=server.url, stream=io.StringIO())[0].shape
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=load, args=(name,), name=name) for name in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and results == {"first": (47, 28, 28), "second": (47, 28, 28)}
    assert server.requests == ["/emnist/gzip.zip"]  # downloaded once
    assert cache_files() == sorted(f"emnist/emnist-balanced-{n}" for names in IDX_FILES.values() for n in names)


def test_a_retry_line_shows_the_servers_reason_with_its_terminal_controls_escaped(serve, synthetic):
    """The reason phrase of a 503 is the server's to choose: the line saying a download is tried again printed it
    raw, so a mirror could retitle the window or start a sequence (C1's CSI) on the user's terminal."""
    from trainer.errors import GankitError

    def busy(handler):
        handler.send_response(503, "Busy\x1b]2;pwned\x07\x9b1m")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    spec = spec_for(catalog.ZALANDO, synthetic, system_dir=None)
    log = io.StringIO()
    with pytest.raises(GankitError):
        load_split(spec, "train", mirror=serve(busy), stream=log)
    retries = [line for line in log.getvalue().splitlines() if "trying again" in line]
    assert retries and all("HTTP 503 Busy\\x1b]2;pwned\\x07\\x9b1m; trying again" in line for line in retries), retries
    assert not any(ch in log.getvalue() for ch in "\x1b\x07\x9b"), repr(log.getvalue())


def test_a_server_that_refuses_every_range_with_416_is_a_one_line_error(serve, synthetic):
    seen = []

    def refuse(handler):  # a misconfigured mirror: 416 even to a request for the whole file
        seen.append(handler.headers.get("Range"))
        handler.send_error(416)

    url = serve(refuse)
    spec = spec_for(catalog.ZALANDO, synthetic, system_dir=None)
    with pytest.raises(UsageError, match=r"train-images-idx3-ubyte.gz: HTTP 416 .*; check the network"):
        load_split(spec, "train", mirror=url, stream=io.StringIO())
    assert seen == [None]
    assert cache_files() == []


def test_a_part_the_server_refuses_to_continue_with_416_is_downloaded_afresh(serve, synthetic):
    seen = []

    def whole_or_416(handler):  # S3's answer to a Range past the end of the file
        seen.append(handler.headers.get("Range"))
        if handler.headers.get("Range"):
            return handler.send_error(416)
        body = (synthetic / handler.path.rsplit("/", 1)[-1]).read_bytes()
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    url = serve(whole_or_416)
    spec = spec_for(catalog.ZALANDO, synthetic, system_dir=None)
    name = "train-labels-idx1-ubyte.gz"
    cache = cache_root() / "datasets/zalando"
    cache.mkdir(parents=True)
    (cache / f".{name}.{md5(synthetic / name)[:12]}.part").write_bytes(b"x" * 1000)  # longer than the file
    load_split(spec, "train", mirror=url, stream=io.StringIO())
    assert seen == [None, "bytes=1000-", None]  # the images, then the labels: refused, then whole
    assert md5(cache / name) == md5(synthetic / name)


def test_a_whole_part_left_by_a_killed_run_is_installed_without_downloading_it_again(server, synthetic):
    spec = spec_for(catalog.ZALANDO, synthetic, system_dir=None)
    publish(server, synthetic)
    name = "train-images-idx3-ubyte.gz"
    cache = cache_root() / "datasets/zalando"
    cache.mkdir(parents=True)
    shutil.copy(synthetic / name, cache / f".{name}.{md5(synthetic / name)[:12]}.part")  # killed while checking it
    load_split(spec, "train", mirror=server.url, stream=io.StringIO())
    assert server.requests == ["/zalando/train-labels-idx1-ubyte.gz"]
    assert cache_files() == ["zalando/train-images-idx3-ubyte.gz", "zalando/train-labels-idx1-ubyte.gz"]
