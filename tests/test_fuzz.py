"""Every decoder that `inspect` knows, fed random and mutated bytes.

The only exception allowed to escape is a `VmsiftError`; every input is small (bounded work,
no timing asserted) and memory stays bounded (tracemalloc peak on files whose size fields are
absurd). The seeds are the demo VM and the public samples; without the samples (under CI=true
they must be there) the seed set is smaller, and `test_samples_are_seeds` says so.
"""

import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import SAMPLES, missing, mutate
from vmsift.errors import VmsiftError
from vmsift.inspect import _detectors, inspect_source
from vmsift.source import BytesSource

ROOT = Path(__file__).resolve().parent.parent
SEEDS = sorted(p for p in [*(ROOT / "examples" / "demo-vm").iterdir(), *SAMPLES.glob("*")]
               if p.is_file() and p.suffix != ".md")
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_samples_are_seeds():
    """The public samples feed the mutation tests; locally their absence is a skip."""
    if not any(p.parent == SAMPLES for p in SEEDS):
        missing(f"samples folder {SAMPLES}")


def decode(data: bytes) -> None:
    try:
        inspect_source(BytesSource(data, "fuzz.bin"))
    except VmsiftError:
        pass


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data):
    decode(data)


@FUZZ
@given(st.sampled_from(SEEDS), st.data())
def test_mutated_real_files(seed, data):
    raw = mutate(data, seed.read_bytes()[:256 * 1024])
    decode(raw)


@pytest.mark.parametrize("module", _detectors(), ids=lambda m: m.KIND)
@FUZZ
@given(data=st.binary(max_size=2048))
def test_each_decoder_directly(module, data):
    """Decoders must also be safe when called on bytes their sniffer would not accept."""
    assert isinstance(module.sniff(data), bool)
    try:
        module.inspect(BytesSource(data, "fuzz.bin"))
    except VmsiftError:
        pass


@pytest.mark.parametrize("seed", SEEDS, ids=lambda p: p.name)
def test_absurd_sizes_stay_bounded(seed):
    """Every 4- and 8-byte window of a real file's head set to 0xFF..: peak memory < 64 MiB."""
    raw = seed.read_bytes()[:2048]
    tracemalloc.start()
    try:
        for width in (4, 8):
            for pos in range(0, min(len(raw), 600) - width, width):
                decode(raw[:pos] + b"\xff" * width + raw[pos + width:])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20
