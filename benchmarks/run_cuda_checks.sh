#!/usr/bin/env bash
# The CUDA checks of one lent GPU session, as one script (see README "GPU").  Run from the repository
# root on a machine with CUDA; writes logs, JSON and PNG to ${OUT:-benchmarks/results/cuda}.
#   stage 1: every test that has a CUDA variant (the `device` fixture's cuda ids, the `gpu` marker)
#   stage 2: global oracle on the demo-settings N=20 8x8 instance, CUDA torch path against the
#            numba CPU path on the same machine (all its cores), same budget
#   stage 3: global oracle on 600 real MNIST digits 28x28 (n = 470,400 rows) on CUDA
# Budgets (seconds) come from the environment: CERT_S (default 120), MNIST_S (default 90).
set -u
out="${OUT:-benchmarks/results/cuda}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" 2>&1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" \
    | tee -a "$out/gpu.txt"
ncpu="$(nproc)"
xd=""; python3 -c "import xdist" 2>/dev/null && xd="-n 8"
timeout 150 python3 -m pytest -q -p no:cacheprovider $xd -k "cuda or gpu" tests 2>&1 | tail -25 > "$out/pytest_cuda.log"
tail -3 "$out/pytest_cuda.log"
timeout $(( 2 * ${CERT_S:-120} + 90 )) python3 benchmarks/bench_global_oracle.py --part certify --device "${DEV:-cuda}" \
    --long20 "${CERT_S:-120}" --cpu20 "${CERT_S:-120}" --threads "$ncpu" --v3-20 0 --v2-20 0 --old20 0 \
    --certify-out global_oracle_certify_cuda > "$out/certify_cuda.log" 2>&1
tail -4 "$out/certify_cuda.log"
cp benchmarks/results/global_oracle_certify_cuda.json benchmarks/results/global_oracle_certify_cuda.png "$out/" 2>/dev/null
timeout $(( ${MNIST_S:-90} + 60 )) python3 benchmarks/bench_global_oracle.py --part mnist --device "${DEV:-cuda}" \
    --mnist-sizes 600 --mnist-budgets "${MNIST_S:-90}" --threads "$ncpu" --mnist-out global_oracle_mnist_cuda \
    > "$out/mnist_cuda.log" 2>&1
tail -3 "$out/mnist_cuda.log"
cp benchmarks/results/global_oracle_mnist_cuda.json benchmarks/results/global_oracle_mnist_cuda.png "$out/" 2>/dev/null
ls -la "$out"
