"""Traversal, the pure half: the DICOM UID grammar that keeps ``..`` out of instance paths,
and the containment check the instance store and retention apply to every path."""

from __future__ import annotations

from pathlib import Path

import pytest

from channels.dicom.rules import uid_problem
from engine.flow.instances import is_under

VALID = [
    "1",
    "0",
    "1.2.840.10008.5.1.4.1.1.2",
    "2.25.329800735698586629295641978511506172918",
    "1.0.3",
    "9" * 64,
    "1.2.3.0",
]
INVALID = {
    "": "empty",
    "..": "empty component",
    ".": "empty component",
    "1..2": "empty component",
    ".1.2": "empty component",
    "1.2.": "empty component",
    "../..": "not digits and dots",
    "1.2/../3": "not digits and dots",
    "1.2.3 ": "not digits and dots",
    "1.2\\3.4": "not digits and dots",
    "1.2.٣": "not digits and dots",  # an Arabic-Indic digit: str.isdigit() says yes
    "1.02.3": "leading zero",
    "01.2": "leading zero",
    "9" * 65: "over 64 characters",
}


@pytest.mark.parametrize("uid", VALID)
def test_a_uid_of_digits_and_dots_without_leading_zeros_is_valid(uid: str) -> None:
    assert uid_problem(uid) is None


@pytest.mark.parametrize(("uid", "problem"), sorted(INVALID.items()))
def test_a_uid_breaking_the_grammar_is_refused_with_what_is_wrong(uid: str, problem: str) -> None:
    assert uid_problem(uid) == problem


@pytest.mark.parametrize(
    ("relative", "inside"),
    [
        ("1.2/1.3/1.4.dcm", True),
        ("../x.dcm", False),
        ("a/../../x.dcm", False),
        (".", False),
        ("a/./b.dcm", True),
        ("/etc/passwd", False),
    ],
)
def test_a_path_is_under_the_root_only_when_it_resolves_strictly_inside(
    tmp_path: Path, relative: str, inside: bool
) -> None:
    root = tmp_path / "instances"
    assert is_under(root / relative, root) is inside


def test_a_symlink_out_of_the_root_is_not_under_it(tmp_path: Path) -> None:
    root = tmp_path / "instances"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    assert not is_under(root / "link" / "x.dcm", root)


@pytest.mark.parametrize("uid", sorted(INVALID))
def test_every_uid_refusal_fits_a_c_store_error_comment(uid: str) -> None:
    longest = "TransferSyntaxUID"  # of the UIDs meta_from_dataset checks, the longest name
    assert len(f"{longest} is not a valid UID ({uid_problem(uid)})") <= 64  # LO
