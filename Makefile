# Set-up and the two commands of the README. `make example` and `make test` each install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: example test setup examples record clean parity bench

setup: $(STAMP)

# torch is pinned to the CPU wheel (a bare `torch` pulls a multi-GB CUDA build).
# fairseq-fixed (fairseq for Python >= 3.11) and fastBPE are source builds: they compile against
# the torch/Cython already in the venv, hence --no-build-isolation, and fairseq's runtime needs come
# from our `original` extra (--no-deps keeps its torchaudio requirement out: it does not load with torch 2.13).
# Resolving the extras brings torchaudio back (fairseq-fixed requires it): it is removed again, since
# PyPI's build needs CUDA libraries the CPU torch lacks, and transformers imports it when present
# (M2M100's modules load its audio utilities), which then fails; no fairseq translation path needs it.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q torch==2.13.0 cython "numpy<3"
	$(BIN)/pip install -q --no-build-isolation --no-deps fairseq-fixed==0.12.3.1 fastBPE==0.1.0
	$(BIN)/pip install -q -e '.[original,peers,test,ray]'
	$(BIN)/pip uninstall -q -y torchaudio
	touch $(STAMP)

# The main job on the shipped example model.
example: $(STAMP)
	$(BIN)/porting example --out .build/example

# The whole test suite, after the linter (ruff: line length, import order, unused names; pyproject.toml).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# Rebuild the shipped example models from the Debian corpus (about 105 min on 2 cores: the bilingual
# ones, the multilingual one, the BART-style summarizer from Debian's manual pages, the mBART-style en-ro
# model), then re-record.
examples: $(STAMP)
	$(BIN)/python reference_runs/tools/build.py
	$(BIN)/python reference_runs/tools/build_multilingual.py
	$(BIN)/python reference_runs/tools/build_bart.py
	$(BIN)/python reference_runs/tools/build_mbart.py
	$(MAKE) record

record: $(STAMP)
	$(BIN)/porting record --force

clean:
	rm -rf $(VENV) .build

# The parity gate: the port against fairseq's recorded runs on the shipped models (non-zero on failure).
# Replayed on the instruction set they were recorded on (reference_runs/runs/manifest.json, parity/machine.py).
RECORDED_ISA := ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
parity: $(STAMP)
	$(BIN)/porting convert fairseq --checkpoint reference_runs/models/ende-sep/model2.pt --data-dir reference_runs/models/ende-sep --out .build/parity/ende-sep --force
	$(BIN)/porting convert fairseq --checkpoint reference_runs/models/ende-joined/model.pt --data-dir reference_runs/models/ende-joined --out .build/parity/ende-joined --force
	$(RECORDED_ISA) $(BIN)/porting parity --original recorded:reference_runs/runs/ende-sep --port .build/parity/ende-sep --report .build/parity/report-ende-sep --force
	$(RECORDED_ISA) $(BIN)/porting parity --original recorded:reference_runs/runs/ende-joined --port .build/parity/ende-joined --report .build/parity/report-ende-joined --force
	$(BIN)/porting convert fairseq --checkpoint reference_runs/models/m2m-enfres/model.pt --data-dir reference_runs/models/m2m-enfres --out .build/parity/m2m-enfres --force
	for d in en-fr fr-en en-es es-en; do \
	  $(RECORDED_ISA) $(BIN)/porting parity --original recorded:reference_runs/runs/m2m-$$d --port .build/parity/m2m-enfres --report .build/parity/report-m2m-$$d --force || exit 1; \
	done
	$(BIN)/porting convert fairseq --checkpoint reference_runs/models/bart-man/model.pt --data-dir reference_runs/models/bart-man --out .build/parity/bart-man --force
	$(RECORDED_ISA) $(BIN)/porting parity --original recorded:reference_runs/runs/bart-man --port .build/parity/bart-man --report .build/parity/report-bart-man --metric rouge --force
	$(BIN)/porting convert fairseq --checkpoint reference_runs/models/mbart-enro/model.pt --data-dir reference_runs/models/mbart-enro --out .build/parity/mbart-enro --force
	$(RECORDED_ISA) $(BIN)/porting parity --original recorded:reference_runs/runs/mbart-enro --port .build/parity/mbart-enro --report .build/parity/report-mbart-enro --force

# Speed against fairseq, transformers' FSMT and CTranslate2, each library at its own instruction set,
# then all of them held to AVX2 (about 45 minutes and 25 on 2 cores, estimated; not part of CI).
bench: $(STAMP)
	$(BIN)/python benchmarks/speed.py --out .build/bench/speed.json
	$(BIN)/python benchmarks/speed.py --isa avx2 --rounds 1 --out .build/bench/speed-avx2.json
	$(BIN)/python benchmarks/startup.py --out .build/bench/startup.json
