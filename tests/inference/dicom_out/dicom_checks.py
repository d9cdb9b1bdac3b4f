"""Real-peer checks shared by the SR and SEG tests: dciodvfy and dsrdump."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import require_tool


def dciodvfy(path: Path) -> list[str]:
    """Run dciodvfy on ``path``; fail on any ``Error`` line, return (and print) the warnings."""
    tool = require_tool("dciodvfy")
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    lines = (result.stdout + result.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [line for line in lines if line.startswith("Warning")]
    print(f"dciodvfy {path.name}: {len(warnings)} warning(s)", *warnings, sep="\n  ")
    assert not errors, f"dciodvfy errors for {path.name}:\n" + "\n".join(errors)
    assert result.returncode == 0, f"dciodvfy exit {result.returncode}:\n" + "\n".join(lines)
    return warnings


def dsrdump(path: Path) -> str:
    """The dsrdump rendering of an SR; fails when dsrdump does not exit 0."""
    tool = require_tool("dsrdump")
    result = subprocess.run(
        [tool, "+Pl", "+Pu", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"dsrdump exit {result.returncode}:\n{result.stderr}"
    return result.stdout


def dciodvfy_knows(path: Path) -> bool:
    """Whether the installed dciodvfy has an IOD definition for the object's SOP class."""
    tool = require_tool("dciodvfy")
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    return "Information Object Not found" not in result.stdout + result.stderr
