{{/* Chart name. */}}
{{- define "campusbite-notify.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or the release name when it already contains the chart name. */}}
{{- define "campusbite-notify.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "campusbite-notify.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels common to every object. */}}
{{- define "campusbite-notify.commonLabels" -}}
helm.sh/chart: {{ include "campusbite-notify.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: campusbite
{{- end }}

{{/* Gateway selector labels. */}}
{{- define "campusbite-notify.selectorLabels" -}}
app.kubernetes.io/name: {{ include "campusbite-notify.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "campusbite-notify.labels" -}}
{{ include "campusbite-notify.commonLabels" . }}
{{ include "campusbite-notify.selectorLabels" . }}
{{- end }}

{{/* NATS names and labels. */}}
{{- define "campusbite-notify.nats.fullname" -}}
{{- printf "%s-nats" (include "campusbite-notify.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "campusbite-notify.nats.headless" -}}
{{- printf "%s-nats-headless" (include "campusbite-notify.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "campusbite-notify.nats.selectorLabels" -}}
app.kubernetes.io/name: nats
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: bus
{{- end }}

{{- define "campusbite-notify.nats.labels" -}}
{{ include "campusbite-notify.commonLabels" . }}
{{ include "campusbite-notify.nats.selectorLabels" . }}
{{- end }}

{{- define "campusbite-notify.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "campusbite-notify.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* NOTIFY_NATS_URL */}}
{{- define "campusbite-notify.natsUrl" -}}
{{- if .Values.nats.enabled }}
{{- printf "%s://%s:4222" (ternary "tls" "nats" .Values.nats.tls.enabled) (include "campusbite-notify.nats.fullname" .) }}
{{- else }}
{{- required "nats.url is required when nats.enabled=false" .Values.nats.url }}
{{- end }}
{{- end }}

{{/* NOTIFY_STREAM_REPLICAS: explicit, or 3 with a bundled cluster of 3+ servers, else 1. */}}
{{- define "campusbite-notify.streamReplicas" -}}
{{- $r := int .Values.config.streamReplicas }}
{{- if gt $r 0 }}
{{- if and .Values.nats.enabled (gt $r (int .Values.nats.replicas)) }}
{{- fail (printf "config.streamReplicas (%d) cannot exceed nats.replicas (%d)" $r (int .Values.nats.replicas)) }}
{{- end }}
{{- $r }}
{{- else if and .Values.nats.enabled (ge (int .Values.nats.replicas) 3) }}
{{- 3 }}
{{- else }}
{{- 1 }}
{{- end }}
{{- end }}

{{/* "true" when the chart manages the HS256 secret (given or generated). */}}
{{- define "campusbite-notify.jwtChartSecret" -}}
{{- $j := .Values.jwt }}
{{- if and (not $j.existingSecret) (or $j.secret (not (or $j.publicKey $j.jwksUrl))) }}true{{ end }}
{{- end }}

{{/* Name of the Secret holding NOTIFY_JWT_SECRET, "" when none is used. */}}
{{- define "campusbite-notify.jwtSecretName" -}}
{{- if .Values.jwt.existingSecret }}
{{- if .Values.jwt.existingSecretKey }}{{ .Values.jwt.existingSecret }}{{ end }}
{{- else if include "campusbite-notify.jwtChartSecret" . }}
{{- printf "%s-jwt" (include "campusbite-notify.fullname" .) }}
{{- end }}
{{- end }}

{{- define "campusbite-notify.jwtSecretKey" -}}
{{- if .Values.jwt.existingSecret }}
{{- .Values.jwt.existingSecretKey }}
{{- else }}
{{- print "NOTIFY_JWT_SECRET" }}
{{- end }}
{{- end }}

{{/* "true" when any publisher key is configured (then loadgen's single
secret cannot mint accepted publisher tokens). */}}
{{- define "campusbite-notify.publisherKeys" -}}
{{- $j := .Values.jwt }}
{{- if or $j.publisher.secret $j.publisher.publicKey (and $j.existingSecret (or $j.existingSecretPublisherSecretKey $j.existingSecretPublisherPublicKeyKey)) }}true{{ end }}
{{- end }}

{{/* The gateway's token and NATS credentials as env entries (secretKeyRef only). */}}
{{- define "campusbite-notify.secretEnv" -}}
{{- $j := .Values.jwt }}
{{- $fullname := include "campusbite-notify.fullname" . }}
{{- $jwtSecret := include "campusbite-notify.jwtSecretName" . }}
{{- if $jwtSecret }}
- name: NOTIFY_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $jwtSecret }}
      key: {{ include "campusbite-notify.jwtSecretKey" . }}
{{- end }}
{{- if and $j.existingSecret $j.existingSecretJwksUrlKey }}
- name: NOTIFY_JWT_JWKS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $j.existingSecret }}
      key: {{ $j.existingSecretJwksUrlKey }}
{{- end }}
{{- if and $j.existingSecret $j.existingSecretPublisherSecretKey }}
- name: NOTIFY_PUBLISHER_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $j.existingSecret }}
      key: {{ $j.existingSecretPublisherSecretKey }}
{{- else if $j.publisher.secret }}
- name: NOTIFY_PUBLISHER_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $fullname }}-jwt
      key: NOTIFY_PUBLISHER_JWT_SECRET
{{- end }}
{{- if not .Values.nats.auth.credsSecret }}
- name: NOTIFY_NATS_USER
  value: {{ .Values.nats.auth.gatewayUser | quote }}
- name: NOTIFY_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "campusbite-notify.nats.authSecretName" . }}
      key: gateway-password
{{- end }}
{{- end }}

{{/* NATS credentials Secret: existing or chart-managed. */}}
{{- define "campusbite-notify.nats.authSecretName" -}}
{{- default (printf "%s-nats-auth" (include "campusbite-notify.fullname" .)) .Values.nats.auth.existingSecret }}
{{- end }}

{{/* NATS server TLS Secret: existing or issued by cert-manager. */}}
{{- define "campusbite-notify.nats.tlsSecretName" -}}
{{- default (printf "%s-nats-tls" (include "campusbite-notify.fullname" .)) .Values.nats.tls.existingSecret }}
{{- end }}

{{/* The gateway's client certificate Secret (mutual TLS). */}}
{{- define "campusbite-notify.nats.clientTlsSecretName" -}}
{{- default (printf "%s-nats-client-tls" (include "campusbite-notify.fullname" .)) .Values.nats.tls.clientExistingSecret }}
{{- end }}

{{/* The JetStream stream name the gateway derives from the prefix (NatsSettings::stream_name). */}}
{{- define "campusbite-notify.streamBase" -}}
{{- .Values.config.subjectPrefix | replace "." "_" | upper }}
{{- end }}

{{/* Regex matching the notification stream(s), for alerts. */}}
{{- define "campusbite-notify.streamRegex" -}}
{{- $base := include "campusbite-notify.streamBase" . }}
{{- if gt (int (.Values.config.streamPartitions | default 1)) 1 }}{{ printf "%s_[0-9]+" $base }}{{ else }}{{ $base }}{{ end }}
{{- end }}

{{/* The NATS authorization block: files/nats-auth.conf.tmpl (a copy of
cluster/nats-auth.conf.tmpl) expanded exactly as cluster/render-nats-auth
does; .ci/validate-deploy.sh compares the two outputs. */}}
{{- define "campusbite-notify.nats.authConf" -}}
{{- $prefix := .Values.config.subjectPrefix }}
{{- $n := int (.Values.config.streamPartitions | default 1) }}
{{- $base := include "campusbite-notify.streamBase" . }}
{{- $streams := list $base }}
{{- if gt $n 1 }}
{{- $streams = list }}
{{- range $i := until $n }}{{ $streams = append $streams (printf "%s_%d" $base $i) }}{{ end }}
{{- end }}
{{- range $line := splitList "\n" (.Files.Get "files/nats-auth.conf.tmpl" | trimSuffix "\n") }}
{{- $keep := not (hasPrefix "##" $line) }}
{{- if hasPrefix "@PARTITIONED@" $line }}
{{- $keep = gt $n 1 }}
{{- $line = trimPrefix "@PARTITIONED@" $line }}
{{- end }}
{{- if $keep }}
{{- $line = replace "@PREFIX@" $prefix $line }}
{{- $line = replace "@BASE@" $base $line }}
{{- if contains "@STREAM@" $line }}
{{- range $s := $streams }}
{{ replace "@STREAM@" $s $line }}
{{- end }}
{{- else }}
{{ $line }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* terminationGracePeriodSeconds: preStop sleep + drain + margin. */}}
{{- define "campusbite-notify.terminationGrace" -}}
{{- add (int .Values.preStopSleepSeconds) (int .Values.config.shutdownGraceSeconds) (int .Values.terminationExtraSeconds) }}
{{- end }}

{{/* Cross-field checks the JSON schema cannot express. */}}
{{- define "campusbite-notify.validate" -}}
{{- if and .Values.hpa.enabled (not .Values.keda.enabled) (gt (int .Values.hpa.minReplicas) (int .Values.hpa.maxReplicas)) }}
{{- fail (printf "hpa.minReplicas (%d) must not exceed hpa.maxReplicas (%d)" (int .Values.hpa.minReplicas) (int .Values.hpa.maxReplicas)) }}
{{- end }}
{{- if and .Values.keda.enabled (gt (int .Values.keda.minReplicas) (int .Values.keda.maxReplicas)) }}
{{- fail (printf "keda.minReplicas (%d) must not exceed keda.maxReplicas (%d)" (int .Values.keda.minReplicas) (int .Values.keda.maxReplicas)) }}
{{- end }}
{{- if and .Values.keda.enabled (gt (int .Values.keda.targetConnectionsPerPod) (int .Values.config.maxConnections)) }}
{{- fail "keda.targetConnectionsPerPod must not exceed config.maxConnections" }}
{{- end }}
{{- if and .Values.nats.enabled .Values.nats.url }}
{{- fail "set either nats.enabled=true (bundled NATS) or nats.url (existing cluster), not both" }}
{{- end }}
{{- if and (not .Values.nats.enabled) (not (or .Values.nats.auth.existingSecret .Values.nats.auth.credsSecret)) }}
{{- fail "an external NATS (nats.enabled=false) needs the gateway's credentials: nats.auth.existingSecret (key gateway-password) or nats.auth.credsSecret (key nats.creds)" }}
{{- end }}
{{- if and .Values.nats.enabled .Values.nats.auth.credsSecret }}
{{- fail "nats.auth.credsSecret is for an external NATS; the bundled NATS uses user and password (nats.auth.existingSecret or generated)" }}
{{- end }}
{{- if and .Values.nats.tls.enabled (not .Values.nats.tls.existingSecret) (not .Values.nats.tls.issuerRef.name) }}
{{- fail "nats.tls.enabled needs nats.tls.existingSecret or a cert-manager nats.tls.issuerRef.name" }}
{{- end }}
{{- if and .Values.nats.tls.enabled .Values.nats.tls.mutual (not .Values.nats.tls.clientExistingSecret) (not .Values.nats.tls.issuerRef.name) }}
{{- fail "nats.tls.mutual needs nats.tls.clientExistingSecret or a cert-manager nats.tls.issuerRef.name for the gateway's client certificate" }}
{{- end }}
{{- if and .Values.jwt.existingSecret (not (or .Values.jwt.existingSecretKey .Values.jwt.existingSecretPublicKeyKey .Values.jwt.existingSecretJwksUrlKey .Values.jwt.publicKey .Values.jwt.jwksUrl)) }}
{{- fail "jwt.existingSecret holds no user-token key: set jwt.existingSecretKey, jwt.existingSecretPublicKeyKey or jwt.existingSecretJwksUrlKey" }}
{{- end }}
{{- end }}

{{/* Image reference. */}}
{{- define "campusbite-notify.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The helm test's load generator image (the Dockerfile's `loadgen` target). */}}
{{- define "campusbite-notify.loadgenImage" -}}
{{- $repository := default (printf "%s-loadgen" .Values.image.repository) .Values.helmTest.image.repository }}
{{- printf "%s:%s" $repository (default (default .Chart.AppVersion .Values.image.tag) .Values.helmTest.image.tag) }}
{{- end }}

{{/* The bundled NATS servers' nats.conf (auth.conf beside it). */}}
{{- define "campusbite-notify.nats.conf" -}}
{{- $nats := include "campusbite-notify.nats.fullname" . }}
{{- $headless := include "campusbite-notify.nats.headless" . }}
{{- $replicas := int .Values.nats.replicas }}
{{- $tls := .Values.nats.tls }}
server_name: $SERVER_NAME
listen: "0.0.0.0:4222"
http: "0.0.0.0:8222"
pid_file: "/var/run/nats/nats.pid"
lame_duck_duration: "30s"
lame_duck_grace_period: "10s"
max_payload: 1MB
# Users and permissions; no anonymous access.
include "auth.conf"
{{- if $tls.enabled }}
# Clients (gateways, producers) connect with TLS{{ if $tls.mutual }} and a client certificate{{ end }}.
tls {
  cert_file: "/etc/nats/tls/tls.crt"
  key_file: "/etc/nats/tls/tls.key"
  ca_file: "/etc/nats/tls/ca.crt"
  verify: {{ $tls.mutual }}
  timeout: 2
}
{{- end }}
jetstream {
  store_dir: "/data/jetstream"
  max_memory_store: {{ .Values.nats.jetstream.maxMemoryStore }}
  max_file_store: {{ .Values.nats.jetstream.maxFileStore }}
}
{{- $partitions := int (.Values.config.streamPartitions | default 1) }}
{{- if gt $partitions 1 }}
{{- $prefix := .Values.config.subjectPrefix }}
# NOTIFY_STREAM_PARTITIONS={{ $partitions }}: each user's subject goes to
# one of {{ $partitions }} streams; the gateway computes the same partition.
mappings {
  "{{ $prefix }}.user.*": "{{ $prefix }}.part.{{ "{{" }}partition({{ $partitions }},1){{ "}}" }}.{{ "{{" }}wildcard(1){{ "}}" }}"
}
{{- end }}
{{- if gt $replicas 1 }}
cluster {
  name: {{ .Values.nats.clusterName | quote }}
  listen: "0.0.0.0:6222"
  {{- if $tls.enabled }}
  # Routes: mutual TLS with the servers' certificate (server and client auth).
  tls {
    cert_file: "/etc/nats/tls/tls.crt"
    key_file: "/etc/nats/tls/tls.key"
    ca_file: "/etc/nats/tls/ca.crt"
    verify: true
    timeout: 2
  }
  {{- end }}
  routes: [
    {{- range $i := until $replicas }}
    "nats://{{ $nats }}-{{ $i }}.{{ $headless }}:6222"
    {{- end }}
  ]
}
{{- end }}
{{- end }}

{{/* "true" when the helm test can run: an HS256 secret the load generator
can sign user and publisher tokens with, no separate publisher key, and
the user id in "sub" (as the load generator mints it). */}}
{{- define "campusbite-notify.helmTestEnabled" -}}
{{- if and .Values.helmTest.enabled (include "campusbite-notify.jwtSecretName" .) (not (include "campusbite-notify.publisherKeys" .)) (eq .Values.jwt.userClaim "sub") }}true{{ end }}
{{- end }}

{{- define "campusbite-notify.helmTestSelectorLabels" -}}
app.kubernetes.io/name: {{ include "campusbite-notify.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: helm-test
{{- end }}
