# The front door. `make test` and `make table` do all set-up on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# the demo's note renderer; --no-deps: its declared pyaudio (playback only) does not build
TINYSOUNDFONT_VERSION ?= 0.3.7
export PYTHONPATH := $(CURDIR)

.PHONY: help install test lint table sweep curve calib-curve bench-merge bench-extract bench-frame-rate \
	bench-calibrate cost-model \
	pretrain-demo shared-base-demo task-vectors distill-demo routes interfaces search clean-cache vo-point methods s3prl test-s3prl \
	bench-s3prl

# Named sweeps write to fixed dirs, so that starting one again finishes only its missing jobs.
# make table PAIR=hubert_mert EVAL=paper ARGS='eval.roots.ks=/data/speech_commands_v0.01 ...'
PAIR ?= demo
EVAL ?= demo
ARGS ?=
TABLE_DIR ?= multirun/table/$(PAIR)-$(EVAL)
SWEEP_DIR ?= multirun/sweep/$(PAIR)-$(EVAL)
CURVE_DIR ?= multirun/curve/$(PAIR)-$(EVAL)
CALIB_DIR ?= multirun/calib-curve/$(PAIR)-$(EVAL)
VO_DIR ?= multirun/vo-point/$(PAIR)-$(EVAL)
METHODS_DIR ?= multirun/methods/$(PAIR)-$(EVAL)
TASKVEC_DIR ?= multirun/task-vectors/shared_demo-$(EVAL)
ROUTES_DIR ?= multirun/routes/$(PAIR)-$(EVAL)
INTERFACES_DIR ?= multirun/interfaces/$(PAIR)-$(EVAL)
INTERFACES ?= weighted_sum,hconv,chconv
# one probe seed: a learned interface trains over every frame, ~20x the pooled probe's cost
INTERFACE_SEEDS ?= [0]
TRIALS ?= 30
SEARCH_DIR ?= multirun/search/$(PAIR)-$(EVAL)
# the routes' students: a pool of two students with their base (conf/models/), and one ensemble
STUDENTS ?= distill_demo
ENSEMBLE ?= checkpoints/distill-demo/ensemble
MATCHERS ?= exact,weight,sinkhorn
MERGERS ?= linear,repair
ZIPPERS ?= zipit,zipit_cnn
ALPHAS ?= 0,0.25,0.5,0.75,1
CALIB_SIZES ?= 4,8,16,32,64
TABLE_IDS := id1,id2,id3,id4,id5,id6,id7,id8,id9

help:
	@echo "make test           install into $(VENV) and run lint + the test suite"
	@echo "make table          the paper's ablation table (IDs 1-9) on PAIR=$(PAIR) EVAL=$(EVAL),"
	@echo "                    one resumable sweep in $(TABLE_DIR); ARGS=... adds overrides"
	@echo "make sweep          python run.py -m permute=cnn,fnn_attn,all into $(SWEEP_DIR)"
	@echo "make curve          scores over merge.alpha=$(ALPHAS), permute none and fnn_attn"
	@echo "make calib-curve    scores over calibration.size=$(CALIB_SIZES), permute fnn_attn"
	@echo "make vo-point       ID 5 with V/O matched on v_proj's output and on the context"
	@echo "make methods        matchers $(MATCHERS) x merges $(MERGERS), and $(ZIPPERS),"
	@echo "                    at alpha 0.9 and 0.5"
	@echo "make bench-merge    run.py merging two HuBERT-base-size encoders, end to end, against a"
	@echo "                    plain forward process; peak memory at two calibration sizes"
	@echo "make bench-extract  features streamed from disk against a plain forward loop; peak"
	@echo "                    memory at 0.5 h and 2 h of ten-second clips; 0 vs 2 workers"
	@echo "make bench-calibrate  calibration's peak memory at 64 and 1024 clips read from disk"
	@echo "make bench-frame-rate  permutations with calibration.max_frame_rate against exact ones"
	@echo "make cost-model     GPU-hours, decoding and disk of the paper's table on the real"
	@echo "                    datasets, from FLOPs and decoding rates measured here"
	@echo "make s3prl          install the s3prl extra (s3prl's runner, torchaudio) into $(VENV)"
	@echo "make test-s3prl     s3prl's own runner on a merged checkpoint; FBANK against torchaudio's"
	@echo "make bench-s3prl    s3prl's runner against the project's probe on one task"
	@echo "make task-vectors   task arithmetic, TIES and DARE on the demo's shared-base pool"
	@echo "                    (models=shared_demo), a few weights and densities, with its members"
	@echo "make routes         teachers merged (IDs 4, 5), students ($(STUDENTS)) alone and merged"
	@echo "                    by task vectors, the ensemble student, the teachers' fusion: one"
	@echo "                    table with costs, normalised by the teachers, in $(ROUTES_DIR)"
	@echo "make interfaces     each parent and their layer fusion through eval.interface.name="
	@echo "                    $(INTERFACES), in $(INTERFACES_DIR)"
	@echo "make search         an Optuna study of TRIALS=$(TRIALS) merges (per-part weights) on the"
	@echo "                    validation split; the best scored on test beside IDs 4 and 5,"
	@echo "                    in $(SEARCH_DIR); again with a larger TRIALS adds the missing ones"
	@echo "make pretrain-demo  rebuild the demo encoders (checkpoints/demo-speech, demo-music)"
	@echo "make shared-base-demo  rebuild the shared-base pool (checkpoints/demo-shared-*)"
	@echo "make distill-demo   rebuild the demo's distilled students (checkpoints/distill-demo/)"
	@echo "make clean-cache    drop cached calibration statistics, features and probes"

# torch first, pinned, so that nothing later asks pip for a newer (CUDA) build.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,demo]'
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps tinysoundfont==$(TINYSOUNDFONT_VERSION)
	touch $@

install: $(VENV)/.installed

lint: install
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

test: lint
	HF_HUB_OFFLINE=1 WANDB_MODE=disabled $(PY) -m pytest -q -m "not s3prl"

# s3prl's own runner in the same venv; on a CPU torch torchaudio's CUDA-linked extension is
# moved out of the way (eval/s3prl/torchaudio_cpu.py), with a CUDA torch nothing is touched.
$(VENV)/.s3prl: $(VENV)/.installed constraints.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,demo,s3prl]'
	$(PY) -m eval.s3prl.torchaudio_cpu
	$(PY) -c "import torchaudio, s3prl.hub"
	touch $@

s3prl: $(VENV)/.s3prl

test-s3prl: s3prl
	HF_HUB_OFFLINE=1 WANDB_MODE=disabled $(PY) -m pytest -q -m s3prl

bench-s3prl: s3prl
	$(PY) benchmarks/s3prl_vs_probes.py

sweep: install
	$(PY) run.py -m permute=cnn,fnn_attn,all pair=$(PAIR) eval=$(EVAL) \
		hydra.sweep.dir=$(SWEEP_DIR) $(ARGS)

# The interpolation-barrier picture: Speech / Music / Avg with intervals along alpha.
curve: install
	$(PY) run.py -m permute=none,fnn_attn merge.alpha=$(ALPHAS) pair=$(PAIR) eval=$(EVAL) \
		hydra.sweep.dir=$(CURVE_DIR) $(ARGS)
	$(PY) -m report.curve $(CURVE_DIR)

# How much calibration audio the alignment needs, and how stable its partners are.
calib-curve: install
	$(PY) run.py -m permute=fnn_attn calibration.size=$(CALIB_SIZES) pair=$(PAIR) eval=$(EVAL) \
		hydra.sweep.dir=$(CALIB_DIR) $(ARGS)
	$(PY) -m report.curve $(CALIB_DIR) --x calibration.size

# The methods side by side on one pair: fnn_attn, every matcher x merge method, two alphas.
# Rows are named MATCHER-MERGE-ALPHA; the reference is the paper's method (exact-linear-0.9).
# ZipIt! (and its conv-only hybrid) rewrites the weights itself: the exact matcher only.
methods: install
	$(PY) run.py -m permute=fnn_attn match=$(MATCHERS) merge=$(MERGERS) merge.alpha=0.9,0.5 \
		'experiment_id=$${hydra:runtime.choices.match}-$${hydra:runtime.choices.merge}-$${merge.alpha}' \
		pair=$(PAIR) eval=$(EVAL) hydra.sweep.dir=$(METHODS_DIR) $(ARGS)
	$(PY) run.py -m permute=fnn_attn match=exact merge=$(ZIPPERS) merge.alpha=0.9,0.5 \
		'experiment_id=exact-$${hydra:runtime.choices.merge}-$${merge.alpha}' \
		pair=$(PAIR) eval=$(EVAL) hydra.sweep.dir=$(METHODS_DIR) $(ARGS)
	$(PY) -m report.table $(METHODS_DIR) --reference exact-linear-0.9
	$(PY) -m report.costs $(METHODS_DIR)

# Where V/O is scored: on v_proj's output (v) or on the attention context (the paper's point).
vo-point: install
	for point in v context; do \
		$(PY) run.py experiment=id5 experiment_id=id5-$$point permute.vo_point=$$point \
			pair=$(PAIR) eval=$(EVAL) hydra.run.dir=$(VO_DIR)/$$point $(ARGS) || exit 1; \
	done
	$(PY) -m report.table $(VO_DIR) --reference id5-v

bench-merge: install
	$(PY) benchmarks/bench_merge.py

bench-extract: install
	$(PY) benchmarks/bench_extract.py

bench-frame-rate: install
	$(PY) benchmarks/frame_rate.py

bench-calibrate: install
	$(PY) benchmarks/bench_calibrate.py

cost-model: install
	$(PY) benchmarks/cost_model.py

table: install
	$(PY) run.py -m experiment=$(TABLE_IDS) pair=$(PAIR) eval=$(EVAL) \
		hydra.sweep.dir=$(TABLE_DIR) $(ARGS)
	$(PY) -m report.table $(TABLE_DIR)

# The demo pair: the suite (with both pretraining corpora), one encoder per domain from its
# own seed, then the check that each wins in its own domain (checkpoints/COMPARISON.md).
pretrain-demo: install
	$(PY) -m demo.suite
	$(PY) -m demo.pretrain --domain speech --seed 1 --out checkpoints/demo-speech
	$(PY) -m demo.pretrain --domain music --seed 2 --lr 5e-4 --steps 5000 --out checkpoints/demo-music
	$(PY) -m demo.compare --out checkpoints/COMPARISON.md

# The demo's shared-base pool: model A of the demo pair continued on each corpus (one thread
# each, as the committed checkpoints were trained; the two can run side by side).
shared-base-demo: install
	$(PY) -m demo.suite
	$(PY) -m demo.pretrain --domain speech --seed 3 --steps 400 --lr 5e-4 --threads 1 \
		--init checkpoints/demo-speech --out checkpoints/demo-shared-speech
	$(PY) -m demo.pretrain --domain music --seed 4 --steps 1500 --lr 5e-4 --threads 1 \
		--init checkpoints/demo-speech --out checkpoints/demo-shared-music

# The demo's students of arXiv 2505.13270's route: a speech and a music student from one
# initialisation (the speech teacher's conv stack and first 2 layers, saved as distill-demo/base)
# and an ensemble student of both teachers; one thread each, so the three can run side by side.
distill-demo: install
	$(PY) -m demo.suite
	for recipe in speech music ensemble; do \
		OMP_NUM_THREADS=1 $(PY) -m distill recipe=demo_$$recipe || exit 1; \
	done

# Task-vector merges of the shared-base pool; rows are named METHOD-WEIGHTS(-DENSITY) and
# tested against plain task arithmetic at weights 1 and 1. The members, the base, FBANK and
# the two members' layer fusion are reference rows.
task-vectors: install
	$(PY) run.py -m models=shared_demo merge=task_arithmetic calibration.size=0 \
		'merge.weights={speech:0.5,music:0.5},{speech:1.0,music:1.0}' \
		'experiment_id=task_arithmetic-$${merge.weights.speech}-$${merge.weights.music}' \
		eval=$(EVAL) hydra.sweep.dir=$(TASKVEC_DIR) $(ARGS)
	$(PY) run.py -m models=shared_demo merge=ties,dare merge.density=0.2,0.5 calibration.size=0 \
		'merge.weights={speech:0.5,music:0.5},{speech:1.0,music:1.0}' \
		'experiment_id=$${hydra:runtime.choices.merge}-$${merge.weights.speech}-$${merge.weights.music}-d$${merge.density}' \
		eval=$(EVAL) hydra.sweep.dir=$(TASKVEC_DIR) $(ARGS)
	$(PY) -m report.table $(TASKVEC_DIR) --reference task_arithmetic-1.0-1.0

# Routes to one speech+music encoder (arXiv 2506.11403's merge of the teachers, 2505.13270's task
# vectors of distilled students, an ensemble-distilled student, the teachers' layer fusion) in one
# sweep (TIES and DARE at their default densities, 0.2 and 0.5); report.routes rescores every row
# against the teachers and tests it against ID 5.
routes: install
	$(PY) run.py -m pair=$(PAIR) experiment=id4,id5 eval=$(EVAL) \
		hydra.sweep.dir=$(ROUTES_DIR) $(ARGS)
	$(PY) run.py -m models=$(STUDENTS) merge=task_arithmetic calibration.size=0 \
		'merge.weights={speech:1.0,music:1.0},{speech:0.5,music:0.5},{speech:0.9,music:0.1}' \
		'experiment_id=ta-$${merge.weights.speech}-$${merge.weights.music}' \
		eval=$(EVAL) hydra.sweep.dir=$(ROUTES_DIR) $(ARGS)
	$(PY) run.py -m models=$(STUDENTS) merge=ties,dare calibration.size=0 \
		'merge.weights={speech:1.0,music:1.0}' \
		'experiment_id=$${hydra:runtime.choices.merge}-1.0-1.0-d$${merge.density}' \
		eval=$(EVAL) hydra.sweep.dir=$(ROUTES_DIR) $(ARGS)
	$(PY) run.py models=$(STUDENTS) '+models.members.ensemble=$${repo:$(ENSEMBLE)}' \
		parent=ensemble merge=linear permute=none calibration.size=0 \
		'merge.weights={speech:0.0,music:0.0,ensemble:1.0}' \
		eval=$(EVAL) hydra.run.dir=$(ROUTES_DIR)/ensemble $(ARGS)
	$(PY) -m report.routes $(ROUTES_DIR)

# Interfaces over layers (eval/interface.py): one job per interface scoring model A alone, whose
# references are A, B and their fusion through it; report.interfaces lays them side by side.
interfaces: install
	$(PY) run.py -m pair=$(PAIR) experiment=id1 calibration.size=0 eval=$(EVAL) \
		eval.interface.name=$(INTERFACES) 'eval.probe.seeds=$(INTERFACE_SEEDS)' \
		hydra.sweep.dir=$(INTERFACES_DIR) $(ARGS)
	$(PY) -m report.interfaces $(INTERFACES_DIR)

# Search the merge weights (conf/search/): trials are run.py jobs on the validation split that
# reuse the alignment plan; the study resumes after a kill and adds only missing trials.
search: install
	$(PY) -m search pair=$(PAIR) eval=$(EVAL) trials=$(TRIALS) out=$(CURDIR)/$(SEARCH_DIR) $(ARGS)

clean-cache:
	rm -rf .cache
