"""The real-file corpus: the manifest, every download and the downloader's safety rules."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import re
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.fixtures import corpus
from tests.fixtures.corpus import Archive, CorpusError, CorpusUnavailable, Item, Source
from tests.helpers import missing

HEX64 = re.compile(r"^[0-9a-f]{64}$")
# `key = "value"` dictionary lines (.vmx and friends), comments and blank lines.
DICT_LINE = re.compile(rb'^\s*(#.*|[A-Za-z0-9_.:\-]+\s*=\s*"[^"]*")?\s*$')
# xm/xl lines: `key = value` (number, quoted string or [list]) or comments.
XEN_LINE = re.compile(rb"^\s*(#.*|[A-Za-z_][A-Za-z0-9_]*\s*=\s*\S.*)?\s*$")
SESPARSE_MAGIC = 0x00000000CAFEBABE


# --- the manifest itself --------------------------------------------------------------------


def test_manifest_is_well_formed() -> None:
    names = [item.name for item in corpus.MANIFEST]
    assert len(names) == len(set(names)), "item names must be unique"
    assert len(names) >= 15
    for item in corpus.MANIFEST:
        assert item.sources, item.name
        assert HEX64.match(item.sha256), item.name
        assert item.size > 0, item.name
        for source in item.sources:
            archive = source.archive
            assert HEX64.match(archive.sha256), archive.url
            assert archive.url.startswith(
                ("https://deb.debian.org/debian/pool/", "https://files.pythonhosted.org/packages/")
            ), archive.url
            assert archive.origin.startswith(("debian-source:", "pypi-sdist:")), archive.origin
            assert 0 < archive.size <= corpus.ARCHIVE_LIMIT
            assert source.member.rsplit("/", 1)[-1].startswith(item.filename), item.name
    cached = {corpus._target(item, Path("/c")) for item in corpus.MANIFEST}
    assert len(cached) == len(corpus.MANIFEST), "two items would share one cache path"


def test_kinds_with_items() -> None:
    covered = {item.kind for item in corpus.MANIFEST}
    assert covered == {"vmx", "dictfile", "vmdk-sparse", "vmdk-sesparse", "xen-cfg", "ovf"}
    assert len(corpus.corpus_items("vmx")) >= 10
    assert all(not item.damaged for item in corpus.corpus_items("vmdk-sparse"))
    assert [i.name for i in corpus.corpus_items("vmdk-sparse", include_damaged=True) if i.damaged] == [
        "qemu/afl9.vmdk"
    ]
    assert corpus.corpus_items("vmsd") == []
    with pytest.raises(ValueError):
        corpus.corpus_items("no-such-kind")


def test_corpus_files_are_pytest_params() -> None:
    params = corpus.corpus_files("xen-cfg")
    assert [p.id for p in params] == [i.name for i in corpus.corpus_items("xen-cfg")]
    assert all(isinstance(p.values[0], Item) for p in params)


# --- every real file: download, hashes, basic facts -----------------------------------------


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _check_kind(item: Item, data: bytes) -> None:
    if item.kind in ("vmx", "dictfile"):
        bad = [line for line in _lines(data) if not DICT_LINE.match(line)]
        assert not bad, f"{item.name}: not key = \"value\" lines: {bad[:3]}"
        if item.kind == "vmx":
            assert b"config.version" in data or b"encryption.keySafe" in data
    elif item.kind == "xen-cfg":
        bad = [line for line in _lines(data) if not XEN_LINE.match(line)]
        assert not bad, f"{item.name}: not key = value lines: {bad[:3]}"
        assert re.search(rb"(?m)^disk\s*=\s*\[", data)
    elif item.kind == "vmdk-sparse":
        assert data[:4] == b"KDMV"
        if not item.damaged:
            # header: capacity, grain size, descriptor offset and size, in 512-byte sectors
            capacity, grain, desc_off, desc_len = struct.unpack_from("<4Q", data, 12)
            assert capacity > 0 and grain > 0 and desc_off > 0 and desc_len > 0
            text = data[desc_off * 512 : (desc_off + desc_len) * 512]
            assert text.startswith(b"# Disk DescriptorFile")
            assert b"createType=" in text
    elif item.kind == "vmdk-sesparse":
        magic, version = struct.unpack_from("<QQ", data, 0)
        assert magic == SESPARSE_MAGIC
        assert version >> 32 == 2  # SESparse major version 2 (the high half)
    elif item.kind == "ovf":  # a descriptor (XML Envelope) or its manifest (digest lines)
        if item.filename.endswith(".mf"):
            assert all(re.match(rb"^SHA(1|256|512)\(.+\)= ?[0-9a-f]+$", line)
                       for line in data.splitlines() if line)
        else:
            assert data.lstrip().startswith(b"<?xml") and b"Envelope" in data
    else:  # pragma: no cover - a new kind needs its own check here
        raise AssertionError(f"no basic check for kind {item.kind}")


@pytest.mark.parametrize("item", corpus.corpus_files(include_damaged=True))
def test_corpus_file(item: Item, cache_dir: Path) -> None:
    path = corpus.require(item, cache_dir)
    data = path.read_bytes()
    assert len(data) == item.size
    assert hashlib.sha256(data).hexdigest() == item.sha256
    assert path.name == item.filename
    assert data.startswith(item.head)
    for needle in item.expect:
        assert needle in data, f"{item.name}: {needle!r} missing"
    _check_kind(item, data)
    # a second fetch is served from the cache, even with downloads forbidden
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(corpus.OFFLINE_ENV, "1")
        assert corpus.fetch(item, cache_dir) == path


SOURCES = [
    pytest.param(item, source, id=f"{item.name}@{source.archive.filename}")
    for item in corpus.MANIFEST
    for source in item.sources
]


@pytest.mark.parametrize(("item", "source"), SOURCES)
def test_every_source_holds_the_same_bytes(item: Item, source: Source, cache_dir: Path) -> None:
    """Alternative sources rot silently otherwise: each one is downloaded and checked."""
    try:
        corpus.verify_source(item, source, cache_dir)
    except CorpusUnavailable as exc:
        missing(f"corpus source {source.archive.url} ({exc})")


def test_iotest_version3_decoded_facts(cache_dir: Path) -> None:
    """The facts qemu's iotest 059 states about this VMware-made stream image, checked on its header."""
    (item,) = [i for i in corpus.MANIFEST if i.name == "qemu/iotest-version3.vmdk"]
    data = corpus.require(item, cache_dir).read_bytes()
    version, flags, capacity, grain = struct.unpack_from("<IIQQ", data, 4)
    assert version == 3
    assert capacity * 512 == 16 * 1024**3  # "virtual size: 16 GiB"
    assert grain * 512 == 65536  # "cluster_size: 65536"


# --- the downloader, on archives built here (no network) ------------------------------------


def _tar_gz(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return buf.getvalue()


def _archive_on_disk(tmp_path: Path, blob: bytes, name: str = "pkg-1.0.tar.gz") -> Archive:
    path = tmp_path / "registry" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(blob)
    return Archive("pypi-sdist:pkg==1.0", path.as_uri(), hashlib.sha256(blob).hexdigest(), len(blob), "MIT")


def _item(archive: Archive, member: str, content: bytes, **kw) -> Item:
    return Item(
        kw.pop("name", "test/" + member.rsplit("/", 1)[-1]),
        kw.pop("kind", "vmx"),
        (Source(archive, member),),
        kw.pop("sha256", hashlib.sha256(content).hexdigest()),
        kw.pop("size", len(content)),
        "synthetic",
        **kw,
    )


VMX = b'.encoding = "UTF-8"\nconfig.version = "8"\n'


def test_fetch_extracts_one_member_and_reuses_the_cache(tmp_path: Path, monkeypatch) -> None:
    archive = _archive_on_disk(tmp_path, _tar_gz({"pkg-1.0/a.vmx": VMX, "pkg-1.0/b.txt": b"other"}))
    item = _item(archive, "pkg-1.0/a.vmx", VMX)
    cache = tmp_path / "cache"
    path = corpus.fetch(item, cache)
    assert path.read_bytes() == VMX
    assert path.is_relative_to(cache)
    assert sorted(p.name for p in (cache / "corpus" / "files").rglob("*") if p.is_file()) == ["a.vmx"]
    # the registry disappears and downloads are forbidden: the cache still answers
    (tmp_path / "registry" / "pkg-1.0.tar.gz").unlink()
    monkeypatch.setenv(corpus.OFFLINE_ENV, "1")
    assert corpus.fetch(item, cache) == path
    # a cached archive (without the file) is enough too
    path.unlink()
    assert corpus.fetch(item, cache).read_bytes() == VMX


def test_fetch_decompresses_gzip_and_bz2_members(tmp_path: Path) -> None:
    blob = _tar_gz({"p/x.vmdk.gz": gzip.compress(b"KDMV" * 100), "p/y.vmdk.bz2": bz2.compress(b"COWD" * 50)})
    archive = _archive_on_disk(tmp_path, blob)
    gz = _item(archive, "p/x.vmdk.gz", b"KDMV" * 100, kind="vmdk-sparse", compression="gzip")
    bz = _item(archive, "p/y.vmdk.bz2", b"COWD" * 50, kind="vmdk-cowd", compression="bz2")
    assert corpus.fetch(gz, tmp_path / "c").name == "x.vmdk"
    assert corpus.fetch(bz, tmp_path / "c").read_bytes() == b"COWD" * 50


def test_fetch_reads_zip_archives(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("pkg/data/a.vmx", VMX)
    archive = _archive_on_disk(tmp_path, buf.getvalue(), "pkg-1.0-py3-none-any.whl")
    assert corpus.fetch(_item(archive, "pkg/data/a.vmx", VMX), tmp_path / "c").read_bytes() == VMX


def test_wrong_archive_hash_is_an_error_not_a_skip(tmp_path: Path) -> None:
    good = _archive_on_disk(tmp_path, _tar_gz({"p/a.vmx": VMX}))
    bad = Archive(good.origin, good.url, "0" * 64, good.size, good.license)
    with pytest.raises(CorpusError) as err:
        corpus.fetch(_item(bad, "p/a.vmx", VMX), tmp_path / "c")
    assert not isinstance(err.value, CorpusUnavailable)
    assert not list((tmp_path / "c" / "corpus" / "archives").iterdir())  # nothing half-written kept


def test_wrong_member_hash_leaves_no_file(tmp_path: Path) -> None:
    archive = _archive_on_disk(tmp_path, _tar_gz({"p/a.vmx": VMX}))
    item = _item(archive, "p/a.vmx", VMX, sha256="1" * 64)
    with pytest.raises(CorpusError, match="pinned"):
        corpus.fetch(item, tmp_path / "c")
    assert not corpus._target(item, tmp_path / "c").exists()
    assert not [p for p in (tmp_path / "c").rglob("*") if p.is_file() and p.suffix == ".vmx"]


def test_decompression_is_bounded_by_the_pinned_size(tmp_path: Path) -> None:
    bomb = gzip.compress(b"\0" * (8 * 1024 * 1024))
    archive = _archive_on_disk(tmp_path, _tar_gz({"p/bomb.vmdk.gz": bomb}))
    item = _item(archive, "p/bomb.vmdk.gz", b"\0" * 4096, kind="vmdk-sparse", compression="gzip")
    with pytest.raises(CorpusError, match="more than the 4096 bytes"):
        corpus.fetch(item, tmp_path / "c")


def test_corrupt_compressed_member_is_a_corpus_error(tmp_path: Path) -> None:
    archive = _archive_on_disk(tmp_path, _tar_gz({"p/x.vmdk.bz2": b"BZh91AY&SY" + b"\xff" * 64}))
    item = _item(archive, "p/x.vmdk.bz2", b"KDMV", kind="vmdk-sparse", compression="bz2")
    with pytest.raises(CorpusError, match="cannot decompress"):
        corpus.fetch(item, tmp_path / "c")
    with pytest.raises(CorpusError, match="cannot decompress"):
        corpus.verify_source(item, item.sources[0], tmp_path / "c")


def test_links_and_escaping_names_are_never_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.vmx"
    secret.write_bytes(VMX)
    blob = _tar_gz({"../../escape.vmx": VMX}, links={"p/a.vmx": str(secret)})
    archive = _archive_on_disk(tmp_path, blob)
    cache = tmp_path / "c"
    with pytest.raises(CorpusError, match="no regular file 'p/a.vmx'"):
        corpus.fetch(_item(archive, "p/a.vmx", VMX), cache)
    # a member named with ../ is written under the cache, by the manifest's file name only
    path = corpus.fetch(_item(archive, "../../escape.vmx", VMX), cache)
    assert path.is_relative_to(cache) and path.name == "escape.vmx"
    assert not (tmp_path.parent / "escape.vmx").exists()


def test_unsafe_item_names_are_refused(tmp_path: Path) -> None:
    archive = _archive_on_disk(tmp_path, _tar_gz({"p/a.vmx": VMX}))
    with pytest.raises(ValueError):
        _item(archive, "p/..", VMX)
    with pytest.raises(ValueError):
        _item(archive, "p/a.vmx", VMX, kind="not-a-kind")


def test_unreachable_source_falls_back_then_reports_unavailable(tmp_path: Path, monkeypatch) -> None:
    good = _archive_on_disk(tmp_path, _tar_gz({"p/a.vmx": VMX}))
    gone = Archive("debian-source:gone=1", (tmp_path / "nowhere.tar.gz").as_uri(), "2" * 64, 10, "MIT")
    both = Item("test/a.vmx", "vmx", (Source(gone, "p/a.vmx"), Source(good, "p/a.vmx")),
                hashlib.sha256(VMX).hexdigest(), len(VMX), "synthetic")
    assert corpus.fetch(both, tmp_path / "c").read_bytes() == VMX
    only_gone = Item("test/b.vmx", "vmx", (Source(gone, "p/b.vmx"),), "3" * 64, 5, "synthetic")
    with pytest.raises(CorpusUnavailable, match="no source reachable"):
        corpus.fetch(only_gone, tmp_path / "c")
    monkeypatch.setenv(corpus.OFFLINE_ENV, "1")
    fresh = _item(good, "p/a.vmx", VMX)
    with pytest.raises(CorpusUnavailable):
        corpus.fetch(fresh, tmp_path / "empty-cache")


def test_verify_source_checks_one_given_source(tmp_path: Path) -> None:
    archive = _archive_on_disk(tmp_path, _tar_gz({"p/a.vmx": VMX}))
    item = _item(archive, "p/a.vmx", VMX)
    corpus.verify_source(item, item.sources[0], tmp_path / "c")
    with pytest.raises(CorpusError, match="no regular file"):
        corpus.verify_source(item, Source(archive, "p/missing.vmx"), tmp_path / "c")
    assert not corpus._target(item, tmp_path / "c").exists()  # verification writes no cache file
    wrong = _item(archive, "p/a.vmx", VMX, sha256="4" * 64)
    with pytest.raises(CorpusError, match="pinned"):
        corpus.verify_source(wrong, wrong.sources[0], tmp_path / "c")
    # the digests now come from the sidecar: the archive's content is no longer needed
    (cached,) = (tmp_path / "c" / "corpus" / "archives").glob("*.tar.gz")
    assert (cached.parent / (cached.name + ".members.json")).is_file()
    corpus.verify_source(item, item.sources[0], tmp_path / "c")
