"""The model families the fairseq converter writes, one module each, behind one contract.

A family is named once, in porting/format.py (``FAMILY_TOKENIZER_FILES``: its name and its
tokenizer's files); here it is the converter's side of it: which fairseq tasks it claims, and the
phases of a conversion that differ between families. convert.py runs the phases every family shares
(arguments, members, tensors onto the layout, writing) and asks the job's family for the rest.

Every family module defines:
    NAME                 the family's name in porting/format.py (config.json's ``porting.family``)
    TASKS                the fairseq tasks (``--task``) whose checkpoints it converts
    ARCHS                the prefixes of the architectures (``--arch``) it runs; a family whose TASKS are
                         empty claims checkpoints by these alone (BART is fine-tuned with --task translation)
    MODEL_TYPE           transformers' model_type it is written as (convert transformers reads it back)
    CONFIG_CLASS         the transformers config class its config.json is written as
    ONE_DICTIONARY       whether source and target share one dictionary (one row mismatch reported)
    ROWS                 what an embedding's rows count, as a mismatch message says it
    STORES_DERIVED       whether the sinusoidal tables are stored (FSMT loads them; M2M100 builds its own)
    PIPELINE_TAG         the model card's pipeline tag (the hub's task name)
    GENERATION_FIELDS    transformers' generation settings the family adds (BART's forced <s>)
    check_members(job)   the members read, their task: agreement between them, the family's options
    gather(job)          the dictionaries and tokenizer sources from the data directory
    check_vocabularies(job)   the vocabularies written, and whether the tokenizer can produce them
    transformers_config(job, tokenizer_problems) -> (config, what transformers cannot express)
    config_section(job) -> dict   the family's keys in config.json's ``porting`` section
    tokenizer_files(job) -> (texts, blobs, what transformers' tokenizer cannot express)
    card(config, generation) -> (title, languages, sections)   the model card's family-specific parts
"""
from __future__ import annotations

from types import ModuleType

from converters.fairseq.families import bart, bilingual, mbart, multilingual

CONTRACT = ("NAME", "TASKS", "ARCHS", "MODEL_TYPE", "CONFIG_CLASS", "ONE_DICTIONARY", "ROWS", "STORES_DERIVED",
            "PIPELINE_TAG", "GENERATION_FIELDS", "check_members", "gather", "check_vocabularies", "transformers_config",
            "config_section", "tokenizer_files", "card")
FAMILIES: dict[str, ModuleType] = {m.NAME: m for m in (bilingual, multilingual, bart, mbart)}
DEFAULT = bilingual.NAME          # a checkpoint that records no task of another family's is a translation one


def family_of(task: dict, arch: str) -> str:
    """The family that converts a checkpoint with this task (arch.task_config's dict) and architecture:
    one claiming both first (mBART: its task on BART's architectures), then one claiming the architecture
    alone (BART, fine-tuned with --task translation), then the one claiming the task."""
    name = task.get("_name") or task.get("task")
    both = [f.NAME for f in FAMILIES.values() if name in f.TASKS and arch.startswith(f.ARCHS)]
    by_arch = [f.NAME for f in FAMILIES.values() if not f.TASKS and arch.startswith(f.ARCHS)]
    return next(iter(both + by_arch), None) or next((f.NAME for f in FAMILIES.values() if name in f.TASKS), DEFAULT)
