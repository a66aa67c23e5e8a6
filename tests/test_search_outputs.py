"""What `porting search` leaves behind (issue 31, item 8): where it says, a Markdown table a parser reads
as one, another search's results never silently replaced, a gain that is not significant never written
without a warning, and a grid typed with commas told how to type it."""
from __future__ import annotations

import json
import shutil

import pytest

from parity import shipped
from porting_cli import main


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    d = tmp_path_factory.mktemp("split")
    src, ref = shipped.test_set(split="valid")
    (d / "in").write_text("\n".join(src[:16]) + "\n", encoding="utf-8")
    (d / "ref").write_text("\n".join(ref[:16]) + "\n", encoding="utf-8")
    return d


def search(converted, split, out, grid, *extra):
    return main(["search", "--model", str(converted["ende-sep"]), "--input", str(split / "in"), "--reference",
                 str(split / "ref"), "--search", grid, "--out", str(out), *extra])


def test_the_table_is_markdown_and_the_results_say_where(converted, split, tmp_path, capsys):
    from markdown_it import MarkdownIt

    assert search(converted, split, tmp_path / "out", "beam=2:5 lenpen=0.6:1.0") == 0    # 5 and 1.0: the defaults
    err = capsys.readouterr().err
    assert f"results in {tmp_path / 'out'}" in err
    tokens = MarkdownIt("commonmark").enable("table").parse((tmp_path / "out" / "table.md").read_text())
    kinds = [t.type for t in tokens]
    assert kinds.count("table_open") == 1 and kinds.count("th_open") == 5            # bleu chrf beam lenpen note
    rows = [t for t in tokens if t.type == "tr_open"]
    assert len(rows) == 5 and kinds.count("td_open") == 4 * 5                       # every row all five cells
    assert sum(t.content == "current default" for t in tokens if t.type == "inline") == 1


def test_another_search_is_not_silently_replaced(converted, split, tmp_path, capsys):
    out = tmp_path / "out"
    assert search(converted, split, out, "beam=1:2") == 0
    first = (out / "results.json").read_text()
    assert search(converted, split, out, "beam=1:2") == 0            # the same search again: its own results
    capsys.readouterr()
    assert search(converted, split, out, "lenpen=0.6:1.0") == 1
    err = capsys.readouterr().err
    assert "holds the results of another search (grid 'beam=1:2')" in err and "--force" in err
    assert json.loads((out / "results.json").read_text())["grid"] == json.loads(first)["grid"]
    assert search(converted, split, out, "lenpen=0.6:1.0", "--force") == 0
    assert json.loads((out / "results.json").read_text())["grid"] == "lenpen=0.6:1.0"


def test_writing_a_gain_that_is_not_significant_warns(converted, split, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(converted["ende-sep"], model)
    rc = main(["search", "--model", str(model), "--input", str(split / "in"), "--reference", str(split / "ref"),
               "--search", "lenpen=0.9:1.0", "--test-input", str(split / "in"), "--test-reference", str(split / "ref"),
               "--out", str(tmp_path / "out"), "--write-best", "--force"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "warning: the best setting is not shown better than the current defaults (p = " in err
    assert main(["search", "--model", str(model), "--input", str(split / "in"), "--reference", str(split / "ref"),
                 "--search", "lenpen=0.9:1.0", "--out", str(tmp_path / "out2"), "--write-best"]) == 1
    assert "--write-best replaces" in capsys.readouterr().err                     # never without --force


def test_a_grid_typed_with_commas_is_told_the_separator(converted, split, tmp_path, capsys):
    assert search(converted, split, tmp_path / "out", "beam=1,5") == 1
    assert "values are separated by ':', as beam=1:5" in capsys.readouterr().err
