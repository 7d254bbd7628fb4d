#!/usr/bin/env bash
# Run THERE, on the GPU machine, from the repository root, with .whl/ carried (wheels.sh):
#   bash benchmarks/cuda/check.sh [PROBLEM...]     (default: digits_mlp cnn large_mlp)
# 1. the device tests (the tests parametrized over devices, their CUDA instances only),
#    oom_check.py (the walk's interpolation running out of device memory for real) and
#    landscape_check.py (SGD chains and the escape experiment on a moved landscape, against
#    the CPU with the same seed);
# 2. bench_peers.py's figures on CUDA, one JSON and one log per problem in $OUT (or out/);
# 3. catalogue experiments at smoke scale on the device (RUNS, default: xing-walk, then
#    jastrzebski-ratio-grid as a sweep with two workers), each with its report; RUNS= for none.
# Each stage has its own time limit, so that one slow stage cannot eat the whole lease.
# A dry run here on the CPU: DEVICE=cpu SKIP_WHEELS=1 bash benchmarks/cuda/check.sh digits_mlp
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-out}"
device="${DEVICE:-cuda}"
mkdir -p "$out"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
if [ -d .whl ] && [ -z "${SKIP_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
fi
problems=("$@")
[ ${#problems[@]} -gt 0 ] || problems=(digits_mlp cnn large_mlp)
python3 -c "import torch, sgdlab
ok = '$device' == 'cpu' or torch.cuda.is_available()
assert ok, 'no CUDA device'
print('torch', torch.__version__, torch.cuda.get_device_name(0) if ok and '$device' != 'cpu'
      else 'cpu')" || exit 1
timeout "${TEST_SECONDS:-150}" python3 -m pytest -q -p no:cacheprovider -k "$device" \
  tests/measure/test_devices.py tests/optim/test_optimizer_contract.py \
  tests/train/test_train_loop.py tests/landscapes/test_landscape_devices.py 2>&1 \
  | tee "$out/${device}_tests.log" | tail -3
timeout "${OOM_SECONDS:-90}" python3 benchmarks/cuda/oom_check.py 2>&1 \
  | tee "$out/${device}_oom.log"
DEVICE="$device" timeout "${LANDSCAPE_SECONDS:-60}" python3 benchmarks/cuda/landscape_check.py \
  2>&1 | tee "$out/${device}_landscape.log"
for name in "${problems[@]}"; do
  SGDLAB_BENCH_DEVICE="$device" SGDLAB_BENCH_REPEATS="${REPEATS:-3}" \
    timeout "${FIGURE_SECONDS:-150}" python3 -c "
import json, sys
sys.path.insert(0, 'benchmarks')
import bench_peers
figures = bench_peers.run('$name')
json.dump(figures, open('$out/${device}_$name.json', 'w'), indent=1, sort_keys=True)
for k, v in figures.items():
    print(f'{k}: {v}')" 2>&1 | tee "$out/${device}_$name.log" | grep -E "^[a-z0-9_]+: |==|->"
done
for entry in ${RUNS-xing-walk jastrzebski-ratio-grid}; do
  timeout "${RUN_SECONDS:-90}" python3 -m sgdlab.cli run "$entry" --scale smoke --workers 2 \
    --device "$device" --out "/tmp/cuda-run/$entry" --store /tmp/cuda-run/runs.sqlite 2>&1 \
    | tee "$out/${device}_run_$entry.log" | tail -6
done
