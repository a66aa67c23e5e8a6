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


def _disagreements(model) -> dict:
    """Where transformers' generation settings read from config.json (GenerationConfig.from_model_config)
    differ from generation_config.json, on every search and special-token setting config.json sets."""
    from transformers import AutoConfig, GenerationConfig

    from_model = GenerationConfig.from_model_config(AutoConfig.from_pretrained(model)).to_diff_dict()
    from_file = GenerationConfig.from_pretrained(model).to_dict()
    raw = json.loads((model / "config.json").read_text())
    settings = ("num_beams", "length_penalty", "early_stopping", "max_length", "min_length", "no_repeat_ngram_size",
                "num_return_sequences", "decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id",
                "forced_eos_token_id")
    return {k: (from_model.get(k), from_file.get(k)) for k in settings
            if k in raw and k in from_model and from_model.get(k) != from_file.get(k)}


@pytest.mark.parametrize("name", ["ende-sep", "m2m-enfres"])
def test_config_and_generation_config_agree(converted, name):
    """Before: FSMT's config.json said early_stopping false and max_length 200, generation_config.json
    true and 202 (transformers users read both)."""
    model = converted[name]
    assert _disagreements(model) == {}
    raw = json.loads((model / "config.json").read_text())
    if name == "ende-sep":             # FSMT's config carries them: the same values as generation_config.json
        assert (raw["early_stopping"], raw["max_length"]) == (True, 202)


def test_write_best_keeps_the_two_configs_agreeing(converted, split, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(converted["ende-sep"], model)
    assert main(["search", "--model", str(model), "--input", str(split / "in"), "--reference", str(split / "ref"),
                 "--search", "beam=2:3 lenpen=0.5", "--out", str(tmp_path / "out"), "--write-best", "--force"]) == 0
    raw = json.loads((model / "config.json").read_text())
    assert raw["num_beams"] in (2, 3) and raw["length_penalty"] == 0.5 and _disagreements(model) == {}
