"""docs/faults.md, the table of faults the service survives, cites tests that exist: each case is a
test named after it (`test_fault_NN_…`) or a decision in the notes below the table, every cited
test is defined in tests/, and every `test_fault_NN_…` test is cited in row NN."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAULTS = (ROOT / "docs" / "faults.md").read_text("utf-8")
ROW = re.compile(r"^\| (\d+) \| .* \| (.*) \|$", re.M)
CITED = re.compile(r"`([\w/]+\.py)(?:::(\w+))?`")
NOTE = re.compile(r"^- \*\*(\d+(?:, \d+)*)\*\*", re.M)
TEST = re.compile(r"^(?:async )?def (test_\w+)\(", re.M)


def rows() -> dict[int, str]:
    """Each case's number and its Tests column."""
    return {int(number): tests for number, tests in ROW.findall(FAULTS)}


def decided() -> set[int]:
    """The cases a note below the table speaks of."""
    return {int(n) for numbers in NOTE.findall(FAULTS) for n in numbers.split(", ")}


def defined_tests() -> dict[str, set[str]]:
    """The test functions of each tests/test_*.py, by file name."""
    return {
        path.name: set(TEST.findall(path.read_text("utf-8")))
        for path in (ROOT / "tests").glob("test_*.py")
    }


def test_the_table_numbers_its_cases_in_order() -> None:
    numbers = list(rows())
    assert len(numbers) > 70
    assert numbers == list(range(1, len(numbers) + 1))


def test_every_fault_case_is_a_test_or_a_decision() -> None:
    undecided = [
        number
        for number, tests in rows().items()
        if not any(name.startswith(f"test_fault_{number:02d}_") for _, name in CITED.findall(tests))
        and number not in decided()
    ]
    assert undecided == []


def test_every_cited_test_exists() -> None:
    defined = defined_tests()
    missing = [
        f"{number}: {path}::{name}" if name else f"{number}: {path}"
        for number, tests in rows().items()
        for path, name in CITED.findall(tests)
        if (name and name not in defined.get(path, set()))
        or (not name and not (ROOT / path).exists())
    ]
    assert missing == []


def test_every_fault_test_is_cited_in_its_row() -> None:
    table = rows()
    uncited = [
        f"{path}::{name}"
        for path, names in sorted(defined_tests().items())
        for name in sorted(names)
        if (case := re.match(r"test_fault_(\d+)_", name))
        and f"`{path}::{name}`" not in table.get(int(case[1]), "")
    ]
    assert uncited == []
