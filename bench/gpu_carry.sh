#!/usr/bin/env bash
# Packs what bench/gpu_proof.py needs on the GPU machine and that it lacks, into .gpu/ (ignored by git):
# the wheels of Dvolver's dependencies missing there (its python3 is 3.12 with PyTorch, numpy, scipy,
# scikit-learn, matplotlib, typer and rich, but no pydantic, SQLAlchemy, pymoo, fvcore or Torch-Pruning;
# Ray's wheel alone would not fit the 64 MiB a call may carry) and the CIFAR-10 subset.
#
#   bash bench/gpu_carry.sh            # here, once; then run the device command it prints
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qxF '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/whl
# The versions Dvolver is tested with here; --no-deps, so every one that the machine lacks is named.
wheels=(pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
        typing-extensions==4.16.0 sqlalchemy==2.1.9 pymoo==0.6.2 moocore==0.3.2 cffi==2.1.1 pycparser==3.12
        platformdirs==4.14.9 autograd==1.9.1 cma==4.5.0 alive-progress==3.3.0 about-time==4.2.1 graphemeu==0.7.2
        deprecated==1.3.1 dill==0.4.1 yacs==0.1.8 termcolor==3.3.0 torch-pruning==1.6.1)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux1_x86_64 \
    -d .gpu/whl "${wheels[@]}"
# fvcore and this iopath publish no wheel: build them (pure Python) from their source distributions.
python3 -m pip wheel -q --no-deps -w .gpu/whl fvcore==0.1.5.post20221221 iopath==0.1.10
cp ../shared/data/cifar10_subset.npz .gpu/
du -sh .gpu
cat <<'EOF'
device run (carry [".gpu"], timeout_s 480):
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 && nvidia-smi -L; python3 bench/gpu_proof.py --data .gpu/cifar10_subset.npz --out $OUT 2>&1 | tee $OUT/gpu_proof.log
EOF
