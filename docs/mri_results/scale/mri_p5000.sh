#!/bin/bash
# CS-MRI at n = 1.28 million with the paper's P = 5,000 sampled patterns (issue 14); $1 = R, $2 = out dir
R=$1; OUT=$2
OMP_NUM_THREADS=1 convexdual -v experiment mri --simulate --out "$OUT" --accelerations "$R" --mask poisson --calib 16 \
  --maps jsense --crop 80 --train-crop 80 --train-slices 100 --test-fraction 0.2 --sim-shape 80 --sim-coils 15 \
  --sim-slices 10 --train-volumes 10 --test-volumes 2 --width 128 --epochs 20 --lr 0.001 --batch-slices 1 \
  --patterns 5000 --no-primal-patterns --beta-frac 0.1 --solver auto \
  --solver-options '{"init_groups": 32, "groups_per_round": 32, "init_rows": 256, "rows_per_round": 256, "drop_after": 0, "entering": "first"}' \
  --dual-time-limit 7200 --eval-every 5 --threads 1 --seed 0 --device cpu
