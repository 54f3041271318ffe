#!/usr/bin/env bash
# The offline Kubernetes manifest validator: kubeconform built once with the Go toolchain from the Go module
# proxy and cached; the Kubernetes JSON schemas come from the kubernetes-validate wheel (PyPI, a dev
# dependency) and KEDA's ScaledObject schema from the KEDA Go module's CRD, so nothing is fetched from GitHub.
# usage: kubeconform.sh fetch | path | validate FILE...
COMPONENT=kubeconform
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

KUBECONFORM_VERSION=${SWITCHYARD_KUBECONFORM_VERSION:-0.8.0}
BIN_DIR=$SWITCHYARD_CACHE/kubeconform-$KUBECONFORM_VERSION
BIN=$BIN_DIR/kubeconform

fetch() {
  if [ -x "$BIN" ]; then return 0; fi
  command -v go >/dev/null || die "the Go toolchain is needed to build kubeconform; install Go 1.24 or newer"
  log "building kubeconform $KUBECONFORM_VERSION with $(go version | cut -d' ' -f3) (first time only)"
  mkdir -p "$BIN_DIR"
  if ! GOBIN=$BIN_DIR GOFLAGS=-buildvcs=false CGO_ENABLED=0 \
      go install "github.com/yannh/kubeconform/cmd/kubeconform@v$KUBECONFORM_VERSION" >"$BIN_DIR/build.log" 2>&1; then
    tail -20 "$BIN_DIR/build.log" >&2
    die "building kubeconform failed; full log in $BIN_DIR/build.log"
  fi
  log "built: $BIN"
}

case "${1:-}" in
  fetch) fetch ;;
  path) fetch; echo "$BIN" ;;
  validate) shift; fetch; exec "$PYTHON" -m services.export.validate kubernetes --kubeconform "$BIN" "$@" ;;
  *) echo "usage: $0 fetch|path|validate FILE..." >&2; exit 2 ;;
esac
