"""The test helpers themselves, where a wrong one would make other tests flaky."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import read_until


def test_read_until_sees_a_line_that_arrived_in_the_same_chunk_as_the_one_before() -> None:
    program = "import os, time; os.write(1, b'a\\nb\\nc\\n'); time.sleep(30)"  # one write
    proc = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    try:
        assert read_until(proc, "b", timeout=10) == "a\nb\n"
        proc.kill()
        rest, _ = proc.communicate(timeout=10)
        assert rest == "c\n"  # what followed stays in the pipe for the caller
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
