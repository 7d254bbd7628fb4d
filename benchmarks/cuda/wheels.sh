#!/usr/bin/env bash
# Run HERE (a machine with PyPI): download, into .whl/ at the repository root, the wheels the
# GPU machine's image lacks (Python 3.12 there): sgdlab's own needs and the benchmark peers,
# at the versions this project is tested with. .whl/ is git-ignored; pass it in `carry`.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 \
  typing-extensions==4.15.0 mlxtend==0.25.0 mnist1d==0.0.2.post1 \
  pyhessian==0.1 backpack-for-pytorch==1.7.1 unfoldNd==0.2.3 hessian-eigenthings==1.0.0a5 \
  curvlinops-for-pytorch==3.0.1 einconv==0.1.0
du -sh .whl
