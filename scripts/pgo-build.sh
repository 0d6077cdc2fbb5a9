#!/usr/bin/env bash
# Builds the release binary with profile-guided optimisation (PGO), as the Dockerfile does: an instrumented build
# reads the real training logs shipped in examples/logs (each file, then all of them together, about 20 MB),
# llvm-profdata merges what it counted, and the final build optimises by those counts. Both builds compile trialtail
# at opt-level 3 instead of the release profile's "s": the counts tell the hot line path (inlined and laid out
# for speed) from everything training never ran (counted zero: cold, inlined little and optimised for size with
# LLVM's profile-guided size optimisations, `-pgso-lwss-only=false`, llvm/lib/Transforms/Utils/SizeOpts.cpp).
# For x86_64-unknown-linux-gnu, linked by rustc's own LLD, identical functions are folded (`--icf=all`; Rust does
# not promise distinct addresses for distinct functions). On the generated logs of `cargo bench --bench
# throughput` the line path reads 20-25 % faster than a plain release build, and the static binary stays under
# the image's 10 MiB (docs/performance.md).
#
#   scripts/pgo-build.sh [cargo build arguments…]      e.g. --target x86_64-unknown-linux-gnu
#
# RUSTFLAGS is kept (the profile flags are added to it). LLVM_PROFDATA names an llvm-profdata of rustc's LLVM
# major version; without it the rustup component (`rustup component add llvm-tools`), then llvm-profdata-N and
# /usr/lib/llvm-N/bin/llvm-profdata (Debian's llvm-N package) are tried. The instrumented build goes to
# $CARGO_TARGET_DIR/pgo-instrumented, the final one where a plain `cargo build` puts it. The LLVM options are
# those of rustc 1.95's LLVM 22 (the Dockerfile's toolchain).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
llvm=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
host=$(rustc -vV | sed -n 's/^host: //p')
profdata=${LLVM_PROFDATA:-}
if [ -z "$profdata" ]; then
  for candidate in "$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata" "llvm-profdata-$llvm" \
    "/usr/lib/llvm-$llvm/bin/llvm-profdata"; do
    if command -v "$candidate" >/dev/null 2>&1; then
      profdata=$candidate
      break
    fi
  done
fi
if [ -z "$profdata" ]; then
  echo "pgo-build: no llvm-profdata for LLVM $llvm: rustup component add llvm-tools, or set LLVM_PROFDATA" >&2
  exit 1
fi
target_dir=${CARGO_TARGET_DIR:-$root/target}
# The target being built: --target's, else the host.
target=$host
prev=
for arg in "$@"; do
  case $arg in
    --target=*) target=${arg#--target=} ;;
  esac
  [ "$prev" = --target ] && target=$arg
  prev=$arg
done
fold=
[ "$target" = x86_64-unknown-linux-gnu ] && fold="-Clink-arg=-Wl,--icf=all"
# trialtail at opt-level 3 in both builds (the instrumented one must compile the code the profile is used on).
export CARGO_PROFILE_RELEASE_OPT_LEVEL=3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "pgo-build: instrumented build" >&2
# Cargo names the binary it built in its JSON messages (the path depends on --target).
instrumented=$(RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$work/raw" CARGO_TARGET_DIR="$target_dir/pgo-instrumented" \
  cargo build --release --locked --bin trialtail --message-format=json "$@" |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[ -x "$instrumented" ] || { echo "pgo-build: the instrumented build named no binary" >&2; exit 1; }

echo "pgo-build: training on examples/logs" >&2
logs=(examples/logs/*.log examples/logs/frameworks/*.log)
for log in "${logs[@]}"; do
  "$instrumented" run "$log" >/dev/null 2>&1 || true
done
all=$work/all.log
for _ in $(seq 120); do cat "${logs[@]}"; done >"$all"
"$instrumented" run "$all" >/dev/null 2>&1 || true
"$profdata" merge -o "$work/merged.profdata" "$work/raw"

echo "pgo-build: optimised build" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$work/merged.profdata -Cllvm-args=-pgo-warn-missing-function=false \
-Cllvm-args=-pgso-lwss-only=false $fold" \
  cargo build --release --locked --bin trialtail "$@"
