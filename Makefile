# The two commands of the README:
#   make demo   set up everything, then run the live pipeline on bundled real photographs
#               (a window where a display exists, headless otherwise), recording MP4 + raw depth
#   make test   set up everything, then run every test (Rust and Python)
.PHONY: setup demo test test-rust test-python bench

setup:
	scripts/setup.sh

demo: setup
	scripts/demo.sh

test: setup
	$(MAKE) test-rust test-python

test-rust:
	IMEXDEPTH_REQUIRE_ORT=1 cargo test --release --locked

test-python:
	cd training && ../.venv/bin/python -m pytest -q -m "not slow" tests

bench: setup
	cargo bench --bench imex
