# Benchmark target; included by the top-level Makefile (-include mk/*.mk).
#   make bench                      our full pipeline vs the SDK's stock single-model pipeline, CPU
#   make bench BENCH_DEVICE=cuda    the same on a GPU machine
#   make bench BENCH_ARGS=--skip-stock
# The full-size study is generated once into $(BENCH_WORK) and reused; figures go to bench/results/.
BENCH_WORK ?= /tmp/sacral-bench
BENCH_DEVICE ?= cpu
BENCH_ARGS ?=

.PHONY: bench
bench: venv
	$(PY) -m bench --work $(BENCH_WORK) --device $(BENCH_DEVICE) $(BENCH_ARGS)
