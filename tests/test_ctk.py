"""-ctk.vmdk change tracking files: header, block table, changed ranges, damage.

No public CTK sample exists: files come from tests/fixtures/ctk_writer.py, which follows the
layout documented (and marked as hypothesis) in docs/formats/ctk.md. There is no oracle.
"""

from __future__ import annotations

import json
import struct
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures import ctk_writer as w
from tests.helpers import sample
from vmsift.errors import FormatError, LimitError, TruncatedError, VmsiftError
from vmsift.formats import ctk
from vmsift.formats.vmdk import cowd, sparse
from vmsift.source import BytesSource, FileSource

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture
def lab() -> ctk.Ctk:
    return ctk.read(BytesSource(w.lab_ctk(), "lab-ctk.vmdk"))


def test_header(lab):
    assert (lab.version, lab.header_size, lab.disk_sectors, lab.disk_size) == \
        (1, 0x200, 2 * MIB, GIB)
    assert (lab.block_count, lab.block_sectors, lab.block_size) == (16384, 128, 64 * KIB)
    assert (lab.change_seq, lab.unknown_8, lab.unknown_40) == (9, 0, 0)
    assert lab.change_uuid == bytes.fromhex("52ed45cf232c6af0a5265971b79f1fb3")
    assert lab.change_id == "52 ed 45 cf 23 2c 6a f0-a5 26 59 71 b7 9f 1f b3/9"
    assert lab.layout_consistent and lab.entries_present == 16384 and lab.warnings == []
    assert len(w.lab_ctk()) == 512 + 4 * 16384


def test_size_matches_public_datapoints():
    # 40 GiB -> 2,621,952 bytes and 200 GiB -> 6,554,112 bytes were seen on datastores:
    # both are 512 + 4 bytes per 64 KiB (resp. 128 KiB) block under our hypothesis.
    assert len(w.build_ctk(40 * GIB // 512, 128)) == 2_621_952
    assert len(w.build_ctk(200 * GIB // 512, 256)) == 6_554_112


def test_change_id_round_trip():
    uuid, seq = ctk.parse_change_id("52 ed 45 cf 23 2c 6a f0-a5 26 59 71 b7 9f 1f b3/4442")
    assert (uuid.hex(), seq) == ("52ed45cf232c6af0a5265971b79f1fb3", 4442)
    assert ctk.format_change_id(uuid, seq) == \
        "52 ed 45 cf 23 2c 6a f0-a5 26 59 71 b7 9f 1f b3/4442"
    for bad in ("52 3c/446", "*", "", "52 ed 45 cf 23 2c 6a f0-a5 26 59 71 b7 9f 1f zz/1"):
        with pytest.raises(FormatError):
            ctk.parse_change_id(bad)


def test_changed_since(lab):
    assert ctk.changed_since(lab, 0) == [(0, 256 * KIB), (640 * KIB, 192 * KIB),
                                         (6400 * KIB, 64 * KIB), (GIB - 64 * KIB, 64 * KIB)]
    assert ctk.changed_since(lab, 1) == [(640 * KIB, 192 * KIB), (6400 * KIB, 64 * KIB),
                                         (GIB - 64 * KIB, 64 * KIB)]
    assert ctk.changed_since(lab, 5) == [(704 * KIB, 128 * KIB), (6400 * KIB, 64 * KIB),
                                         (GIB - 64 * KIB, 64 * KIB)]
    assert ctk.changed_since(lab, 7) == [(GIB - 64 * KIB, 64 * KIB)]
    assert ctk.changed_since(lab, 9) == []


def test_last_block_clipped_to_disk_size():
    c = ctk.read(BytesSource(w.build_ctk(1000, 128, {7: 3, 6: 3})))
    assert c.block_count == 8
    assert ctk.changed_since(c, 0) == [(6 * 128 * 512, 1000 * 512 - 6 * 128 * 512)]


def test_runs_cross_read_blocks(monkeypatch):
    monkeypatch.setattr(ctk, "READ_BLOCK", 16)          # 4 entries per read
    changes = {i: 2 for i in range(3, 11)} | {12: 1}
    c = ctk.read(BytesSource(w.build_ctk(16 * 8, 8, changes)))
    assert ctk.changed_since(c, 0) == [(3 * 4096, 8 * 4096), (12 * 4096, 4096)]
    st_ = ctk.table_stats(c)
    assert (st_.changed_blocks, st_.max_seq, st_.min_nonzero_seq) == (9, 2, 1)


def test_inspect():
    r = ctk.inspect(BytesSource(w.lab_ctk(), "lab-ctk.vmdk"))
    doc = json.loads(json.dumps(r.data))
    assert r.kind == "ctk" and r.warnings == []
    assert doc["layout_consistent"] and doc["change_id"].endswith("/9")
    assert doc["table"] == {"changed_blocks": 9, "max_seq": 9, "min_nonzero_seq": 1,
                            "above_header_seq": 0}
    assert doc["changed_bytes"] == 9 * 64 * KIB and len(doc["changed_ranges"]) == 4
    assert doc["confidence"]["magic"] == "documented"
    assert doc["confidence"]["block_count"] == "hypothesis"
    assert doc["header_hex"].startswith("a27219f601000000")
    assert r.fields["changed blocks"].startswith("9 of 16384")


def test_sniff_does_not_collide_with_extents():
    data = w.lab_ctk()
    assert ctk.sniff(data) and not sparse.sniff(data) and not cowd.sniff(data)
    assert not ctk.sniff(b"KDMV" + bytes(60)) and not ctk.sniff(b"COWD" + bytes(60))
    assert not ctk.sniff(struct.pack("<Q", 0xCAFEBABE)) and not ctk.sniff(b"\xa2\x72")
    with open(sample("dfvfs_ext2.vmdk"), "rb") as f:
        assert not ctk.sniff(f.read(65536))


def test_bad_magic():
    data = b"XXXX" + w.lab_ctk()[4:]
    with pytest.raises(FormatError) as e:
        ctk.read(BytesSource(data, "x-ctk.vmdk"))
    assert e.value.source == "x-ctk.vmdk" and e.value.offset == 0


# --- damage ---------------------------------------------------------------------------------

def test_truncated_table():
    data = w.lab_ctk()[:512 + 4 * 11 + 2]       # 11 whole entries and half of one
    with pytest.raises(TruncatedError) as e:
        ctk.read(BytesSource(data, "cut-ctk.vmdk"))
    assert e.value.offset == 512 + 44 and e.value.source == "cut-ctk.vmdk"
    c = ctk.read(BytesSource(data), strict=False)
    assert (c.entries_present, c.entries_missing) == (11, 16384 - 11)
    # block 10 (seq 5) is present; everything from block 11 on is unknown, so "changed"
    assert ctk.changed_since(c, 4) == [(640 * KIB, GIB - 640 * KIB)]
    assert ctk.changed_since(c, 5) == [(704 * KIB, GIB - 704 * KIB)]
    r = ctk.inspect(BytesSource(data))
    assert any("cut after 11" in x for x in r.warnings)


def test_truncated_header():
    for n in (0, 3, 59):
        with pytest.raises(TruncatedError):
            ctk.read(BytesSource(w.lab_ctk()[:n]))
    with pytest.raises(TruncatedError) as e:
        ctk.read(BytesSource(w.lab_ctk()[:300]))
    assert e.value.offset == 300
    assert not ctk.read(BytesSource(w.lab_ctk()[:300]), strict=False).layout_consistent


def test_inconsistent_header_is_not_decoded():
    data = w.build_ctk(2048, 128, {0: 1}, block_count=0xFFFFFFFF, entries=16)
    with pytest.raises(FormatError) as e:
        ctk.read(BytesSource(data))
    assert e.value.offset == 32
    c = ctk.read(BytesSource(data), strict=False)
    assert not c.layout_consistent and "table not decoded" in c.warnings
    with pytest.raises(FormatError):
        ctk.changed_since(c, 0)
    r = ctk.inspect(BytesSource(data))
    assert r.data["table"] is None and r.data["block_count"] == 0xFFFFFFFF
    assert r.fields["layout"].startswith("NOT understood")
    with pytest.raises(FormatError) as e:
        ctk.read(BytesSource(w.build_ctk(2048, 0)))
    assert e.value.offset == 36
    good = w.build_ctk(2048, 128)
    for header_size in (8, 1 << 30):         # patched in: the writer would pad to that size
        data = good[:12] + struct.pack("<I", header_size) + good[16:]
        with pytest.raises(LimitError) as e:
            ctk.read(BytesSource(data))
        assert e.value.offset == 12


def test_absurd_block_count_bounded_memory():
    """A consistent header claiming 2^32-1 blocks on a 1 KiB file: no allocation, fast."""
    blocks = 0xFFFFFFFF
    data = w.build_ctk(blocks * 8, 8, {1: 3}, entries=4)
    assert len(data) == 512 + 16
    tracemalloc.start()
    try:
        with pytest.raises(TruncatedError):
            ctk.read(BytesSource(data))
        c = ctk.read(BytesSource(data), strict=False)
        ranges = ctk.changed_since(c, 0)
        r = ctk.inspect(BytesSource(data))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MIB
    assert ranges == [(4096, 4096), (4 * 4096, blocks * 4096 - 4 * 4096)]
    assert r.data["entries_missing"] == blocks - 4


@FUZZ
@given(st.binary(max_size=2000))
def test_fuzz_random_after_magic(tail):
    data = ctk.MAGIC + tail
    for strict in (True, False):
        try:
            c = ctk.read(BytesSource(data), strict=strict)
            if c.layout_consistent and c.block_count < 1 << 20:
                ctk.changed_since(c, 0)
        except VmsiftError:
            pass
    try:
        json.dumps(ctk.inspect(BytesSource(data)).data)
    except VmsiftError:
        pass


LAB_SMALL = w.build_ctk(4096, 64, {0: 1, 5: 4, 63: 2})


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(LAB_SMALL) - 1), st.binary(min_size=1, max_size=8)),
                max_size=8), st.integers(0, len(LAB_SMALL)))
def test_fuzz_mutated(edits, cut):
    data = bytearray(LAB_SMALL)
    for pos, patch in edits:
        data[pos:pos + len(patch)] = patch
    data = bytes(data[:cut])
    try:
        r = ctk.inspect(BytesSource(data))
        json.dumps(r.data)
    except VmsiftError:
        pass


def test_file_source(tmp_path):
    path = w.write_ctk(tmp_path / "disk-ctk.vmdk", 2 * GIB // 512, 128, {32767: 4})
    with FileSource(path) as src:
        assert ctk.sniff(src.read(0, 65536))
        c = ctk.read(src)
        assert ctk.changed_since(c, 3) == [(2 * GIB - 64 * KIB, 64 * KIB)]
