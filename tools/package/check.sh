#!/usr/bin/env bash
# Packaging check, run by .ci/run:
#  1. `cargo package` gives a .crate file under the registry's 10 MB limit;
#  2. a consumer crate (tools/package/consumer) builds against the unpacked .crate file, not the
#     checkout, and runs the embedded model;
#  3. its binary, and the libero example's, still run after being moved to another folder with
#     the unpacked package deleted: the embedded model is inside the binary.
# The consumer shares this repository's target folder and Cargo.lock, so only spec_vla itself is
# compiled again. The target folder is the one cargo reports, so CARGO_TARGET_DIR (or a
# `build.target-dir` in a cargo config) is honoured.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
target=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
if [ -z "$target" ] || [ ! -d "$(dirname "$target")" ]; then
    echo "error: could not ask cargo for its target folder" >&2
    exit 1
fi
limit=$((10 * 1000 * 1000))

cargo package --no-verify --allow-dirty --quiet
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
crate="$target/package/spec_vla-$version.crate"
size=$(stat -c %s "$crate")
echo "package: $crate is $size bytes (limit $limit)"
if [ "$size" -ge "$limit" ]; then
    echo "error: the package is over the registry's limit" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xzf "$crate" -C "$work"
package="$work/spec_vla-$version"
mkdir -p "$work/consumer/src"
cp tools/package/consumer/src/main.rs "$work/consumer/src/"
sed "s|@PACKAGE@|$package|" tools/package/consumer/Cargo.toml.in > "$work/consumer/Cargo.toml"
cp Cargo.lock "$work/consumer/"
CARGO_TARGET_DIR="$target" cargo build --release --quiet \
    --manifest-path "$work/consumer/Cargo.toml"
cargo build --release --quiet --example libero

# The expected tokens come from the published-layout checkpoint on disk; the moved binaries
# must reproduce them from the bytes they carry.
expected=$("$target/release/spec_vla_consumer" "$root/models/microvla-goal-v3")
mkdir -p "$work/moved/frames"
cp "$target/release/spec_vla_consumer" "$target/release/examples/libero" "$work/moved/"
cp data/libero_goal_v3_heldout/manifest.json data/libero_goal_v3_heldout/0*.png "$work/moved/frames/"
rm -rf "$package" "$work/consumer"
cd "$work/moved"
got=$(./spec_vla_consumer)
echo "consumer, moved: $got"
if [ "$got" != "$expected" ]; then
    echo "error: the moved binary's embedded model gave '$got', the checkpoint '$expected'" >&2
    exit 1
fi
./libero --frames frames --limit 8 --policy strict --quiet | grep SUMMARY
echo "package check passed"
