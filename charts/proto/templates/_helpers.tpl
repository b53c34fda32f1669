{{/* Names, labels and the few derived values every template shares. */}}

{{/* The chart's name, or nameOverride. */}}
{{- define "proto.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name, used for every object: fullnameOverride, else the release name when it
already holds the chart's name, else "<release>-<chart>". Kubernetes names stop at 63 characters.
*/}}
{{- define "proto.fullname" -}}
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

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "proto.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels every object carries. */}}
{{- define "proto.labels" -}}
helm.sh/chart: {{ include "proto.chart" . }}
{{ include "proto.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: proto
{{- end }}

{{/* The labels that select the controller's pods; never changed after an install. */}}
{{- define "proto.selectorLabels" -}}
app.kubernetes.io/name: {{ include "proto.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/* The ServiceAccount the controller runs as. */}}
{{- define "proto.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "proto.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "proto.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
"true" when the pod serves the HTTP API, metrics and probes, else "": api.enabled when set,
else whether the command serves them (`proto run` does; `proto controller` serves no HTTP).
*/}}
{{- define "proto.apiEnabled" -}}
{{- if kindIs "invalid" .Values.api.enabled }}
{{- if eq .Values.source.kind "git" }}true{{ end }}
{{- else if .Values.api.enabled }}true
{{- end }}
{{- end }}

{{/* The PersistentVolumeClaim holding the state directory. */}}
{{- define "proto.claimName" -}}
{{- default (printf "%s-state" (include "proto.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{/* The namespaces the controller watches, as a JSON list: the release's own by default. */}}
{{- define "proto.watchedNamespaces" -}}
{{- toJson (default (list .Release.Namespace) .Values.watchNamespaces) }}
{{- end }}

{{/*
The Role rules of the controller in a namespace it watches: exactly the calls it makes there
(the five kinds, their status, Goal finalizers, Events of its resources, and the leader
election's Lease, which lives in the watched namespace), nothing more.
*/}}
{{- define "proto.rules" -}}
- apiGroups: ["proto.dev"]
  resources: ["companies", "products", "computers", "agents", "goals"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["proto.dev"]
  resources: ["companies/status", "products/status", "computers/status", "agents/status", "goals/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["proto.dev"]
  resources: ["goals/finalizers"]
  verbs: ["update"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "list", "watch", "create", "update", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
