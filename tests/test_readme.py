"""The README's Python example runs as a script and prints exactly the output the README shows.

The script is the first ```python block under "## Python API"; its output is the ```text block
after it. It runs in a fresh directory in a subprocess with a hard timeout.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _example() -> tuple[str, str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API") :]
    match = re.search(r"```python\n(.*?)```.*?```text\n(.*?)```", section, re.S)
    assert match, "the README's Python API section has a python block and a text block"
    return match.group(1), match.group(2)


def test_readme_python_example_runs_and_prints_what_the_readme_shows(tmp_path: Path) -> None:
    """The example needs no file of its own and its real output is the one documented."""
    script, expected = _example()
    (tmp_path / "example.py").write_text(script, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected
    assert (tmp_path / "state.etsnap").is_file()
