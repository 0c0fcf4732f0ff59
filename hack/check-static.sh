#!/usr/bin/env bash
# Builds the release binary exactly as the Dockerfile does (static, crt-static) and
# runs `rotor --version` in an empty root, proving it needs nothing from the image.
# (No container engine or registry is reachable here, so the image itself is not built.)
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET_DIR="${ROTOR_CACHE:-$HOME/.cache/rotor}/static"
RUSTFLAGS="-C target-feature=+crt-static" cargo build -q --release --locked \
  --target x86_64-unknown-linux-gnu --target-dir "$TARGET_DIR"
BIN="$TARGET_DIR/x86_64-unknown-linux-gnu/release/rotor"
if ldd "$BIN" 2>&1 | grep -q "=>"; then
  echo "check-static: $BIN links shared libraries:" >&2; ldd "$BIN" >&2; exit 1
fi
ROOT="$(mktemp -d)"; chmod 0755 "$ROOT"; trap 'rm -rf "$ROOT"' EXIT
install -D -m 0755 "$BIN" "$ROOT/usr/local/bin/rotor"
CHROOT="$(command -v chroot)"
if [[ $(id -u) -eq 0 ]]; then run=("$CHROOT" --userspec=65532:65532 "$ROOT"); else run=("$(command -v unshare)" --user --map-root-user "$CHROOT" "$ROOT"); fi
out="$(env -i PATH=/usr/local/bin "${run[@]}" /usr/local/bin/rotor --version)"
want="rotor $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
[[ "$out" == "$want" ]] || { echo "check-static: got '$out', want '$want'" >&2; exit 1; }
files=$(find "$ROOT" -type f | wc -l)
echo "check-static: ok — '$out' in an empty root ($files file, $(du -h "$BIN" | cut -f1) binary)"
