# mmrefer developer entry points. Every target installs what it needs (idempotent) into .venv.
VENV ?= .venv
.PHONY: install quickstart test test-fast clean

install:
	bash tools/install_env.sh

## The main job: SynthRef -> mim train (tiny Latent-VG, tiny InstAlign) -> mim test -> demo picture
quickstart: install
	bash -c ". $(VENV)/bin/activate && bash tools/quickstart.sh"

## The test suite (what CI runs), in TEST_WORKERS processes (pytest-xdist; a test file stays in
## one process). TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2
test: install
	bash -c ". $(VENV)/bin/activate && python -m pytest tests -q -ra --durations=15 -n $(TEST_WORKERS) --dist loadfile"

test-fast: install
	bash -c ". $(VENV)/bin/activate && python -m pytest tests -q -m 'not slow' -n $(TEST_WORKERS) --dist loadfile"

clean:
	rm -rf build dist *.egg-info mmrefer/.mim work_dirs
