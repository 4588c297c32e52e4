"""Result file names: date, device, commit and label; a second run never overwrites the first."""

from __future__ import annotations

from benchmarks.result_files import claim_result_path, git_commit, result_stem, short_commit


def test_the_stem_names_date_device_commit_and_label():
    stem = result_stem("cpu", "demo", commit="0763a2b" + "f" * 33, day="2026-12-05")
    assert stem == "2026-12-05-cpu-0763a2b-demo"


def test_a_dirty_tree_and_a_missing_git_show_in_the_name():
    assert short_commit("0763a2bffff-dirty") == "0763a2b-dirty"
    assert short_commit("unknown (no git here; set GIT_COMMIT)") == "nogit"


def test_this_checkout_has_a_commit(monkeypatch):
    monkeypatch.delenv("GIT_COMMIT", raising=False)
    assert short_commit(git_commit()) != "nogit"
    monkeypatch.setenv("GIT_COMMIT", "abcdef1234")
    assert git_commit() == "abcdef1234"


def test_a_second_run_of_one_label_gets_its_own_file(tmp_path):
    first = claim_result_path(tmp_path / "runs", "2026-12-05-cpu-0763a2b-demo")
    first.write_text("the first run")
    second = claim_result_path(tmp_path / "runs", "2026-12-05-cpu-0763a2b-demo")
    assert first.name == "2026-12-05-cpu-0763a2b-demo.json"
    assert second.name == "2026-12-05-cpu-0763a2b-demo-2.json"
    assert first.read_text() == "the first run"


def test_demo_and_sweep_never_share_a_name(tmp_path):
    demo = claim_result_path(tmp_path, result_stem("cpu", "demo", commit="abc1234"))
    sweep = claim_result_path(tmp_path, result_stem("cpu", "sweep", commit="abc1234"))
    assert demo != sweep
