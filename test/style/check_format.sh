#!/usr/bin/env bash
# Fails when a C++ file of the repo is not clang-format-14 clean (.clang-format at the top); the
# output names each file and line (clang-format's own diagnostics). The files are what git
# tracks, or, without .git (a source tarball), every *.cpp/*.hpp/*.h/*.cc outside build*/.
# Exit 77 (skipped) when clang-format-14 is missing: install/deps.sh installs it.
# Fix: clang-format-14 -i <files>.
set -euo pipefail
cd "$(dirname "$0")/../.."
fmt=${CLANG_FORMAT:-clang-format-14}
if ! command -v "$fmt" >/dev/null; then
    echo "check_format.sh: $fmt not found (install/deps.sh installs it)" >&2
    exit 77
fi
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -t files < <(git ls-files -- '*.cpp' '*.hpp' '*.h' '*.cc')
else
    mapfile -t files < <(find . -path './build*' -prune -o -type f \
        \( -name '*.cpp' -o -name '*.hpp' -o -name '*.h' -o -name '*.cc' \) -print | sort)
fi
if [[ ${#files[@]} -eq 0 ]]; then
    echo "check_format.sh: no C++ files found" >&2
    exit 1
fi
rc=0
"$fmt" --dry-run --Werror "${files[@]}" || rc=$?
if [[ $rc -ne 0 ]]; then
    echo "check_format.sh: not clang-format clean (above); fix with: $fmt -i <file>" >&2
    exit 1
fi
echo "check_format.sh: ${#files[@]} files clang-format clean"
