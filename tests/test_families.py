"""The families a converted directory can hold, named once (porting.format): config.json names its
family, and every reader of a family's files takes the list from porting.format.tokenizer_files:
the CTranslate2 export's tokenizer/ and the fingerprint of what a stored result depends on."""
from __future__ import annotations

import json
import shutil

import pytest

from porting import format as fmt
from porting.engine.shards import fingerprint
from porting_cli import main


@pytest.mark.parametrize("name,family", [("ende-sep", "fairseq-transformer"), ("ende-joined", "fairseq-transformer"),
                                         ("m2m-enfres", "fairseq-multilingual"), ("bart-man", "fairseq-bart"),
                                         ("mbart-enro", "fairseq-mbart")])
def test_config_names_the_family(converted, name, family):
    config = fmt.read_config(converted[name])
    assert config["porting"]["family"] == family == fmt.family(config)
    if family not in (fmt.BART, fmt.MBART):                  # written since the field was: never without it
        older = {"porting": {k: v for k, v in config["porting"].items() if k != "family"}}
        assert fmt.family(older) == family                   # a directory written before the field


def test_an_unknown_family_is_refused_by_name(converted, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(converted["ende-sep"], model)
    config = json.loads((model / "config.json").read_text())
    config["porting"]["family"] = "fairseq-t5"
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(fmt.ConfigError, match="family 'fairseq-t5'"):
        fmt.read_config(model)


@pytest.mark.parametrize("name", ["ende-sep", "m2m-enfres", "bart-man", "mbart-enro"])
def test_the_ctranslate2_export_carries_the_files_the_family_lists(converted, name, tmp_path, monkeypatch):
    family = fmt.family(fmt.read_config(converted[name]))
    assert main(["convert", "ctranslate2", "--model", str(converted[name]), "--out", str(tmp_path / "a")]) == 0
    assert sorted(p.name for p in (tmp_path / "a" / "tokenizer").iterdir()) == \
        sorted(["config.json", *fmt.FAMILY_TOKENIZER_FILES[family]])
    # one more file in the family's list: the export carries it too, with no other change
    monkeypatch.setitem(fmt.FAMILY_TOKENIZER_FILES, family, (*fmt.FAMILY_TOKENIZER_FILES[family], "tokenizer_config.json"))
    assert main(["convert", "ctranslate2", "--model", str(converted[name]), "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "tokenizer" / "tokenizer_config.json").is_file()


@pytest.mark.parametrize("name", ["ende-sep", "m2m-enfres", "bart-man", "mbart-enro"])
def test_a_stored_result_depends_on_every_file_the_family_lists(converted, name, tmp_path, monkeypatch):
    """Each tokenizer file changed changes the fingerprint (a resumed job or grid then starts afresh);
    the card, the provenance and generation_config.json do not (its settings enter as options)."""
    model = tmp_path / "model"
    shutil.copytree(converted[name], model)
    family = fmt.family(fmt.read_config(model))

    def changed(file: str) -> bool:
        before = fingerprint([model], ["a"], {})
        path = model / file
        path.write_bytes(path.read_bytes() + b"\n")
        return fingerprint([model], ["a"], {}) != before
    for file in fmt.FAMILY_TOKENIZER_FILES[family]:
        assert changed(file), file
    for file in ("README.md", "provenance.json", "generation_config.json", "tokenizer_config.json"):
        assert not changed(file), file
    monkeypatch.setitem(fmt.FAMILY_TOKENIZER_FILES, family, (*fmt.FAMILY_TOKENIZER_FILES[family], "tokenizer_config.json"))
    assert changed("tokenizer_config.json")


def test_every_family_is_plugged_in_on_every_side():
    """A family is named once (porting.format.FAMILY_TOKENIZER_FILES) and is one entry in each side's
    registry: the converter (converters/fairseq/families, with its whole contract), the native
    tokenizer, the original as fairseq runs it, transformers' reader and adapter for its model_type.
    A family added to one side and forgotten on another fails here, naming the side."""
    from converters.fairseq.families import CONTRACT, FAMILIES
    from converters.fairseq.from_transformers import READERS
    from parity.fairseq_hub import ORIGINALS
    from parity.peers import TRANSFORMERS_ADAPTERS
    from porting.tokenizer import TOKENIZERS

    names = set(fmt.FAMILY_TOKENIZER_FILES)
    sides = {"converters.fairseq.families.FAMILIES": set(FAMILIES), "porting.tokenizer.TOKENIZERS": set(TOKENIZERS),
             "parity.fairseq_hub.ORIGINALS": set(ORIGINALS)}
    assert {side: keys for side, keys in sides.items() if keys != names} == {}
    for name, module in FAMILIES.items():
        assert module.NAME == name and [a for a in CONTRACT if not hasattr(module, a)] == [], name
        assert module.MODEL_TYPE in READERS and module.MODEL_TYPE in TRANSFORMERS_ADAPTERS, name
    tasks = [t for m in FAMILIES.values() for t in m.TASKS]
    assert len(tasks) == len(set(tasks))                      # a fairseq task belongs to one family


def test_the_checkpoints_task_chooses_the_family():
    from converters.fairseq.families import family_of

    assert family_of({"_name": "translation_multi_simple_epoch"}, "transformer") == fmt.MULTILINGUAL
    assert family_of({"task": "translation"}, "transformer") == fmt.BILINGUAL
    assert family_of({}, "transformer") == fmt.BILINGUAL                  # an old checkpoint recording no task
    assert family_of({"task": "translation"}, "bart_large") == fmt.BART   # BART is fine-tuned as translation
    # mBART's task claims it on BART's architectures too; mBART's architectures fine-tuned as translation are BART's
    assert family_of({"_name": "translation_from_pretrained_bart"}, "mbart_large") == fmt.MBART
    assert family_of({"_name": "translation_from_pretrained_bart"}, "bart_base") == fmt.MBART
    assert family_of({"task": "translation"}, "mbart_large") == fmt.BART
