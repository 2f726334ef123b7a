#!/usr/bin/env bash
# The README's main job, from a fresh clone: set up .venv, train both stages on the embedded phantom dataset
# (generated once into cache/) with the quick preset, then segment the phantom test scans through the segmenter
# (scripts/segment.py's path) with the trained and the shipped weights and print their test scores side by side.
# The quick preset (configs/presets/quick.json) is the small classic phantom set (12/3/8 scans, 128x128x32) and the
# short schedule: train.json's defaults are the robustness recipe (200 varied phantoms), far too big for this job.
# Everything is written under runs/default/ (the shipped models/model.pt is not touched). Extra arguments are passed
# to both `monai.bundle run` trainings as overrides, e.g.
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
# MONAI's LoadImage builds its GPU DICOM decoder on every machine, and without nvImageCodec that raises a UserWarning
# (its log line is silenced in configs/logging.conf); the bundle reads DICOM with pydicom itself.
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore:NvImgCodecPydicomReader:UserWarning}"
out="runs/default"
preset="configs/presets/quick.json"
mkdir -p "$out"
common=(--meta_file configs/metadata.json --logging_file configs/logging.conf --runs_dir "$out" --ckpt_dir "$out/models")

# the console shows a filtered log: keep the progress lines (bundle.workflows.ProgressHandler: iterations, loss, ETA)
progress='workflows\.progress'

best_dice() {  # the last "best value" the validation reported in a log
    grep -o "val_mean_dice best value: [0-9.]*" "$1" | tail -n 1 | awk '{printf "%.4f", $4}'
}

echo "== stage 1: 2D U-Net on random axial slices (log: $out/stage1.log)"
"$python" -m monai.bundle run training --config_file "['configs/train.json','configs/train_stage1.json','$preset']" \
    "${common[@]}" "$@" 2>&1 | tee "$out/stage1.log" \
    | { grep --line-buffered -E "val_mean_dice|phantom|$progress|Error" || true; }
echo "== stage 2: U-Net-in-ConvLSTM on whole volumes (log: $out/stage2.log)"
"$python" -m monai.bundle run training --config_file "['configs/train.json','$preset']" \
    "${common[@]}" "$@" 2>&1 | tee "$out/stage2.log" \
    | { grep --line-buffered -E "val_mean_dice|U-Net|$progress|Error" || true; }

echo "stage 1 best validation Dice (2D U-Net, slice by slice): $(best_dice "$out/stage1.log")"
echo "stage 2 best validation Dice (U-Net-in-ConvLSTM):      $(best_dice "$out/stage2.log")"
echo "weights: $out/models/model.pt"
echo "== test scans through the segmenter: trained vs shipped weights (log: $out/report.log)"
"$python" scripts/main_job_report.py --run_dir "$out" --preset quick 2>&1 | tee "$out/report.log"
