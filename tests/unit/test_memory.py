"""schemahub.memory: freed buffers of an archive day's size are reused, not faulted in again from the kernel.

Each case runs in a child process, so that it starts from the allocator's defaults (this test process may have
been tuned by a CLI test). The child allocates and touches 24 buffers of 8 MB (an inflated piece of a day file is
~7 MB, a slice's text 16 MB), frees them, and does it again; it prints the page faults of the second pass.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"

CHILD = """
import json, resource, sys
sys.path.insert(0, {functions!r})
from schemahub.memory import tune_allocator
tuned = tune_allocator() if {tune} else None
def one_pass():
    bufs = [bytearray(8 << 20) for _ in range(24)]
    for b in bufs:
        b[::4096] = b"\\x01" * len(range(0, len(b), 4096))
    del bufs
one_pass()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
one_pass()
print(json.dumps({{"tuned": tuned, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}}))
"""


def _second_pass(tune: bool) -> dict:
    code = CHILD.format(functions=str(FUNCTIONS), tune=tune)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def test_freed_day_sized_buffers_are_reused_once_the_allocator_is_tuned():
    pages = 24 * (8 << 20) // 4096  # 49,152: every page of the second pass, were all of it new memory
    default, tuned = _second_pass(False), _second_pass(True)
    if platform.libc_ver()[0] != "glibc":  # musl, macOS: nothing to tune, and nothing changes
        assert tuned["tuned"] is False
        return
    assert tuned["tuned"] is True
    assert default["faults"] > pages // 2, default  # glibc's defaults: the second pass is new memory again
    assert tuned["faults"] < pages // 20, tuned  # tuned: the freed memory is reused



def test_a_platform_where_ctypes_cannot_open_the_process_itself_is_left_untuned(monkeypatch):
    # On Windows ctypes.CDLL(None) raises TypeError (CDLL.__init__ tests `"/" in name`): "anywhere else nothing
    # changes", so tune_allocator() must say False there, not fail every CLI command as an internal error.
    import ctypes

    from schemahub import memory

    def no_process_handle(name, *a, **kw):
        if name is None:
            raise TypeError("argument of type 'NoneType' is not iterable")
        raise OSError(name)

    monkeypatch.setattr(ctypes, "CDLL", no_process_handle)
    monkeypatch.setattr(memory, "_tuned", None)
    assert memory.tune_allocator() is False
    assert memory.tune_allocator() is False  # and it is not tried again
