# The two commands of the README, and a few conveniences. CMake does the build;
# this file only strings the steps together.
#   make run    install deps, build, start a node serving the bundled demo model
#   make test   install deps, build (release + ASan/UBSan), run every test

MAKEFLAGS  += --no-print-directory
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
WERROR     ?= $(if $(CI),ON,OFF)
HOME_DIR   ?= $(HOME)/.llmesh
MODEL      ?= models/kjv-llama-6.3M-q8_0.gguf

.PHONY: all deps build build-asan run test test-unit test-integration clean

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DLLMESH_WERROR=$(WERROR) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DLLMESH_SANITIZE=ON -DLLMESH_WERROR=$(WERROR) >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)

run: build
	@$(BUILD)/llmesh serve --model $(MODEL) --home $(HOME_DIR)

# Unit and fuzz-replay tests run under ASan+UBSan; the multi-process
# integration tests run against the release binary (inference under ASan is
# slow and the unit tests already cover the same code paths).
test: build build-asan
	@cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -L 'unit|fuzz' -j $(JOBS)
	@cd $(BUILD) && ctest --output-on-failure -L integration

test-unit: build-asan
	@cd $(ASAN_BUILD) && ctest --output-on-failure -L 'unit|fuzz' -j $(JOBS)

test-integration: build
	@cd $(BUILD) && ctest --output-on-failure -L integration

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
