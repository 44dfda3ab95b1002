#!/usr/bin/env bash
# MLX on CUDA vs the official ltx-core on torch CUDA (benchmarks/gpu_compare.py), on the device machine.
#
# The device reaches no network, and one call carries at most 64 MiB with the working tree, so the wheels travel in
# parts made here by `bash benchmarks/gpu_wheels.sh` (.gpu-compare/part0, part1, ..., meta/). With the device tool,
# back to back (a machine stays warm ~30 s after a call; a fresh one would have lost the parts already sent):
#
#   run  command="bash benchmarks/gpu_compare.sh stash"  carry=[".gpu-compare/part0"]
#   run  command="bash benchmarks/gpu_compare.sh stash"  carry=[".gpu-compare/part1"]
#   run  command="bash benchmarks/gpu_compare.sh stash"  carry=[".gpu-compare/part2"]
#   run  command="bash benchmarks/gpu_compare.sh run"    carry=[".gpu-compare/part3", ".gpu-compare/meta"]
#        timeout_s=420
#
# (as many stash calls as gpu_wheels.sh made parts, less the last; `run` says which parts are missing, if any.)
# `stash` keeps the carried part in /tmp/gpu-compare; `run` joins the parts, checks them, installs the wheels into
# /tmp/site, puts this checkout on the path as the package `ltx2`, and runs the comparison (a few minutes on one H100;
# cut off at GPU_COMPARE_TIMEOUT, default 300 s) with its table on stdout and JSON + log in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
STASH=/tmp/gpu-compare
mkdir -p "$STASH"
for d in .gpu-compare/part*; do
    [ -d "$d" ] && cp -f "$d"/bundle.tar.* "$STASH"/
done
if [ "${1:-run}" = stash ]; then
    ls -l "$STASH"
    exit 0
fi

META=.gpu-compare/meta
want=$(cat "$META/parts")
have=$(ls "$STASH"/bundle.tar.* | wc -l)
if [ "$have" -ne "$want" ]; then
    echo "gpu_compare.sh: $have of $want wheel parts here (a fresh machine loses the stashed ones): send every part" \
         "again, back to back" >&2
    exit 3
fi
mkdir -p "$STASH/wheels"
cat "$STASH"/bundle.tar.* | tar xf - -C "$STASH/wheels"
(cd "$STASH/wheels" && sha256sum -c --quiet "$OLDPWD/$META/wheels.sha256")
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$STASH"/wheels/*.whl

# this checkout as the package `ltx2` (the repo root is the package), the wheels beside it
mkdir -p /tmp/ltx2-path && ln -sfn "$PWD" /tmp/ltx2-path/ltx2
export PYTHONPATH=/tmp/ltx2-path:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
# MLX's CUDA backend links the CUDA 13 libraries torch's environment installed (nvidia/*/lib): put them on the path
site=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
libs=$(find "$site/nvidia" -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u | paste -sd:)
export LD_LIBRARY_PATH=${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
[ -d /usr/local/cuda ] && export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c 'import mlx.core as mx, torch; print("mlx", mx.__version__, mx.default_device(), "| torch", torch.__version__,
torch.cuda.is_available())'

out=${OUT:-/tmp}
set -o pipefail
PYTHONUNBUFFERED=1 timeout "${GPU_COMPARE_TIMEOUT:-300}" python3 benchmarks/gpu_compare.py \
    --configs "$META/configs.json" --out "$out/gpu_compare.json" 2>&1 | tee "$out/gpu_compare.log"
