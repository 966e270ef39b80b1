"""The allocator setting (imtranslate/allocator.py): freed memory is reused without page faults."""
import ctypes
import resource
import sys

import pytest
from imtranslate import allocator
from imtranslate.tasks import load_config

glibc = pytest.mark.skipif(allocator._glibc() is None, reason="glibc's mallopt only (Linux)")


def _faults_of_touching(n_bytes: int) -> int:
    """Page faults of malloc + touching every page + free, straight through the C library (torch's
    own allocations in between, e.g. of Python objects, could land after the block and fragment
    the heap: that is glibc's business, not what this checks)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes, libc.memset.argtypes = [ctypes.c_void_p], [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(n_bytes)
    libc.memset(p, 1, n_bytes)
    libc.free(p)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@glibc
def test_freed_memory_is_reused_without_page_faults(monkeypatch):
    monkeypatch.delenv("IMTRANSLATE_MALLOC", raising=False)
    assert allocator.reuse_freed_memory() is True
    n = 48 << 20  # above glibc's own largest dynamic mmap threshold (32 MiB): mapped anew each time by default
    _faults_of_touching(n)  # grows the heap once
    pages = n // resource.getpagesize()
    # glibc's default would map (and fault in) all 12288 pages again; reused memory faults none of them
    assert _faults_of_touching(n) < pages // 20


def test_system_setting_is_left_alone(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setenv("IMTRANSLATE_MALLOC", "system")
    called = []
    monkeypatch.setattr(allocator, "_glibc", lambda: called.append(1))
    assert allocator.reuse_freed_memory() is False
    assert not called  # the C library is not even looked up


def test_config_default_and_choices():
    assert load_config(None, ["task=pix2pix"]).train.malloc == "reuse"
    assert load_config(None, ["task=pix2pix", "train.malloc=system"]).train.malloc == "system"
    with pytest.raises(Exception, match="malloc"):
        load_config(None, ["task=pix2pix", "train.malloc=jemalloc"])


def test_not_linux_does_nothing(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert allocator._glibc() is None
