#!/usr/bin/env bash
# Builds the binaries of the Docker-free test cluster (see recplane/devcluster)
# from the Go module proxy: Kubernetes control plane + kubectl, etcd, kwok,
# helm, MinIO and mc. Each lands in
#   ${RECPLANE_CACHE:-$HOME/.cache/recplane}/bin/<name>-<version>/<name>
# and is skipped when already there, so a warm run takes seconds.
# Writes bin/clusterbins.json (name -> path) for recplane.devcluster.
set -euo pipefail
# One compound command: bash parses it whole, so editing this file mid-build is safe.
{

K8S_VERSION=v1.35.4
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
MC_VERSION=v0.0.0-20250313080218-cf909e1063a9

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODULES="$HERE/clusterbins"
CACHE="${RECPLANE_CACHE:-$HOME/.cache/recplane}"
BIN="$CACHE/bin"

die() { echo "build-cluster-bins: $*" >&2; exit 1; }

if ! command -v go >/dev/null 2>&1; then
  die "Go >= 1.24 is required to build the test cluster (older toolchains cannot read
the wrapper modules; newer ones are fetched automatically when GOTOOLCHAIN=auto):
install it with 'apt-get install golang' or from your distribution, then re-run $0"
fi
go_minor="$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')"
if [[ ! "$go_minor" =~ ^[0-9]+$ ]] || (( go_minor < 24 )); then
  die "Go >= 1.24 is required to build the test cluster, found $(go env GOVERSION):
install a newer Go (apt-get install golang or from your distribution)"
fi

# Builds never touch the checkout: the wrapper module is copied to a scratch dir
# where `go` may freely update go.sum.
export GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0
mkdir -p "$BIN"
SCRATCH="$(mktemp -d "$BIN/.build.XXXXXX")"
trap 'rm -rf "$SCRATCH"' EXIT
BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
built=() cached=()

# Pins live here and in the wrapper go.mod files; refuse to build if they drift.
check_pin() { # module-dir module version
  grep -qE "^\s*(require )?$2 $3\b" "$MODULES/$1/go.mod" ||
    die "hack/clusterbins/$1/go.mod does not require $2 $3 (update it together with $0)"
}

# build COMPONENT VERSION "NAME..." "PKG..." [LDFLAGS]
# Builds all packages in one `go build` so they share compile work.
build() {
  local comp="$1" version="$2" names=($3) pkgs=($4) ldflags="${5:-}" missing=0 n
  for n in "${names[@]}"; do
    [[ -x "$BIN/$n-$version/$n" ]] || missing=1
  done
  if (( ! missing )); then cached+=("$comp $version"); return; fi
  local work="$SCRATCH/$comp" log="$BIN/build-$comp-$version.log"
  cp -r "$MODULES/$comp" "$work"
  mkdir -p "$work/out"
  if ! (cd "$work" && go build -trimpath -ldflags "-s -w $ldflags" -o out/ "${pkgs[@]}") >"$log" 2>&1; then
    echo "build-cluster-bins: building $comp $version failed; last lines of $log:" >&2
    tail -n 25 "$log" >&2
    die "fix the error above (network access to the Go module proxy and Go >= 1.24 are needed), then re-run $0"
  fi
  rm -f "$log"
  for n in "${names[@]}"; do
    mkdir -p "$BIN/$n-$version"
    mv -f "$work/out/$n" "$BIN/$n-$version/$n"
  done
  built+=("$comp $version")
}

# Version stamps, so `kubectl version` reports a real server version.
k8s_ldflags=""
IFS=. read -r k8s_major k8s_minor _ <<<"${K8S_VERSION#v}"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$k8s_major -X $p.gitMinor=$k8s_minor"
  # The module zip has no git metadata: clear the "$Format:%H$" placeholder.
  k8s_ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=$BUILD_DATE -X $p.gitCommit="
done

# MinIO/mc are only published as pseudo-versions; derive their release tags from the timestamp.
release_tag() { # pseudo-version -> RELEASE.YYYY-MM-DDTHH-MM-SSZ
  local ts; ts="$(cut -d- -f2 <<<"$1")"
  echo "RELEASE.${ts:0:4}-${ts:4:2}-${ts:6:2}T${ts:8:2}-${ts:10:2}-${ts:12:2}Z"
}
minio_ldflags() { # pkg pseudo-version
  local tag commit; tag="$(release_tag "$2")"; commit="${2##*-}"
  local t="${tag#RELEASE.}"
  echo "-X $1.Version=${t:0:13}:${t:14:2}:${t:17:2}Z -X $1.ReleaseTag=$tag -X $1.CommitID=$commit -X $1.ShortCommitID=$commit"
}

check_pin kubernetes k8s.io/kubernetes "$K8S_VERSION"
check_pin etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
check_pin kwok sigs.k8s.io/kwok "$KWOK_VERSION"
check_pin helm helm.sh/helm/v3 "$HELM_VERSION"
check_pin minio github.com/minio/minio "$MINIO_VERSION"
check_pin mc github.com/minio/mc "$MC_VERSION"

build kubernetes "$K8S_VERSION" "kube-apiserver kube-controller-manager kube-scheduler kubectl" \
  "k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl" \
  "$k8s_ldflags"
build etcd "$ETCD_VERSION" etcd . "-X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION"
build kwok "$KWOK_VERSION" kwok sigs.k8s.io/kwok/cmd/kwok "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"
build helm "$HELM_VERSION" helm helm.sh/helm/v3/cmd/helm \
  "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
build minio "$MINIO_VERSION" minio github.com/minio/minio "$(minio_ldflags github.com/minio/minio/cmd "$MINIO_VERSION")"
build mc "$MC_VERSION" mc github.com/minio/mc "$(minio_ldflags github.com/minio/mc/cmd "$MC_VERSION")"

# The kwok binary ships no stages of its own (kwokctl normally supplies them):
# take the upstream "fast" node/pod stages so nodes become Ready, pods Running
# and Job pods Succeeded.
stages="$BIN/kwok-$KWOK_VERSION/stages.yaml"
if [[ ! -s "$stages" ]]; then
  kwok_dir="$(cd "$MODULES/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
  for f in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
           pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
    echo "---"; cat "$kwok_dir/kustomize/stage/$f.yaml"
  done >"$stages.tmp"
  mv "$stages.tmp" "$stages"
fi

path() { echo "$BIN/$1-$2/$1"; }
cat >"$BIN/clusterbins.json.tmp" <<EOF
{
  "kube-apiserver": "$(path kube-apiserver "$K8S_VERSION")",
  "kube-controller-manager": "$(path kube-controller-manager "$K8S_VERSION")",
  "kube-scheduler": "$(path kube-scheduler "$K8S_VERSION")",
  "kubectl": "$(path kubectl "$K8S_VERSION")",
  "etcd": "$(path etcd "$ETCD_VERSION")",
  "kwok": "$(path kwok "$KWOK_VERSION")",
  "kwok-stages": "$stages",
  "helm": "$(path helm "$HELM_VERSION")",
  "minio": "$(path minio "$MINIO_VERSION")",
  "mc": "$(path mc "$MC_VERSION")"
}
EOF
mv "$BIN/clusterbins.json.tmp" "$BIN/clusterbins.json"

echo "cluster binaries in $BIN:"
(( ${#built[@]} )) && printf '  built   %s\n' "${built[@]}"
(( ${#cached[@]} )) && printf '  cached  %s\n' "${cached[@]}"
exit 0
}
