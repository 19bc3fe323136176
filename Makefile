# The two commands: `make demo` and `make test`. Everything else is optional.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: venv demo test suite test-fast lint bench train evaluate evaluate-external gallery clean
venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

# The whole suite and the linters; what CI runs. The image tests (tests/integration/test_map_image.py) need a
# built image: `make map map-test` runs them. Tiers (pyproject.toml markers): unit, app (application runs),
# system (training, validation cohorts, external validators, PACS).
test: venv
	$(MAKE) --no-print-directory -j2 lint suite

# The suite alone. `make test` runs it beside the linters (mypy keeps one core busy for about 17 s, while the
# suite collects and starts); either failing fails `make test`.
suite: venv
	$(PY) -m pytest -q tests --ignore=tests/integration/test_map_image.py

# The unit tier only (plain functions, no application run): under 2 minutes.
test-fast: venv
	$(PY) -m pytest -q -m "unit and not app and not system" tests --ignore=tests/integration

# ruff on the Python tree, mypy (strict on core/, see pyproject.toml); zero findings.
lint: venv
	$(VENV)/bin/ruff check .
	$(PY) -m mypy

# The tumour world the shipped models were trained in (training/config.yaml cohort.tumour_world).
TUMOUR_WORLD = $(shell $(PY) -c "import yaml; print(yaml.safe_load(open('training/config.yaml'))['cohort'].get('tumour_world', 'v1'))")

# Generate one synthetic noncontrast pelvic CT study, run the application on it, print the findings.
DEMO_IN ?= demo_in
DEMO_OUT ?= demo_out
demo: venv
	rm -rf $(DEMO_IN) $(DEMO_OUT)
	$(PY) -m training.phantom --out $(DEMO_IN) --n 1 --seed 2026 --classes chordoma --tumour-world $(TUMOUR_WORLD)
	$(PY) -m app -i $(DEMO_IN)/C0001/dicom -o $(DEMO_OUT) -m models
	@echo "outputs in $(DEMO_OUT)/: $$(ls $(DEMO_OUT) | tr '\n' ' ')"

# Held-out evaluation behind the model card: a cohort from the held-out seed fixed in training/config.yaml
# (evaluation.heldout, never used for a decision), 100 full-size studies of the varied protocol, run through the
# application exactly as deployed (DICOM in, result.json + SEG out), metrics with bootstrap CIs. Once per model
# version.
EVAL_DIR ?= build/heldout
# training.phantom arguments of an evaluation cohort of training/config.yaml (evaluation.<name>, its tumour world).
cohort_args = $(shell $(PY) -c "import yaml; e = yaml.safe_load(open('training/config.yaml'))['evaluation']; h = e['$(1)']; \
	print(f\"--seed {h['seed']} --n {h['n']} --no-tumour-fraction {h['no_tumour_fraction']} --protocol {h['protocol']}\" \
	+ f\" --tumour-world {e.get('tumour_world', 'v1')}\" + (f\" --site {h['site']}\" if h.get('site') else '') \
	+ (' --full-size' if h['full_size'] else ''))")
HELDOUT_ARGS = $(call cohort_args,heldout)
evaluate: venv
	$(PY) -m training.phantom --out $(EVAL_DIR)/cohort $(HELDOUT_ARGS) --workers 2
	$(PY) -m validation run --manifest $(EVAL_DIR)/cohort/manifest.csv --out $(EVAL_DIR)/report --models models --workers 2 \
		--subgroups sex,age_band,coverage,patient_position,hip_prosthesis,manufacturer

# The external-style cohort (evaluation.external: a site, scanner, kernels and noise texture never used in
# training, full-size studies), run once per released version, after the held-out evaluation.
EXT_DIR ?= build/external
EXTERNAL_ARGS = $(call cohort_args,external)
evaluate-external: venv
	$(PY) -m training.phantom --out $(EXT_DIR)/cohort $(EXTERNAL_ARGS) --workers 2
	$(PY) -m validation run --manifest $(EXT_DIR)/cohort/manifest.csv --out $(EXT_DIR)/report --models models --workers 2 \
		--subgroups sex,age_band,coverage,patient_position,hip_prosthesis,kernel

# A contact sheet of random phantoms (docs/phantom_gallery.png) of the training world (its tumour world too), for a
# radiologist's look at the synthetic world.
gallery: venv
	$(PY) -m training.phantom.gallery --out docs/phantom_gallery.png --n 6 --seed 5 --tumour-world $(TUMOUR_WORLD)

# Retrain all three models from scratch on a generated cohort (76 minutes timed end to end on 2 CPU cores, 2 Dec 2026).
train: venv
	$(PY) -m training.train_all --out models --work build/train

clean:
	rm -rf build demo_out demo_in .pytest_cache

-include mk/*.mk
