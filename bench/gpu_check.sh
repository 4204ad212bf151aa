#!/usr/bin/env bash
# bench/gpu_check.sh: the GPU path end to end on a machine with a CUDA GPU, in about 5 minutes
# (8 at most): train a DCGAN on digits on `cuda` with bf16 AMP -> export (ONNX + TorchScript, with
# the fused render graph) -> the gate (export.gate's default rules) -> engine timings and parity
# on the GPU -> `bentoml serve` on the GPU -> load at 1 and 64 one-image clients. Prints the
# provider really used and the figures, and writes gpu_check.json to $OUT (the device tool's
# folder) or bench/results/.
# Without a CUDA device it exits 2 with one line on stderr.
#
# Written for the GPU machine the device tool lends (its KINDS.md): Python 3.12 with torch 2.11,
# onnx and a CPU-only onnxruntime installed, no bentoml, no network, at most 64 MiB carried per
# call. So:
# - bentoml comes as wheels in .whl/ (git-ignored), prepared on a machine with PyPI:
#       bench/gpu_wheels.sh
#   which runs `pip download --no-deps --only-binary=:all: --python-version 3.12
#   --implementation cp --platform manylinux_2_28_x86_64 ... -d .whl -r bench/gpu_wheels.txt`.
#   Measured 2026-12-01: bentoml 1.4.40 and its whole dependency tree are 71 wheels, 35.8 MB;
#   the 35 the machine's image lacks are 7,813,365 bytes (7.5 MiB). This script installs them
#   into a temp folder (pip --target, --no-index) when `import bentoml` fails.
# - onnxruntime-gpu does not fit: its cp312 wheel (1.31.1) is 255,569,273 bytes (244 MiB; the
#   CUDA provider library inside is 284 MB), four times the carry limit. Without a CUDA provider
#   in onnxruntime the script serves through the TorchScript backend on CUDA
#   (GAN_BACKEND=torchscript GAN_DEVICE=cuda) and says so, and gates those same graphs on CUDA
#   (the gate measures what the server runs); it also measures how far the GPU's pixels and
#   logits are from the ONNX graphs' on ONNX Runtime's CPU provider. With onnxruntime-gpu
#   installed, the gate and the server run the ONNX graphs on the CUDA provider.
#
# Run it on the device (one call, well inside the 10-minute limit):
#   run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=540)
#
# Environment (all optional):
#   PYTHON             interpreter with torch (default python3)
#   GPU_CHECK_KIMG     training length in thousands of images (default 60, as `make demo`)
#   GPU_CHECK_SECONDS  seconds per load level (default 5)
#   GPU_CHECK_WORKERS  public API workers of the server (default 2)
#   GPU_CHECK_GATE_N   samples the gate scores (default 5000, as `make demo`)
#   GPU_CHECK_DIR      work folder (default: a new temp folder)
#   GPU_CHECK_BUDGET   seconds the whole run may take (default 480); each step is cut to what is
#                      left, so a slow step fails with a message instead of the device call
#                      timing out with nothing written
#   GPU_CHECK_DEVICE   cuda (default). `cpu` is a dry run of this script's steps on a machine
#                      without CUDA, for developing it: its figures are not GPU figures.
set -uo pipefail

say() { printf '\n== %s\n' "$*"; }
die() {
    echo "gpu_check: $*" >&2
    exit 2
}

case "${1:-}" in
"") ;;
-h | --help)
    sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
*) die "unknown argument ${1@Q}; this script takes none (settings are environment variables, see --help)" ;;
esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
KIMG=${GPU_CHECK_KIMG:-60}
SECONDS_PER_LEVEL=${GPU_CHECK_SECONDS:-5}
WORKERS=${GPU_CHECK_WORKERS:-2}
GATE_N=${GPU_CHECK_GATE_N:-5000}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
BUDGET=${GPU_CHECK_BUDGET:-480}
NAME=gpu-check-dcgan

[[ $KIMG =~ ^[0-9]+([.][0-9]+)?$ && ! $KIMG =~ ^[0.]+$ ]] ||
    die "GPU_CHECK_KIMG=${KIMG@Q} is not a positive number of kimg (e.g. 60)"
[[ $SECONDS_PER_LEVEL =~ ^[1-9][0-9]*$ ]] ||
    die "GPU_CHECK_SECONDS=${SECONDS_PER_LEVEL@Q} is not a positive whole number of seconds"
[[ $WORKERS =~ ^[1-9][0-9]*$ ]] || die "GPU_CHECK_WORKERS=${WORKERS@Q} is not a positive integer"
[[ $GATE_N =~ ^[0-9]+$ && ${#GATE_N} -lt 9 && $GATE_N -ge 100 ]] ||
    die "GPU_CHECK_GATE_N=${GATE_N@Q} is not an integer from 100 to 99999999"
[[ $BUDGET =~ ^[0-9]+$ && ${#BUDGET} -lt 6 && $BUDGET -ge 60 ]] ||
    die "GPU_CHECK_BUDGET=${BUDGET@Q} is not a whole number of seconds from 60 to 99999"
[[ $DEVICE == cuda || $DEVICE == cpu ]] || die "GPU_CHECK_DEVICE=${DEVICE@Q}: use cuda (or cpu for a dry run)"

# -- 0. is there a CUDA device? (one line and exit 2 if not) ------------------------------------
command -v "$PY" >/dev/null 2>&1 || die "no Python interpreter ${PY@Q}; set PYTHON to one that has torch"
probe=$("$PY" -W ignore - 2>/dev/null <<'EOF'
try:
    import torch
except Exception as e:  # noqa: BLE001 - any failure means: not this interpreter
    print("notorch", f"{type(e).__name__}: {e}".splitlines()[0][:200])
    raise SystemExit(0)
if torch.cuda.is_available():
    print("ok", torch.__version__, torch.cuda.get_device_name(0))
else:
    print("nocuda", torch.__version__, torch.version.cuda or "none")
EOF
)
read -r status tver detail <<<"$probe"
case "$status" in
ok) ;;
nocuda)
    [[ $DEVICE == cpu ]] ||
        die "no CUDA device: torch $tver (CUDA build: $detail) sees no GPU; run this on a machine with an NVIDIA GPU"
    ;;
notorch) die "$PY cannot import torch ($tver $detail); set PYTHON to the interpreter that has torch" ;;
*) die "$PY did not run the CUDA probe; set PYTHON to a working interpreter with torch" ;;
esac
if [[ $DEVICE == cpu ]]; then
    echo "gpu_check: DRY RUN on the CPU (GPU_CHECK_DEVICE=cpu): these figures are not GPU figures"
else
    echo "gpu_check: torch $tver on $detail"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
fi

# -- work folder, Python path, bentoml ------------------------------------------------------------
WORK=${GPU_CHECK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-XXXXXX")}
mkdir -p "$WORK" || die "cannot create the work folder ${WORK@Q}"
RESULTS=${OUT:-$REPO/bench/results}
mkdir -p "$RESULTS" || die "cannot create the results folder ${RESULTS@Q}"
exec > >(tee "$RESULTS/gpu_check.log") 2>&1 # the whole log comes back with the results
BUNDLE="$WORK/$NAME"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export GANFORGE_HOME="$WORK/home" BENTOML_HOME="$WORK/bentoml" BENTOML_DO_NOT_TRACK=1
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=5
cd "$REPO" || die "cannot enter $REPO"
t_start=$SECONDS
step_t=$SECONDS
# limit CAP: T = the seconds the next step may take (at most CAP, at most what the budget has left)
limit() {
    local rest=$((BUDGET - (SECONDS - t_start)))
    ((rest >= 10)) || die "out of time: ${BUDGET} s spent before the next step (GPU_CHECK_BUDGET)"
    T=$((rest < $1 ? rest : $1))
}
lap() {
    echo "   ($(( SECONDS - step_t )) s; $(( SECONDS - t_start )) s since the start)"
    step_t=$SECONDS
}

if ! "$PY" -c "import bentoml" >/dev/null 2>&1; then
    shopt -s nullglob
    wheels=("$REPO"/.whl/*.whl)
    shopt -u nullglob
    ((${#wheels[@]})) ||
        die "bentoml is not installed and .whl/ holds no wheels: run bench/gpu_wheels.sh where PyPI is reachable, then carry .whl"
    say "installing ${#wheels[@]} carried wheels (bentoml and what the image lacks) into $WORK/site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$WORK/site" "${wheels[@]}" || die "pip could not install the wheels in .whl/"
    export PYTHONPATH="$WORK/site:$PYTHONPATH"
    # The wheels came without their dependencies: say which requirement the image does not meet.
    "$PY" - "$WORK/site" <<'EOF'
import sys
from importlib import metadata

from packaging.requirements import Requirement

for dist in metadata.distributions(path=[sys.argv[1]]):
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            print(f"warning: {dist.metadata['Name']} needs {req}, which is not installed")
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            print(f"warning: {dist.metadata['Name']} needs {req}, the machine has {have}")
EOF
    "$PY" -c "import bentoml" || die "bentoml still does not import after installing .whl/ (see above)"
fi
lap

# -- 1. train on the GPU with bf16 AMP, reference statistics beside it on the CPU ---------------
say "1/6 train: DCGAN 32x32 on digits, $KIMG kimg, --device $DEVICE --precision bf16"
limit 300
timeout -k 10 "$T" "$PY" -m training.eval.cli stats --dataset digits --resolution 32 --split heldout \
    --out "$WORK/ref.npz" >"$WORK/stats.log" 2>&1 &
stats_pid=$!
trap 'kill "$stats_pid" 2>/dev/null' EXIT # if training fails first
timeout -k 10 "$T" "$PY" -m training.cli --model dcgan --dataset digits --resolution 32 \
    --g-width 32 --d-width 32 --kimg "$KIMG" --device "$DEVICE" --precision bf16 \
    --eval-every 0 --sample-every 1000000 --ckpt-every 1000000 --no-progress \
    --out "$WORK/run" || die "training failed (exit $?; 124: over its $T s)"
wait "$stats_pid" || {
    tail -n 20 "$WORK/stats.log" >&2
    die "gan-eval stats failed (log above)"
}
lap

# -- 2. export --------------------------------------------------------------------------------
say "2/6 export: ONNX + TorchScript, parity checks, filter calibration"
limit 240
timeout -k 10 "$T" "$PY" -m export.cli "$WORK/run" --out "$BUNDLE" \
    --formats onnx,torchscript -q || die "export failed (exit $?; 124: over its $T s)"
lap

# -- 3. the backend that serves on the GPU, and the gate on it --------------------------------
# The server's rule (gancore/cuda.py): load the pip-installed CUDA/cuDNN libraries, then ONNX
# Runtime's CUDA provider must load; its report says what is missing when it does not.
"$PY" -m gancore.cuda >"$WORK/cuda.json" 2>"$WORK/cuda.log"
ort_cuda=$("$PY" -c "import json, sys; r = json.load(open(sys.argv[1])); print(int(r['cuda_provider_built'] and r['provider_load_error'] is None))" "$WORK/cuda.json" 2>/dev/null || echo 0)
sed 's/^/gpu_check: /' "$WORK/cuda.log"
if [[ $DEVICE == cuda && $ort_cuda == 1 ]]; then
    BACKEND=onnx
    echo "gpu_check: onnxruntime has the CUDA provider: gating and serving the ONNX graphs on it"
else
    BACKEND=torchscript
    [[ $DEVICE == cuda ]] &&
        echo "gpu_check: ONNX Runtime's CUDA provider is not usable here (onnxruntime-gpu, 244 MiB, is over the 64 MiB carry limit, or a library is missing: $WORK/cuda.json): gating and serving through TorchScript on CUDA"
fi

say "3/6 gate ($BACKEND on $DEVICE): the default rules (gancore.gate_rules.GateRules) on $GATE_N samples"
limit 240
rm -f "$WORK/gate_failed.txt"
timeout -k 10 "$T" "$PY" - "$BUNDLE" "$WORK/ref.npz" "$GATE_N" "$BACKEND" "$DEVICE" "$WORK/gate_failed.txt" <<'EOF'
"""The gate (export.gate.run_gate, default rules) on the graphs the server will run."""

import sys
from pathlib import Path

from gancore.errors import ExportError
from export.gate import run_gate

path, ref, n, backend, device, failed_file = sys.argv[1:7]
try:
    g = run_gate(path, ref, n=int(n), backend=backend, device=device)
except ExportError as e:
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(2) from None
print(f"gate {g['verdict']} on {g['generated_by']}, N={g['n']}:")
for r in g["rules"]:
    print(f"  {'pass' if r['passed'] else 'FAIL'}  {r['text']}")
if g["verdict"] != "passed":
    failed = [r["text"] for r in g["rules"] if not r["passed"]]
    Path(failed_file).write_text("; ".join(failed) + "\n")
    raise SystemExit(1)
EOF
gate_rc=$?
case $gate_rc in
0) UNGATED=0 ;;
1)
    UNGATED=1
    echo "gpu_check: the gate FAILED ($(cat "$WORK/gate_failed.txt" 2>/dev/null || echo "rules: see gate.md")); serving the bundle ungated (GAN_ALLOW_UNGATED=1) to check the GPU path"
    ;;
*) die "the gate did not run (exit $gate_rc; 124: over its $T s)" ;;
esac
lap

# -- 4. engine ----------------------------------------------------------------------------------
say "4/6 engine on $DEVICE ($BACKEND): timings at batch 1 and 64, parity with the ONNX graphs on CPU"
limit 180
timeout -k 10 "$T" "$PY" - "$BUNDLE" "$BACKEND" "$DEVICE" "$WORK/engine.json" <<'EOF' || die "the engine check failed (exit $?; 124: over its $T s)"
"""G then D through the bundle loader (host copies between) vs the fused render graph on the
device; the device's pixels and logits vs the ONNX graphs' on ONNX Runtime CPU, same seeds."""

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from gancore import bundle as bundle_mod
from gancore import sampling

path, backend, device, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
b = bundle_mod.load(path, backend=backend, device=device, require_gate=False)
res = {"backend": backend, "device": device, "provider": b.provider}
sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
# The CPU dry run only proves the steps run: shorter timings, fewer parity seeds.
TIMED_S, PARITY_N = (1.0, 1024) if device == "cuda" else (0.2, 256)


def per_call_ms(fn, seconds=TIMED_S):
    for _ in range(5):
        fn()
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    sync()
    return 1000 * (time.perf_counter() - t0) / n


seeds = list(range(PARITY_N))
z = sampling.z_from_seeds(seeds, b.latent_dim)
for batch in (1, 64):
    zb = z[:batch]
    ms = per_call_ms(lambda: b.discriminator(b.generator(zb)))
    res[f"separate_ms_batch{batch}"] = ms
    res[f"separate_img_s_batch{batch}"] = 1000 * batch / ms
render_file = b.manifest["graphs"]["render"]["files"]  # exported by this ganforge: always there
cpu_render = ort.InferenceSession(
    str(path / render_file["onnx"]), providers=["CPUExecutionProvider"]
)
ref_image, ref_logit = cpu_render.run(None, {"z": z})
if backend == "torchscript":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = torch.jit.load(str(path / render_file["torchscript"]), map_location=device).eval()
    zt = torch.from_numpy(z).to(device)

    def fused(zz):
        with torch.inference_mode():
            image, logit = m(zz)
            return image.cpu().numpy(), logit.cpu().numpy()  # what a server needs on the host

    for batch in (1, 64):
        ms = per_call_ms(lambda: fused(zt[:batch]))
        res[f"fused_ms_batch{batch}"] = ms
        res[f"fused_img_s_batch{batch}"] = 1000 * batch / ms
    for tf32 in (True, False):  # cuDNN convolutions default to TF32 on Ampere and later
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        image, logit = fused(zt)
        key = "tf32_on" if tf32 else "tf32_off"
        res[f"parity_{key}"] = {
            "image_max_abs_diff": float(np.abs(image - ref_image).max()),
            "logit_max_abs_diff": float(np.abs(logit - ref_logit).max()),
        }
    torch.backends.cudnn.allow_tf32 = True
else:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    gpu = ort.InferenceSession(str(path / render_file["onnx"]), so, providers=b.providers)
    for batch in (1, 64):
        feed = {"z": z[:batch]}
        ms = per_call_ms(lambda: gpu.run(None, feed))
        res[f"fused_ms_batch{batch}"] = ms
        res[f"fused_img_s_batch{batch}"] = 1000 * batch / ms
    image, logit = gpu.run(None, {"z": z})
    res["parity"] = {
        "image_max_abs_diff": float(np.abs(image - ref_image).max()),
        "logit_max_abs_diff": float(np.abs(logit - ref_logit).max()),
    }
res["parity_seeds"] = (
    f"0-{PARITY_N - 1} (the gate's first {PARITY_N}), against render.onnx on ONNX Runtime CPU"
)
Path(out).write_text(json.dumps(res, indent=2))
print(f"provider {b.provider}")
for batch in (1, 64):
    line = f"batch {batch:2d}: G then D via the loader {res[f'separate_ms_batch{batch}']:.3f} ms"
    if f"fused_ms_batch{batch}" in res:
        line += f", fused render graph {res[f'fused_ms_batch{batch}']:.3f} ms"
    print(line + " per call")
for key in ("parity", "parity_tf32_on", "parity_tf32_off"):
    if key in res:
        p = res[key]
        print(f"{key}: image {p['image_max_abs_diff']:.2e}, logit {p['logit_max_abs_diff']:.2e}")
EOF
lap

# -- 5. serve and load -------------------------------------------------------------------------
say "5/6 bentoml serve (GAN_BACKEND=$BACKEND GAN_DEVICE=$DEVICE, $WORKERS API workers) under 1 and 64 clients"
limit 240
timeout -k 15 "$T" "$PY" - "$BUNDLE" "$BACKEND" "$DEVICE" "$WORKERS" "$SECONDS_PER_LEVEL" \
    "$UNGATED" "$WORK/serve.json" <<'EOF' || die "serving failed (exit $?; 124: over its $T s)"
"""`bentoml serve` through bench/serve_load.py's Server, warm-up and load client."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from bench import serve_load as SL

# A timeout's SIGTERM must still stop the server (it runs in its own session: `warmed` stops it).
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

path, backend, device, workers, seconds, ungated, out = sys.argv[1:8]
model = json.loads((Path(path) / "manifest.json").read_text())["name"]
# Server() drops the caller's GAN_* variables and sets PYTHONPATH to the repo: hand it the
# backend, the device and this script's PYTHONPATH (which holds the carried bentoml wheels).
env = {"GAN_BACKEND": backend, "GAN_DEVICE": device, "PYTHONPATH": os.environ["PYTHONPATH"]}
server = SL.Server("ganforge", [Path(path)], int(workers), ungated=ungated == "1", env=env)


def models(url):
    """GET /models: what the server says it serves, and on which provider."""
    with urllib.request.urlopen(f"{url}/models", timeout=10) as r:
        return json.loads(r.read())


def gpu_apps():
    try:
        q = "--query-compute-apps=pid,used_memory"
        cmd = ["nvidia-smi", q, "--format=csv,noheader"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return []


with SL.warmed(server, model) as s:
    info = models(s.url)
    providers = sorted({m.get("provider", "?") for m in info.get("models", [])})
    rows = []
    for clients in (1, 64):
        rows.append(asyncio.run(SL.drive(s.url, model, clients, float(seconds), s)))
    apps = [a for a in gpu_apps() if a.strip()]
res = {"model": model, "providers": providers, "levels": rows, "gpu_processes": apps}
Path(out).write_text(json.dumps(res, indent=2))
print(f"served {model!r}; /models says provider {', '.join(providers) or 'unknown'}")
if apps:
    print("processes on the GPU (nvidia-smi):", "; ".join(apps))
for r in rows:
    print(
        f"{r['clients']:2d} clients: {r['images_per_s']:.0f} img/s, p50 {r['p50_ms']:.1f} ms, "
        f"p99 {r['p99_ms']:.1f} ms, {r['errors']} errors"
    )
EOF
lap

# -- 6. summary --------------------------------------------------------------------------------
say "6/6 summary"
"$PY" - "$WORK" "$RESULTS/gpu_check.json" "$DEVICE" "$BACKEND" "$(( SECONDS - t_start ))" <<'EOF' || die "could not write the summary"
import json
import os
import sys
import time
from pathlib import Path

work, out, device, backend, seconds = Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:]
metrics = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
last = [m for m in metrics if "img_per_s" in m][-1]
gate = json.loads((work / "gpu-check-dcgan" / "gate.json").read_text())
engine = json.loads((work / "engine.json").read_text())
serve = json.loads((work / "serve.json").read_text())
res = {
    "device": device,
    "dry_run_on_cpu": device == "cpu",
    "train": {"precision": "bf16", "kimg": last["kimg"], "img_per_s": last["img_per_s"],
              "train_seconds": last["train_seconds"]},  # fmt: skip
    "gate": {
        k: gate.get(k)
        for k in ("verdict", "failed_rules", "distance", "threshold", "n", "generated_by")
    },
    "serving_backend": backend,
    "engine": engine,
    "serve": serve,
    "total_seconds": int(seconds),
    "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
}
tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
tmp.write_text(json.dumps(res, indent=2) + "\n")
tmp.replace(out)
lv = {r["clients"]: r for r in serve["levels"]}
print(f"train    : {device}, bf16 AMP, {last['img_per_s']:.0f} img/s at the end, "
      f"{last['train_seconds']:.0f} s for {last['kimg']:g} kimg")  # fmt: skip
print(f"gate     : {gate['verdict']} (distance {gate['distance']:.3g}, threshold "
      f"{gate['threshold']:.3g}; failed: {', '.join(gate['failed_rules']) or 'none'}), "
      f"run on {gate['generated_by']}")  # fmt: skip
print(f"engine   : {engine['provider']}; batch 64 G then D {engine['separate_img_s_batch64']:.0f} "
      f"img/s, fused render {engine.get('fused_img_s_batch64', float('nan')):.0f} img/s")  # fmt: skip
print(f"serving  : GAN_BACKEND={backend}, provider {', '.join(serve['providers'])}; "
      f"1 client {lv[1]['images_per_s']:.0f} img/s (p50 {lv[1]['p50_ms']:.1f} ms), "
      f"64 clients {lv[64]['images_per_s']:.0f} img/s (p99 {lv[64]['p99_ms']:.1f} ms)")  # fmt: skip
print(f"total    : {seconds} s; wrote {out}")
EOF
