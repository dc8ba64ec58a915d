#!/usr/bin/env bash
# Set up everything from nothing but Python 3.10+ and run the program or the tests.
#   bash scripts/bootstrap.sh demo   # napari with the plugin docked and the bundled sample
#   bash scripts/bootstrap.sh test   # the whole test suite
# Environment: PYTHON (default python3), VENV (default .venv), TORCH_SPEC (default torch==2.13.0,
# the CPU build; on a GPU machine set TORCH_SPEC to the CUDA build you want, e.g. "torch").
set -euo pipefail
cd "$(dirname "$0")/.."

MODE="${1:-}"
shift || true
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
# Qt 6's xcb platform plugin links these; Xvfb gives napari a screen on headless machines.
QT_PACKAGES=(libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxkbcommon-x11-0 libgl1 libegl1 libfontconfig1)
TEST_PACKAGES=(xvfb xauth)

usage() { echo "usage: bash scripts/bootstrap.sh demo|test [extra arguments]" >&2; exit 2; }
[[ "$MODE" == demo || "$MODE" == test ]] || usage

install_debian_packages() {
  command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 || return 0
  local missing=()
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  local sudo=""
  [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
  echo "installing system packages: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_python_packages() {
  [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$TORCH_SPEC" -e ".[test]"
}

# The headless tests run in one process. Each GUI test runs in a process of its own, so that one
# test's Qt state cannot end another's process (PySide6 6.12.0, now excluded in pyproject.toml,
# dropped a reference to None on every processEvents() call and aborted long GUI runs).
# Training results depend on the CPU's vector kernels, and CI gets AVX2 and AVX-512 machines by
# turns: on an AVX-512 machine the float_path tests run a second time on the AVX2 kernels, torch's
# own (ATEN_CPU_CAPABILITY) and oneDNN's convolutions (ONEDNN_MAX_CPU_ISA), so both paths are checked.
run_float_path_tests_on_avx2_kernels() {
  [[ "$("$VENV/bin/python" -c 'import torch; print(torch.backends.cpu.get_cpu_capability())')" == AVX512 ]] || return 0
  echo "running the float_path tests again on the AVX2 kernels" >&2
  ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    -m float_path --ignore=tests/ui
}

run_default_suite() {
  local failed=0 test_id
  "$VENV/bin/python" -m pytest -q --ignore=tests/ui || failed=1
  run_float_path_tests_on_avx2_kernels || failed=1
  while read -r test_id; do
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$test_id" || { echo "FAILED: $test_id" >&2; failed=1; }
  done < <("$VENV/bin/python" -m pytest --collect-only -q tests/ui | grep '::')
  return $failed
}

if [[ "$MODE" == test ]]; then
  install_debian_packages "${QT_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
  install_python_packages
  if [[ $# -gt 0 ]]; then exec "$VENV/bin/python" -m pytest "$@"; fi
  run_default_suite
  exit $?
fi

install_debian_packages "${QT_PACKAGES[@]}"
install_python_packages
if [[ -z "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]]; then
  install_debian_packages "${TEST_PACKAGES[@]}"
  echo "no display found: running on a virtual screen and saving a screenshot to demo.png" >&2
  exec xvfb-run -a -s "-screen 0 1600x1000x24" "$VENV/bin/napari-semiseg" demo --screenshot demo.png "$@"
fi
exec "$VENV/bin/napari-semiseg" demo "$@"
