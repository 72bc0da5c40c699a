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
{{- printf "nats://%s:4222" (include "campusbite-notify.nats.fullname" .) }}
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

{{/* Name of the Secret holding NOTIFY_JWT_SECRET, "" when a public key is used without one. */}}
{{- define "campusbite-notify.jwtSecretName" -}}
{{- if .Values.jwt.existingSecret }}
{{- .Values.jwt.existingSecret }}
{{- else if or .Values.jwt.secret (not .Values.jwt.publicKey) }}
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
{{- end }}

{{/* Image reference. */}}
{{- define "campusbite-notify.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
