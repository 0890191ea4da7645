"""The README shows what its examples really print: the Quick start's `monitor once` on the example
config, every `monitor … match` example with its command, and the 80-column `monitor feeds`.

The Quick start runs on a copy of the example config and its files in a temporary folder, with the
real news feeds left out (tests stay on this machine): what it prints comes from the bundled
sample feed alone, as the README says, so the comparison is exact."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text("utf-8")
MONITOR = f"monitor() {{ '{sys.executable}' -m monitor.cli \"$@\"; }}"  # the installed command


def blocks(text: str) -> list[str]:
    """The contents of the README's ```text blocks."""
    return re.findall(r"^```text\n(.*?)^```$", text, re.M | re.S)


def local_feeds_only(config: str) -> str:
    """The config's text without the feeds fetched over the network (an entry of `feeds:` that
    holds a URL), everything else as written."""
    head, rest = config.split("\nfeeds:\n", 1)
    listed = re.match(r"(?:  .*\n)*", rest)
    assert listed is not None
    entries = re.split(r"(?m)^(?=  - )", listed.group())
    local = "".join(entry for entry in entries if "://" not in entry)
    return f"{head}\nfeeds:\n{local}{rest[listed.end() :]}"


def shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "80"}
    return subprocess.run(
        ["bash", "-c", f"{MONITOR}\n{command}"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_quick_start_prints_what_the_readme_shows_and_nothing_again(tmp_path: Path) -> None:
    quick_start = README[README.index("## Quick start") : README.index("## Commands")]
    (commands,) = re.findall(r"^```sh\n(.*?)^```$", quick_start, re.M | re.S)
    command = commands.splitlines()[0].split(" && ")[-1]
    assert command == "monitor --config config.example.yaml once"
    (shown,) = blocks(quick_start)

    local = local_feeds_only((ROOT / "config.example.yaml").read_text("utf-8"))
    assert re.findall(r"^  - name: (\S+)", local, re.M) == ["sample"]
    (tmp_path / "config.example.yaml").write_text(local, "utf-8")
    (tmp_path / "examples" / "feeds").mkdir(parents=True)
    sample = ROOT / "examples" / "feeds" / "sample.xml"
    (tmp_path / "examples" / "feeds" / "sample.xml").write_bytes(sample.read_bytes())

    first = shell(command, tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.rstrip("\n") == shown.rstrip("\n")
    assert (tmp_path / "monitor.db").exists()  # next to the config file
    again = shell(command, tmp_path)  # "Run it again and nothing is repeated"
    assert (again.returncode, again.stdout) == (0, "")


def test_every_match_example_prints_what_the_readme_shows() -> None:
    examples = [
        block
        for block in blocks(README)
        if block.startswith("$ ") and " monitor --config config.example.yaml match" in block
    ]
    assert len(examples) >= 2  # stdin with --query, and the reference article
    for example in examples:
        command, *shown = example.rstrip("\n").split("\n")
        result = shell(command.removeprefix("$ "), ROOT)
        assert result.returncode == 0, result.stderr
        assert result.stdout.rstrip("\n").split("\n") == shown, command


def test_the_readmes_feeds_listing_is_the_80_column_golden_file() -> None:
    """What `monitor feeds` prints at 80 columns is checked against the golden file by
    tests/test_feeds_command.py; the README shows that file."""
    golden = (ROOT / "tests" / "data" / "feeds_80_columns.txt").read_text("utf-8")
    assert f"$ monitor feeds\n{golden}" in blocks(README)
