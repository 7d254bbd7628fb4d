#!/usr/bin/env bash
# Run THERE, on the GPU machine, from the repository root, with .whl/ carried (wheels.sh):
#   bash benchmarks/cuda/check.sh [PROBLEM...]     (default: digits_mlp cnn large_mlp)
# 1. the device tests (the tests parametrized over devices, their CUDA instances only),
#    oom_check.py (the walk's interpolation running out of device memory for real),
#    landscape_check.py (SGD chains and the escape experiment on a moved landscape, against
#    the CPU with the same seed), and the two ways a user runs landscapes on the device, each
#    against the CPU with the same seed: `sgdlab landscape escape --quick --device` (the CLI
#    demo) and `sgdlab run zhu-escape-2d --scale smoke --device` (the catalogue procedure);
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
# success rates equal up to one chain (float32 chains: round-off may move one across the
# barrier), the expected sharpness to 1e-3
land=/tmp/cuda-landscape
rm -rf "$land"
for dev in cpu "$device"; do
  timeout "${LANDSCAPE_SECONDS:-60}" python3 -m sgdlab.cli landscape escape --quick --seed 0 \
    --device "$dev" --out "$land/cli-$dev" > "$out/${device}_landscape_cli_$dev.log" 2>&1 \
    || echo "FAIL sgdlab landscape escape --device $dev: exit $?"
  timeout "${LANDSCAPE_SECONDS:-60}" python3 -m sgdlab.cli run zhu-escape-2d --scale smoke \
    --device "$dev" --out "$land/run-$dev" --store "$land/runs-$dev.sqlite" \
    > "$out/${device}_landscape_run_$dev.log" 2>&1 \
    || echo "FAIL sgdlab run zhu-escape-2d --device $dev: exit $?"
done 2>&1 | tee "$out/${device}_landscape_paths.log"
python3 - "$land" "$device" <<'PY' 2>&1 | tee -a "$out/${device}_landscape_paths.log"
import json, math, sys
land, dev = sys.argv[1:]
def read(path):
    try:
        return json.load(open(path))
    except OSError as e:
        print(f"FAIL {path}: {e}")
        return None
for what, name in (("sgdlab landscape escape --quick", "cli"),
                   ("sgdlab run zhu-escape-2d --scale smoke", "run")):
    a, b = read(f"{land}/{name}-cpu/results.json"), read(f"{land}/{name}-{dev}/results.json")
    if a is None or b is None:
        continue
    if name == "cli":
        reps = a["config"]["repetitions"]
        pairs = {m: (a["success_rate"][m] * reps, b["success_rate"][m] * reps,
                     a["sharpness"][m][-1], b["sharpness"][m][-1]) for m in a["success_rate"]}
        where = b["device"]
    else:
        sa = {r["label"]: r["summary"] for r in a["runs"]}
        sb = {r["label"]: r["summary"] for r in b["runs"]}
        pairs = {m: (sa[m]["successes"], sb.get(m, {}).get("successes", math.nan),
                     sa[m]["final_sharpness"], sb.get(m, {}).get("final_sharpness", math.nan))
                 for m in sa}
        where = b["environment"]["device"]
    ok = all(abs(x - y) <= 1 + 1e-9 and math.isclose(s, t, rel_tol=1e-3, abs_tol=1e-9)
             for x, y, s, t in pairs.values())
    print(f"{'ok  ' if ok else 'FAIL'} {what} --device {dev} ({where}) vs cpu: successes and "
          "final sharpness " + ", ".join(f"{m} {x:g}/{y:g} {s:.4g}/{t:.4g}"
                                         for m, (x, y, s, t) in pairs.items()))
PY
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
