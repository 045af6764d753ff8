#!/usr/bin/env bash
# Refresh constraints.txt (the quick start's lock): install the newest releases in a scratch venv,
# run the plugin's tests and the correctness suite there, and write the lock only if both pass.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv-lock}
bash .ci/install "$venv"
. "$venv/bin/activate"
pytest tests -q --attnlab-report-dir reports/lock/tests
pytest suites/correctness -q --attnlab-report-dir reports/lock/correctness
{
  sed -n '1,/^[^#]/{/^#/p}' constraints.txt
  pip freeze --exclude-editable | sed 's/^torch==\([0-9.]*\)+.*/torch==\1/'
} > constraints.txt.new
mv constraints.txt.new constraints.txt
git --no-pager diff --stat constraints.txt
