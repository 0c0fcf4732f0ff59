{{- define "rotor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rotor.fullname" -}}
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

{{/* On every object: the chart's labels and commonLabels. */}}
{{- define "rotor.labels" -}}
{{ include "rotor.selectorLabels" . }}
{{ include "rotor.chartLabels" . }}
{{- end }}

{{- define "rotor.chartLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "rotor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rotor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rotor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rotor.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* What rotor needs wherever it watches SecretRotations. */}}
{{- define "rotor.watchRules" -}}
- apiGroups: ["rotor.dev"]
  resources: ["secretrotations"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["rotor.dev"]
  resources: ["secretrotations/status"]
  verbs: ["patch"]
- apiGroups: ["rotor.dev"]
  resources: ["secretrotations/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["secrets"]
  # delete: only an escrow's predecessor (rotor-vault-<name>), once moved.
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  # create only: rotor never updates an Event (each is its own, no series).
  verbs: ["create"]
# spec.consumers: find the workloads that read a Secret, restart them (one pod-template
# annotation, server-side apply) and follow their rollout.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "list", "patch"]
- apiGroups: ["argoproj.io"]
  resources: ["rollouts"]
  verbs: ["get", "patch"]
{{- end }}

{{/* The `helm test` pod: not the operator's labels, so no Service, PodDisruptionBudget
or NetworkPolicy of the operator selects it (the NetworkPolicy lets it in). */}}
{{- define "rotor.testSelectorLabels" -}}
app.kubernetes.io/name: {{ include "rotor.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
