"""benchmarks/_common.py: what the benchmark scripts share (timing, child processes, one-line errors)."""

from __future__ import annotations

import sys

import pytest
from _common import child_result, interleaved_ms, print_result, rss_mb, run_cli, select

from monai_ssl_plugin.errors import PluginError


def test_select_keeps_names_with_any_substring_and_all_without_one() -> None:
    names = ["mae_ssl_pretraining", "simclr_ssl_pretraining", "swin_unetr_ssl_pretraining"]
    assert select(names, "") == names
    assert select(names, "mae,swin") == ["mae_ssl_pretraining", "swin_unetr_ssl_pretraining"]
    assert select(names, "dino") == []


def test_interleaved_ms_warms_up_then_alternates_and_syncs_after_every_call() -> None:
    calls: list[str] = []
    syncs: list[int] = []
    wall, cpu = interleaved_ms([lambda: calls.append("a"), lambda: calls.append("b")], 3,
                               sync=lambda: syncs.append(len(calls)))
    assert calls == ["a", "b"] + ["a", "b"] * 3
    assert syncs == [2, 3, 4, 5, 6, 7, 8]  # once after the warm-up round, then after each timed call
    assert [len(t) for t in wall] == [3, 3] and [len(c) for c in cpu] == [3, 3]
    assert all(v >= 0 for t in wall + cpu for v in t)


def test_child_result_reads_the_result_line_among_other_output(capsys) -> None:
    print_result({"x": 1})
    assert capsys.readouterr().out == 'RESULT {"x": 1}\n'
    code = "import json; print('noise'); print('RESULT ' + json.dumps({'a': [1, 2]}))"
    result, proc = child_result([sys.executable, "-c", code])
    assert result == {"a": [1, 2]} and "noise" in proc.stdout


@pytest.mark.parametrize("code", ["print('RESULT {}'); raise SystemExit(3)", "print('no result')"])
def test_child_result_is_none_when_the_child_fails_or_prints_no_result(code: str) -> None:
    result, proc = child_result([sys.executable, "-c", code])
    assert result is None and proc.returncode in (0, 3)


def test_run_cli_exits_with_main_status_and_a_plugin_error_in_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as ok:
        run_cli(lambda: 0)
    assert ok.value.code == 0

    def fails() -> int:
        raise PluginError("--device cuda was asked for.", "Use --device cpu.")

    with pytest.raises(SystemExit) as failed:
        run_cli(fails)
    assert failed.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Use --device cpu." in err


def test_rss_mb_is_this_process_resident_size() -> None:
    # against the kernel's other account of the same figure (an allocation may reuse pages that an
    # earlier test's tuned allocator kept resident, so growth alone proves nothing)
    with open("/proc/self/status") as f:
        vm_rss = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
    assert vm_rss > 0 and abs(rss_mb() - vm_rss) < 16
