# The two commands of the README: `make run` and `make test`. Everything else here
# serves them: dependencies, the release build, the sanitizer build, the fuzz build.
JOBS ?= 2
DATA ?= ./stele-data
FUZZ_SECONDS ?= 30

.PHONY: all deps build run test unit-asan fuzz format check-format bench clean

all: build

deps:
	@bash scripts/deps.sh

build: deps
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build build -j $(JOBS)

run: build
	./build/stele serve --data $(DATA)

# Fuzzing and the sanitizer run first, so the last lines are the main suite's summary.
test: build check-format
	$(MAKE) fuzz
	$(MAKE) unit-asan
	cd build && ctest --output-on-failure -j $(JOBS)

unit-asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSTELE_SANITIZE=ON -DSTELE_BENCH=OFF -DCMAKE_C_COMPILER=clang >/dev/null
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --output-on-failure -j $(JOBS) -L unit

fuzz: deps
	cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DSTELE_FUZZ=ON -DSTELE_BENCH=OFF -DCMAKE_C_COMPILER=clang >/dev/null
	cmake --build build-fuzz -j $(JOBS) --target fuzzers
	@for f in build-fuzz/fuzz_*; do \
		[ -x "$$f" ] || continue; \
		name=$$(basename $$f); corpus=tests/fuzz/corpus/$${name#fuzz_}; \
		work=$$(mktemp -d); [ -d $$corpus ] && cp $$corpus/* $$work/ 2>/dev/null; \
		echo "fuzzing $$name for $(FUZZ_SECONDS)s"; \
		$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $$work >$$work.log 2>&1 || \
			{ tail -40 $$work.log; exit 1; }; \
		grep -E 'stat::number_of_executed_units' $$work.log; rm -rf $$work $$work.log; \
	done

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

check-format:
	clang-format --dry-run -Werror $$(git ls-files '*.c' '*.h')

bench: build
	STELE_BENCH_DEPS=1 bash scripts/deps.sh
	bash bench/ingest.sh

clean:
	rm -rf build build-asan build-fuzz
