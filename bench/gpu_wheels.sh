#!/usr/bin/env bash
# Download the cp312 wheels bench/gpu_check.sh needs on the lent GPU machine into .whl/ (git-ignored),
# from a machine that reaches PyPI. Run from anywhere; prints the wheel count and total size.
#
#   bench/gpu_wheels.sh            # then carry ".whl" in the device call that runs gpu_check.sh
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${PYTHON:-python3}
dest="$repo/.whl"
mkdir -p "$dest"
"$py" -m pip download -q --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_26_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$dest" -r "$repo/bench/gpu_wheels.txt" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
# one version of each distribution, or the install on the device stops
want=$(grep -cvE '^\s*(#|$)' "$repo/bench/gpu_wheels.txt")
have=$(find "$dest" -maxdepth 1 -type f -name '*.whl' | wc -l)
if [ "$have" -ne "$want" ]; then
    echo "gpu_wheels: $dest holds $have wheels, bench/gpu_wheels.txt lists $want: empty it and rerun" >&2
    exit 1
fi
bytes=$(find "$dest" -maxdepth 1 -type f -name '*.whl' -printf '%s\n' | awk '{s += $1} END {print s}')
echo "gpu_wheels: $have wheels in $dest, $bytes bytes ($((bytes / 1048576)) MiB); the carry limit is 64 MiB"
