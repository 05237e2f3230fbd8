"""WSJCorpus on a tiny fake LDC tree, and normalize_dot on real-looking transcript lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from memsig.data.io import CorpusError
from memsig.data.wsj import WSJCorpus, normalize_dot


def _write(root: Path, rel: str, *lines: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="ascii")


@pytest.fixture
def ldc(tmp_path: Path) -> Path:
    """Two discs: wsj0 (dots under transcrp/dots) and wsj1 (dots next to the audio)."""
    d0 = "11-4.1/wsj0/transcrp/dots"
    _write(
        tmp_path,
        f"{d0}/si_tr_s/01a/01ac0100.dot",
        "THE COMPANY SAID \\COMMA IT EXPECTS [loud_breath] *SALES* TO RISE \\PERIOD (01ac0102)",
        "",
        "PRICES FELL (01ac0101)",
    )
    _write(tmp_path, f"{d0}/si_tr_s/01b/01bc0100.dot", "BONDS ROSE (01bc0101)")
    _write(tmp_path, f"{d0}/si_et_05/441/441c0200.dot", "EVAL ONE (441c0201)", "EVAL TWO (440c0202)")
    _write(tmp_path, f"{d0}/si_dt_05/4k0/4k0c0300.dot", "IGNORED DEV FIVE (4k0c0301)")  # not configured
    _write(tmp_path, f"{d0}/sd_tr_s/002/002c0100.dot", "IGNORED SD (002c0101)")  # not configured
    _write(tmp_path, "13-34.1/wsj1/si_tr_s/46a/46ac0100.DOT", "WSJ ONE TRAIN (46ac0101)")  # upper-case .DOT
    _write(tmp_path, "13-34.1/wsj1/SI_DT_20/4k6/4k6c0100.dot", "DEV B (4k6c0102)", "DEV A (4k6c0101)")
    # the same utterance again on a later disc: kept once, from the first file in path order
    _write(tmp_path, "13-35.1/wsj0/si_tr_s/01a/01ac0100.dot", "PRICES FELL AGAIN (01ac0101)")
    _write(tmp_path, "11-4.1/wsj0/doc/readme.txt", "not a transcript")
    return tmp_path


def test_splits_content_and_order(ldc: Path) -> None:
    splits = WSJCorpus(str(ldc)).load()
    assert splits.train == [
        "PRICES FELL",
        "THE COMPANY SAID, IT EXPECTS SALES TO RISE.",
        "BONDS ROSE",
        "WSJ ONE TRAIN",
    ]
    assert splits.dev == ["DEV A", "DEV B"]
    assert splits.test == ["EVAL TWO", "EVAL ONE"]
    assert WSJCorpus.name == "wsj"


def test_subsets_are_configurable(ldc: Path) -> None:
    splits = WSJCorpus(str(ldc), train_subsets=("si_tr_s", "sd_tr_s"), dev_subsets=("si_dt_05",)).load()
    assert "IGNORED SD" in splits.train and len(splits.train) == 5
    assert splits.dev == ["IGNORED DEV FIVE"]


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (
            "THE COMPANY SAID \\COMMA IT EXPECTS [loud_breath] *SALES* TO RISE \\PERIOD",
            "THE COMPANY SAID, IT EXPECTS SALES TO RISE.",
        ),
        ("[<door_slam] MR. SMITH ,COMMA OF U.S. STEEL [door_slam>] SAID .PERIOD", "MR. SMITH, OF U.S. STEEL SAID."),
        ("[/door_slam] <THE> A:ND WAS IT ~GOOD ?QUESTION-MARK", "THE AND WAS IT GOOD?"),
        ('\\"DOUBLE-QUOTE HE SAID \\,COMMA WELL -HYPHEN KNOWN ;SEMI-COLON :COLON', "HE SAID, WELL-KNOWN;:"),
        ("PRICES (LEFT-PAREN SOME )RIGHT-PAREN {LEFT-BRACE X }RIGHT-BRACE 'SINGLE-QUOTE", "PRICES SOME X"),
        (
            "UP --DASH DOWN \\EXCLAMATION-POINT TEN %PERCENT THREE .POINT FIVE",
            "UP - DOWN! TEN PERCENT THREE POINT FIVE",
        ),
        ("AT\\&T 'EM EX- COLON . POINT", "AT&T 'EM EX- COLON POINT"),
        ("  lower  case\tstays  ", "lower case stays"),
        ("[loud_breath] [tongue_click]", ""),
    ],
)
def test_normalize_dot(raw: str, want: str) -> None:
    assert normalize_dot(raw) == want


def test_missing_root(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(CorpusError, match="does not exist") as err:
        WSJCorpus(str(root)).load()
    assert str(root) in str(err.value) and "WSJ0/WSJ1" in str(err.value)


def test_no_dot_files(tmp_path: Path) -> None:
    _write(tmp_path, "wsj0/si_tr_s/readme.txt", "hello")
    with pytest.raises(CorpusError, match="no .dot transcript files") as err:
        WSJCorpus(str(tmp_path)).load()
    assert str(tmp_path) in str(err.value)


def test_empty_split_names_subsets(ldc: Path) -> None:
    with pytest.raises(CorpusError, match="'dev' is empty") as err:
        WSJCorpus(str(ldc), dev_subsets=("si_dt_jr", "si_dt_xx")).load()
    msg = str(err.value)
    assert "'si_dt_jr' or 'si_dt_xx'" in msg and "dev_subsets" in msg and str(ldc) in msg


def test_malformed_line(ldc: Path) -> None:
    bad = ldc / "11-4.1/wsj0/transcrp/dots/si_tr_s/01b/01bc0100.dot"
    bad.write_text("BONDS ROSE (01bc0101)\nNO UTTERANCE ID HERE\n", encoding="ascii")
    with pytest.raises(CorpusError, match="line 2") as err:
        WSJCorpus(str(ldc)).load()
    assert str(bad) in str(err.value) and "(UTTID)" in str(err.value)


def test_linked_disc_is_followed(ldc: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("mnt")
    _write(elsewhere, "wsj1/si_tr_s/47a/47ac0100.dot", "LINKED DISC (47ac0101)")
    (ldc / "13-36.1").symlink_to(elsewhere, target_is_directory=True)
    assert WSJCorpus(str(ldc)).load().train[-1] == "LINKED DISC"
