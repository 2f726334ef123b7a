#!/usr/bin/env bash
# The README's main job, from a fresh clone: set up .venv, train both stages of the paper's recipe (lite preset)
# on the embedded phantom dataset (generated once into cache/), then segment the phantom test scans.
# Everything is written under runs/default/ (the shipped models/model.pt is not touched); the validation Dice of
# both stages is printed at the end. Extra arguments are passed to every `monai.bundle run` as overrides, e.g.
#   bash scripts/run_default.sh --device cuda
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
python="$root/.venv/bin/python"
# One OpenMP thread unless the caller says otherwise: the lite network's small convolutions gain little from a
# second thread, and when the two cores are shared with other work, two spinning OpenMP threads run 10-25x slower
# (measured on the 2-core development machine). Export OMP_NUM_THREADS=2 on an idle machine.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
out="runs/default"
mkdir -p "$out"
common=(--meta_file configs/metadata.json --logging_file configs/logging.conf --runs_dir "$out" --ckpt_dir "$out/models")

# the console shows a filtered log: keep the progress lines (bundle.workflows.ProgressHandler: iterations, loss, ETA)
progress='workflows\.progress'

best_dice() {  # the last "best value" the validation reported in a log
    grep -o "val_mean_dice best value: [0-9.]*" "$1" | tail -n 1 | awk '{printf "%.4f", $4}'
}

echo "== stage 1: 2D U-Net on random axial slices (log: $out/stage1.log)"
"$python" -m monai.bundle run training --config_file "['configs/train.json','configs/train_stage1.json']" \
    "${common[@]}" "$@" 2>&1 | tee "$out/stage1.log" \
    | { grep --line-buffered -E "val_mean_dice|phantom|$progress|Error" || true; }
echo "== stage 2: U-Net-in-ConvLSTM on whole volumes (log: $out/stage2.log)"
"$python" -m monai.bundle run training --config_file configs/train.json \
    "${common[@]}" "$@" 2>&1 | tee "$out/stage2.log" \
    | { grep --line-buffered -E "val_mean_dice|U-Net|$progress|Error" || true; }
echo "== inference on the phantom test scans (log: $out/inference.log)"
"$python" -m monai.bundle run inference --config_file configs/inference.json --meta_file configs/metadata.json \
    --logging_file configs/logging.conf --ckpt_dir "$out/models" --output_dir "$out/masks" "$@" \
    2>&1 | tee "$out/inference.log" | { grep --line-buffered -E "wrote|$progress|Error" || true; }

echo "stage 1 best validation Dice (2D U-Net, slice by slice): $(best_dice "$out/stage1.log")"
echo "stage 2 best validation Dice (U-Net-in-ConvLSTM):      $(best_dice "$out/stage2.log")"
echo "masks: $(ls "$out/masks" | wc -l) files in $out/masks; weights: $out/models/model.pt"
