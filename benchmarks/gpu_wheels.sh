#!/usr/bin/env bash
# Prepare, on this machine, what benchmarks/gpu_compare.sh needs on the device machine (which reaches no network):
# MLX 0.32.4 with its CUDA 13 backend (the device image's torch is a CUDA 13 build, whose NVIDIA libraries the backend
# then uses) and ltx-core 1.0.0, for Python 3.12 on x86-64; and the real transformer / VAE configs (configs.json,
# from models/full_size.py).
#
# Everything goes to .gpu-compare/ (ignored: .gitignore). The wheels (~91 MB: mlx-cuda-13 alone
# is 90 MB) are cut into parts of at most PART_MB (default 24) MiB, one folder each (part0, part1, ...), so that each
# device call carries one part with the working tree and stays under the 64 MiB a call may carry; meta/ holds the
# configs and the checksums. benchmarks/gpu_compare.sh says how the calls go.
#
#   bash benchmarks/gpu_wheels.sh            # then see benchmarks/gpu_compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=.gpu-compare
PART_MB=${PART_MB:-24}
PY=${PY:-.venv/bin/python}

git check-ignore -q "$DIR/meta" || { echo "gpu_wheels.sh: $DIR is not ignored by git (.gitignore)" >&2; exit 1; }
rm -rf "$DIR" && mkdir -p "$DIR/wheels" "$DIR/meta"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_35_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    -d "$DIR/wheels" mlx==0.32.4 mlx-cuda-13==0.32.4 ltx-core==1.0.0

"$PY" - "$DIR/meta/configs.json" <<'EOF'
import json, sys
from ltx2.models.full_size import TRANSFORMER, VAE
json.dump({"transformer": TRANSFORMER, "vae": VAE}, open(sys.argv[1], "w"), indent=1)
EOF

(cd "$DIR/wheels" && sha256sum ./*.whl > ../meta/wheels.sha256)
# one byte stream of every wheel, cut into parts; gpu_compare.sh joins them back and checks the checksums
(cd "$DIR/wheels" && tar cf - ./*.whl) | split -b "${PART_MB}M" -d -a 2 - "$DIR/bundle.tar."
i=0
for f in "$DIR"/bundle.tar.*; do
    mkdir -p "$DIR/part$i" && mv "$f" "$DIR/part$i/"
    i=$((i + 1))
done
rm -rf "$DIR/wheels"
echo "$i" > "$DIR/meta/parts"
du -sh "$DIR"/part* "$DIR/meta"
echo "carry .gpu-compare/part0 .. part$((i - 1)) in turn, then meta with the last one: see benchmarks/gpu_compare.sh"
