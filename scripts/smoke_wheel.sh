#!/usr/bin/env bash
# The package as a new user gets it: build the sdist and, from it, the wheel (python -m build), install
# the wheel (not editable) in a fresh virtual environment, and from an empty folder run the first
# commands a user runs. Called by .ci/run after the test suite; run it by hand the same way:
#   bash scripts/smoke_wheel.sh            (needs the `build` package: pip install build)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/ipce-wheel-XXXXXX")"
trap 'rm -rf "$work"' EXIT
started=$SECONDS

python -m build --outdir "$work/dist" "$repo" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
ls "$work"/dist/ipce-*.whl "$work"/dist/ipce-*.tar.gz

python3 -m venv "$work/venv"
# shellcheck disable=SC1091
. "$work/venv/bin/activate"
# the torch pair this machine serves from its disk first, so pip resolves no other build; then the wheel
python -m pip install -q torch==2.14.1 torchvision==0.29.1 2>&1 | grep -v "^WARNING: Location" || true
python -m pip install -q "$work"/dist/ipce-*.whl 2>&1 | grep -v "^WARNING: Location" || true

mkdir "$work/empty" && cd "$work/empty"
unset PYTHONPATH
where="$(python -c 'import ipce; print(ipce.__file__)')"
case "$where" in "$work/venv/"*) echo "ipce from the wheel: $where" ;;
    *) echo "smoke: ipce imported from $where, not from the wheel's install" >&2; exit 1 ;; esac

version="$(ipce --version)"
echo "$version"
[[ "$version" =~ ^ipce\ [0-9.]+\ \(torch\ [0-9].*,\ open_clip\ [0-9] ]] || { echo "smoke: bad --version: $version" >&2; exit 1; }

# the shipped split folders (package data) come out of the wheel
ipce splits --preset agiqa3k --export original --out splits
test -s splits/1/train.csv && test -s splits/10/val.csv

# one image scored with a tiny random model (no download)
python -c "from PIL import Image; Image.new('RGB', (300, 260), (200, 40, 40)).save('red.png')"
ipce score red.png --prompt "a red square" --checkpoint tiny --device cpu --out score.csv
python -c "import csv; rows = list(csv.DictReader(open('score.csv'))); s = float(rows[0]['score']); assert 0 <= s <= 5, s"

# the demo end to end: generated data, pretraining, fine-tuning, analyses
ipce demo --quick --out demo --device cpu --no-progress >demo.log 2>&1 || { tail -40 demo.log; exit 1; }
test -s demo/summary.json && test -s demo/run/split1/best.safetensors
tail -3 demo.log
echo "wheel smoke test passed in $((SECONDS - started)) s"
