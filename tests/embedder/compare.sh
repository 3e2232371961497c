#!/usr/bin/env bash
# Runs the 256 MiB get built in our workspace (vendored quinn-proto, our
# profile) and built here as an embedder would (stock quinn-proto),
# alternately, and prints each build's median over all runs and their ratio.
# Usage: tests/embedder/compare.sh [MiB] [runs per sitting] [sittings]
set -euo pipefail
cd "$(dirname "$0")/../.."
mib=${1:-256}; runs=${2:-5}; sittings=${3:-3}
cargo build --release -q -p blixard-node --example get_256mib
cargo build --release -q --manifest-path tests/embedder/Cargo.toml
rates() { grep -o '= [0-9]* MB/s' | grep -o '[0-9]*'; }
ws=(); em=()
for _ in $(seq "$sittings"); do
    ws+=($(target/release/examples/get_256mib "$mib" "$runs" | rates))
    em+=($(tests/embedder/target/release/get_256mib "$mib" "$runs" | rates))
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
range() { printf '%s\n' "$@" | sort -n | awk 'NR==1{lo=$1} {hi=$1} END {print lo "-" hi}'; }
w=$(median "${ws[@]}"); e=$(median "${em[@]}")
echo "workspace (vendored quinn-proto): median $w MB/s, range $(range "${ws[@]}") over ${#ws[@]} runs"
echo "embedder (stock quinn-proto):     median $e MB/s, range $(range "${em[@]}") over ${#em[@]} runs"
awk -v e="$e" -v w="$w" 'BEGIN {printf "embedder / workspace: %.2f\n", e / w}'
