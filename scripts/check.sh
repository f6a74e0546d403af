#!/usr/bin/env bash
# Lint, format check and type check (scripts/test.sh, hence CI, runs this before the tests):
# ruff (pyproject.toml's [tool.ruff]) over the whole tree, mypy over the packages ([tool.mypy]).
# Uses the tools of .venv (scripts/test.sh creates it with the dev extra). Exit 1 when any fails;
# all three run, so one pass shows every finding.
set -u
cd "$(dirname "$0")/.."
bin=.venv/bin
for tool in ruff mypy; do
    if [ ! -x "$bin/$tool" ]; then
        echo "check.sh: $bin/$tool not found: run scripts/test.sh (or pip install -e '.[dev]' into .venv) first" >&2
        exit 2
    fi
done
status=0
"$bin/ruff" check . || status=1
"$bin/ruff" format --check . || status=1
"$bin/mypy" || status=1
exit $status
