"""grokking_llc.core.io (issue 21): outputs honour the umask, carry a digest record and their
provenance; a damaged, foreign or unrecorded output is found, reported in one line and moved
aside (never deleted); a dry run only reports."""

from __future__ import annotations

import json
import os
import stat
import time

import pandas as pd
import pytest

from grokking_llc.core import io as gio


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def write(tmp_path, name="t.parquet", prov=None, rows=3):
    path = tmp_path / name
    gio.write_parquet(pd.DataFrame({"a": list(range(rows))}), path, provenance=prov)
    return path


def test_every_writer_honours_the_umask(tmp_path, umask_027):
    """The temporary file's mode survives the rename: it is created 0o666 less the umask, as
    open() creates a file (main made it 0o600, so a group could not read any output)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gio.write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "t.parquet")
    gio.torch_save({"x": 1}, tmp_path / "c.pt")
    with gio.atomic_path(tmp_path / "r.html") as tmp:
        tmp.write_text("<p>")
    fig = plt.figure()
    gio.save_figure(fig, tmp_path / "f.png")
    plt.close(fig)
    for name in ("t.parquet", "c.pt", "r.html", "f.png"):
        assert mode(tmp_path / name) == 0o640, name
        assert mode(gio.record_path(tmp_path / name)) == 0o640, name
    assert not list(tmp_path.glob(".*.tmp"))


def test_record_and_provenance_are_written_with_the_output(tmp_path):
    prov = gio.provenance("run-a", {"lr": 1.0, "p": 7}, sampler_id="fast-1")
    assert prov == {"run_id": "run-a", "settings": gio.settings_hash({"p": 7, "lr": 1}),
                    "sampler_id": "fast-1"}  # fmt: skip
    path = tmp_path / "t.parquet"
    gio.write_parquet(pd.DataFrame({"a": [1, 2]}), path, provenance=prov)
    rec = json.loads((tmp_path / ".digests" / "t.parquet.json").read_text())
    assert rec["sha256"] == gio.file_digest(path) and rec["size"] == path.stat().st_size
    assert rec["mtime_ns"] == path.stat().st_mtime_ns and rec["provenance"] == prov
    assert gio.parquet_provenance(path) == prov
    pd.testing.assert_frame_equal(gio.read_parquet(path, expect=prov), pd.DataFrame({"a": [1, 2]}))
    # equal tables with equal provenance are equal bytes (no time or host in the metadata)
    again = tmp_path / "u.parquet"
    gio.write_parquet(pd.DataFrame({"a": [1, 2]}), again, provenance=prov)
    assert again.read_bytes() == path.read_bytes()
    # a work file can opt out of the record
    gio.torch_save({"x": 1}, tmp_path / "w.pt", record=False)
    assert not gio.record_path(tmp_path / "w.pt").exists()


def test_the_record_is_written_before_the_rename(tmp_path, monkeypatch):
    """A kill between the two renames leaves the old file with a record of the new bytes: it is
    found damaged (and rebuilt), never a new file without the record of its bytes."""
    path = tmp_path / "t.parquet"
    gio.write_parquet(pd.DataFrame({"a": [1]}), path)
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(os.path.basename(dst))
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after the record, before the output
        real(src, dst)

    monkeypatch.setattr(gio.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        gio.write_parquet(pd.DataFrame({"a": [1, 2, 3]}), path)
    monkeypatch.undo()
    assert calls == ["t.parquet.json", "t.parquet"]
    assert pd.read_parquet(path)["a"].tolist() == [1]  # the old table, whole
    assert gio.check_output(path) is not None
    assert not list(tmp_path.glob(".*.tmp"))


def test_check_output_finds_each_kind_of_damage(tmp_path):
    prov = gio.provenance("run-a", {"p": 7})
    good = write(tmp_path, "good.parquet", prov)
    assert gio.check_output(good, prov) is None
    truncated = write(tmp_path, "trunc.parquet", prov)
    truncated.write_bytes(truncated.read_bytes()[:100])
    d = gio.check_output(truncated, prov)
    assert d.problem.startswith("100 bytes, its job wrote") and not d.legacy
    flipped = write(tmp_path, "flip.parquet", prov)
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    assert "its content differs from what its job wrote" in gio.check_output(flipped).problem
    foreign = write(tmp_path, "foreign.parquet", gio.provenance("run-b", {"p": 11}))
    d = gio.check_output(foreign, prov)
    assert "made for run run-b" in d.problem and "the plan expects run run-a" in d.problem
    by_hand = tmp_path / "hand.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(by_hand)
    assert gio.check_output(by_hand).legacy


def test_touch_is_not_damage_and_the_record_takes_the_new_mtime(tmp_path):
    path = write(tmp_path)
    later = time.time_ns() + 5_000_000_000
    os.utime(path, ns=(later, later))
    assert gio.check_output(path) is None
    assert gio.read_record(path)["mtime_ns"] != later  # not refreshed without refresh=True
    assert gio.check_output(path, refresh=True) is None
    assert gio.read_record(path)["mtime_ns"] == later  # hashed once, then size+mtime again


def test_heal_moves_damage_aside_reports_one_line_each_and_keeps_good_files(tmp_path):
    results = tmp_path / "results"
    prov = gio.provenance("run-a", {"p": 7})
    good = write(results / "runs" / "run-a", "train_log.parquet", prov)
    bad = write(results / "llc" / "run-a", "every1.parquet", prov)
    bad.write_bytes(b"garbage")
    hand = results / "splits" / "p7.parquet"
    hand.parent.mkdir(parents=True)
    pd.DataFrame({"a": [1]}).to_parquet(hand)
    missing = results / "figures" / "fig.png"  # planned, not there: not checked
    expected = {str(good): prov, str(bad): prov, str(hand): None, str(missing): None}
    lines: list[str] = []

    dry = gio.heal_outputs(expected, results, move=False, say=lines.append)
    assert {d.path for d in dry} == {str(bad), str(hand)} and bad.exists() and hand.exists()
    assert not (results / ".damaged").exists()
    assert all("would be moved aside" in line for line in lines) and len(lines) == 2

    lines.clear()
    gio.heal_outputs(expected, results, say=lines.append)
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    assert lines[0].startswith(f"damaged output {bad}: 7 bytes, its job wrote")
    assert "1 output(s) with no digest record" in lines[1] and str(hand) in lines[1]
    assert not bad.exists() and not hand.exists() and good.exists()
    (stamp,) = (results / ".damaged").iterdir()
    assert (stamp / "llc" / "run-a" / "every1.parquet").read_bytes() == b"garbage"
    assert (stamp / "llc" / "run-a" / ".every1.parquet.digest.json").exists()
    assert (stamp / "splits" / "p7.parquet").exists()
    assert not gio.record_path(bad).exists()  # the record went with the file
    # nothing left to heal; a second damage goes to a new folder, the first is kept
    assert gio.heal_outputs(expected, results, say=lines.append) == []
    good.write_bytes(b"x")
    gio.heal_outputs(expected, results, say=lines.append)
    assert len(list((results / ".damaged").iterdir())) == 2


def test_many_unrecorded_outputs_are_reported_in_one_line(tmp_path):
    results = tmp_path / "results"
    expected = {}
    for i in range(5):
        path = results / "tables" / f"t{i}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"a": [i]}).to_parquet(path)
        expected[str(path)] = None
    lines: list[str] = []
    gio.heal_outputs(expected, results, say=lines.append)
    assert len(lines) == 1 and "5 output(s)" in lines[0] and "and 2 more" in lines[0]


def test_check_provenance_messages_name_the_file_and_both_ids(tmp_path):
    path = tmp_path / "x.parquet"
    expect = {"run_id": "run-b", "settings": "bbbb", "sampler_id": "fast-2"}
    with pytest.raises(gio.ProvenanceError) as err:
        gio.check_provenance(path, {"run_id": "run-a", "settings": "aaaa", "sampler_id": "fast-2"},
                             expect)  # fmt: skip
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "run run-a" in msg and "run run-b" in msg
    with pytest.raises(gio.ProvenanceError, match="does not say whose it is"):
        gio.check_provenance(path, None, expect)
    gio.check_provenance(path, None, expect, missing_ok=True)
    gio.check_provenance(path, None, None)  # nothing expected: nothing checked


def test_unreadable_parquet_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 garbage")
    for read in (gio.parquet_provenance, gio.read_parquet):
        with pytest.raises(gio.CorruptFileError) as err:
            read(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_ids_in_path(tmp_path):
    prov = gio.provenance("quadratic-p7-K8-aaaa", {}, sampler_id="fast-1111")
    here = tmp_path / "llc" / "quadratic-p7-K8-aaaa" / "fast-1111" / "every1.parquet"
    write(here.parent, here.name, prov)
    gio.check_ids_in_path(here)
    elsewhere = tmp_path / "llc" / "quadratic-p7-K8-bbbb" / "fast-1111" / "every1.parquet"
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_bytes(here.read_bytes())
    with pytest.raises(gio.ProvenanceError, match="run quadratic-p7-K8-aaaa, which its path"):
        gio.check_ids_in_path(elsewhere)
