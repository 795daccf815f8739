#!/usr/bin/env bash
# GPU check kit (issue 13): CUDA tests, speed and memory of the paper's CUB model (Swin-L @384, bf16) against the
# plain backbone, a short real training run with train_pim.py and pim-infer throughput, in one command that fits a
# short loan of a GPU machine without network. Writes at most 5 files to OUTDIR: summary.json, summary.md, run.log
# (every stage's output), pim_train_step_trace.json.gz (torch.profiler, full mode) and nothing else.
#
#   benchmarks/gpu/run.sh OUTDIR [--quick] [--device cpu] [--no-install]
#
#   (default)     full run, under 8 minutes on one H200 (stages below; compile gets the time left)
#   --quick       under 3 minutes: CUDA tests, eager speed, 30 training steps, 256 images of pim-infer
#   --device cpu  a dry run of every stage with tiny sizes on the CPU (tests/test_gpu_kit.py runs it)
#   --no-install  use the Python environment as it is (no wheels from .whl/)
#
# The wheels the GPU image lacks (benchmarks/gpu/fetch_wheels.sh) are installed from .whl/ into a private target
# put first on PYTHONPATH, with the repository root: nothing is installed into the image itself. Each stage runs in
# its own process under its own time limit; a stage that fails or times out is recorded and the next one runs.
set -u

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

OUT=""
MODE=full
DEVICE=cuda
INSTALL=1
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) MODE=quick ;;
        --device)
            [ $# -ge 2 ] || { echo "run.sh: error: --device needs a value (cuda or cpu)" >&2; exit 2; }
            DEVICE=$2
            shift
            ;;
        --no-install) INSTALL=0 ;;
        -h | --help) usage; exit 0 ;;
        -*) echo "run.sh: error: unknown option $1 (see --help)" >&2; exit 2 ;;
        *)
            [ -z "$OUT" ] || { echo "run.sh: error: one OUTDIR only, got $OUT and $1" >&2; exit 2; }
            OUT=$1
            ;;
    esac
    shift
done
[ -n "$OUT" ] || { usage >&2; echo "run.sh: error: OUTDIR is required" >&2; exit 2; }
case "$DEVICE" in cuda | cpu) ;; *) echo "run.sh: error: --device must be cuda or cpu, got $DEVICE" >&2; exit 2 ;; esac
[ "$DEVICE" = cpu ] && MODE=cpu

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/pim-gpu-kit.XXXXXX")"
LOG="$OUT/run.log"
: >"$LOG"
: >"$WORK/stages.tsv"
cd "$REPO" || exit 2

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export HF_HOME="$WORK/hf_home" MPLBACKEND=Agg TOKENIZERS_PARALLELISM=false
export TORCHINDUCTOR_CACHE_DIR="$WORK/inductor_cache"

# Sizes per mode. Budget: the deadline of the whole run in seconds; every stage's limit is cut to what is left.
TINY_SWIN='{"embed_dim": 8, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "window_size": 2}'
case "$MODE" in
    full)
        BUDGET=450 IMAGE_SIZE=384 TRAIN_PER_CLASS=150 INFER_PER_CLASS=64 TRAIN_STEPS=200 LOGGING_STEPS=10
        SPEED_ARGS=(--warmup 5 --repeats 20 --variants eager channels_last --profile_trace "$OUT/pim_train_step_trace.json.gz")
        COMPILE_ARGS=(--warmup 3 --repeats 20 --variants compile)
        TRAIN_ARGS=(--dataloader_num_workers 8)
        INFER_ARGS=(--batch_size 64 --small 64 --num_workers 8 --device cuda --dtype bfloat16)
        ;;
    quick)
        BUDGET=170 IMAGE_SIZE=384 TRAIN_PER_CLASS=40 INFER_PER_CLASS=32 TRAIN_STEPS=30 LOGGING_STEPS=3
        SPEED_ARGS=(--warmup 3 --repeats 10 --variants eager)
        COMPILE_ARGS=()
        TRAIN_ARGS=(--dataloader_num_workers 8)
        INFER_ARGS=(--batch_size 64 --small 64 --num_workers 8 --device cuda --dtype bfloat16)
        ;;
    cpu)
        BUDGET=540 IMAGE_SIZE=64 TRAIN_PER_CLASS=2 INFER_PER_CLASS=2 TRAIN_STEPS=2 LOGGING_STEPS=1
        TINY_MODEL=(--backbone swin_tiny_patch4_window7_224 --backbone_kwargs "$TINY_SWIN" --image_size 64 --fpn_size 16
            --num_selects 16 8 2 1 --tokens_per_graph_node 4)
        SPEED_ARGS=("${TINY_MODEL[@]}" --batch_size 2 --num_classes 8 --device cpu --dtype float32 --warmup 1
            --repeats 2 --variants eager --profile_trace "$OUT/pim_train_step_trace.json.gz")
        COMPILE_ARGS=()
        TRAIN_ARGS=("${TINY_MODEL[@]}" --per_device_train_batch_size 2 --dataloader_num_workers 1 --use_cpu true
            --bf16 false)
        INFER_ARGS=(--batch_size 4 --small 8 --num_workers 1 --device cpu --dtype float32
            --fallback_model "{\"backbone\": \"swin_tiny_patch4_window7_224\", \"backbone_kwargs\": $TINY_SWIN,
            \"feature_taps\": \"paper\", \"image_size\": 64, \"fpn_size\": 16, \"proj_type\": \"Linear\",
            \"upsample_type\": \"Conv\", \"num_selects\": [16, 8, 2, 1], \"tokens_per_graph_node\": 4}")
        ;;
esac
# One thread per process on the CPU: the dry run's tiny operators only lose time to thread synchronisation.
[ "$MODE" = cpu ] && export OMP_NUM_THREADS=1
START=$(date +%s)
DEADLINE=$((START + BUDGET))

# record NAME STATUS EXIT_CODE SECONDS LIMIT NOTE
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$WORK/stages.tsv"; }

# stage NAME LIMIT_SECONDS COMMAND...: runs COMMAND under `timeout`, its output appended to run.log; prints one line.
stage() {
    local name=$1 limit=$2
    shift 2
    local left=$((DEADLINE - $(date +%s)))
    if [ "$left" -lt 20 ]; then
        record "$name" skipped 0 0 0 "time budget spent"
        echo "[$name] skipped: time budget spent"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local stage_log="$WORK/$name.log" begin end code status
    echo "[$name] running (limit ${limit} s) ..."
    begin=$(date +%s.%N)
    timeout --kill-after=10 "$limit" "$@" >"$stage_log" 2>&1
    code=$?
    end=$(date +%s.%N)
    case "$code" in
        0) status=ok ;;
        124 | 137) status=timeout ;;
        *) status=failed ;;
    esac
    local seconds
    seconds=$(awk -v a="$begin" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    record "$name" "$status" "$code" "$seconds" "$limit" ""
    { echo "===== stage $name: $status (exit $code, $seconds s, limit $limit s)"; echo "\$ $*"; cat "$stage_log"; } >>"$LOG"
    echo "[$name] $status (exit $code) in $seconds s"
    if [ "$status" != ok ]; then
        echo "----- last lines of $name:"
        tail -n 25 "$stage_log"
        echo "-----"
    fi
}

echo "GPU check kit: mode $MODE, device $DEVICE, budget ${BUDGET} s, output $OUT, scratch $WORK"

# 0. wheels into a private target, then our package from the repository root.
if [ "$INSTALL" = 1 ] && compgen -G "$REPO/.whl/*.whl" >/dev/null; then
    stage install 120 "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$WORK/site" "$REPO"/.whl/*.whl
    export PYTHONPATH="$WORK/site:$REPO${PYTHONPATH:+:$PYTHONPATH}"
else
    record install skipped 0 0 0 "--no-install or no .whl/"
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi

# Data, generated in the background while the GPU stages run: a training set and the images pim-infer classifies.
generate() {  # FOLDER TRAIN_PER_CLASS TEST_PER_CLASS
    timeout 300 "$PYTHON" -m modeling_pim.data.synthetic "$1" --image_size "$IMAGE_SIZE" --num_classes 8 \
        --train_per_class "$2" --validation_per_class 0 --test_per_class "$3" >"$1.log" 2>&1
}
generate "$WORK/train_data" "$TRAIN_PER_CLASS" 0 &
TRAIN_DATA_PID=$!
generate "$WORK/infer_data" 0 "$INFER_PER_CLASS" &
INFER_DATA_PID=$!

# 1. CUDA tests.
stage pytest 180 "$PYTHON" -m pytest -m gpu tests/test_gpu.py -p no:cacheprovider -q -rA --junitxml="$WORK/pytest.xml"

# 2. speed and memory: eager and channels-last (compile last, with the time left).
stage speed 200 "$PYTHON" benchmarks/gpu/speed.py "${SPEED_ARGS[@]}" --output "$WORK/speed.json"

# 3. a real run of train_pim.py: the CUB Swin-L recipe on the synthetic set, random-init backbone, no download.
wait "$TRAIN_DATA_PID"
code=$?
[ "$code" = 0 ] || echo "[data] generating the training set failed (exit $code): $(tail -n 5 "$WORK/train_data.log")"
cat "$WORK/train_data.log" >>"$LOG"
stage train 240 "$PYTHON" benchmarks/gpu/train_timed.py "$WORK/train_timing.json" \
    configuration/cub200_swin_large_384.yaml \
    --dataset folders --train_dir "$WORK/train_data/train" --validation_split_percentage 0 \
    --backbone_pretrained false --max_steps "$TRAIN_STEPS" --warmup_steps 20 \
    --do_eval false --eval_strategy no --save_strategy no --load_best_model_at_end false \
    --report_to none --logging_steps "$LOGGING_STEPS" --logging_first_step true --disable_tqdm true \
    --output_dir "$WORK/train_output" "${TRAIN_ARGS[@]}"

# 4. pim-infer throughput with the model just trained (a random one if training failed).
wait "$INFER_DATA_PID"
cat "$WORK/infer_data.log" >>"$LOG"
stage infer 120 "$PYTHON" benchmarks/gpu/infer_throughput.py "$WORK/train_output" "$WORK/infer_data/test" \
    "$WORK/infer.json" "${INFER_ARGS[@]}"

# 5. torch.compile, with the time left (full mode only).
if [ ${#COMPILE_ARGS[@]} -gt 0 ]; then
    stage compile 600 "$PYTHON" benchmarks/gpu/speed.py "${COMPILE_ARGS[@]}" --output "$WORK/speed_compile.json"
else
    record compile skipped 0 0 0 "full mode only"
fi

echo
timeout 60 "$PYTHON" benchmarks/gpu/summarize.py "$WORK" "$OUT"
code=$?
echo
echo "Total $(($(date +%s) - START)) s. Files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
rm -rf "$WORK"
exit "$code"
