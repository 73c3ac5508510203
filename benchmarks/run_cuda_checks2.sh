#!/usr/bin/env bash
# Second CUDA session script: the global oracle's batch size on CUDA (anytime bound vs throughput),
# with the adaptive pool of _OpenSet, and where CUDA time goes (torch.profiler).
set -u
out="${OUT:-benchmarks/results/cuda}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
S="${CERT_S:-45}"
ncpu="$(nproc)"
for b in 2048 8192 32768; do
  timeout $(( S + 60 )) python3 benchmarks/bench_global_oracle.py --part certify --device "${DEV:-cuda}" --batch $b \
      --long20 "$S" --cpu20 0 --threads 1 --v3-20 0 --v2-20 0 --old20 0 \
      --certify-out "global_oracle_certify_cuda_b$b" 2>&1 | grep "certify N=20" | tee -a "$out/batch_sweep.log"
  cp "benchmarks/results/global_oracle_certify_cuda_b$b.json" "$out/" 2>/dev/null
done
timeout 120 python3 benchmarks/diag_global_oracle_profile.py --instance certify --device "${DEV:-cuda}" --nodes 40000 \
    --threads 1 --top 30 > "$out/profile_certify.log" 2>&1
cp benchmarks/results/global_oracle_profile_certify_*.json "$out/" 2>/dev/null
timeout 120 python3 benchmarks/diag_global_oracle_profile.py --instance mnist600 --device "${DEV:-cuda}" --nodes 1200 \
    --threads 1 --top 30 > "$out/profile_mnist600.log" 2>&1
cp benchmarks/results/global_oracle_profile_mnist600_*.json "$out/" 2>/dev/null
timeout $(( S + 60 )) python3 benchmarks/bench_global_oracle.py --part certify --device cpu \
    --long20 "$S" --cpu20 0 --threads "$ncpu" --v3-20 0 --v2-20 0 --old20 0 \
    --certify-out global_oracle_certify_cpu16 2>&1 | grep "certify N=20" | tee -a "$out/batch_sweep.log"
cp benchmarks/results/global_oracle_certify_cpu16.json "$out/" 2>/dev/null
head -12 "$out/profile_certify.log" "$out/profile_mnist600.log"
ls "$out"
