{{/*
Names and labels shared by every template of the chart (and by templates/clusterrole.yaml).
*/}}

{{/* The chart's name, overridable with nameOverride. */}}
{{- define "jetflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of the release's objects: fullnameOverride, else "<release>" when the release name
already contains the chart name, else "<release>-<chart>". Truncated to 63 characters because
some Kubernetes name fields are limited to that (DNS-1123 labels).
*/}}
{{- define "jetflow.fullname" -}}
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
{{- define "jetflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "jetflow.labels" -}}
helm.sh/chart: {{ include "jetflow.chart" . }}
{{ include "jetflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: jetflow
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the operator's pods; never change them in an upgrade (immutable selector). */}}
{{- define "jetflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jetflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's ServiceAccount: the one created by the chart, or an existing one. */}}
{{- define "jetflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "jetflow.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator's image reference: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "jetflow.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The worker image the operator puts into worker Deployments unless a Pipeline names one. */}}
{{- define "jetflow.workerImage" -}}
{{- printf "%s:%s" .Values.worker.image.repository (.Values.worker.image.tag | default .Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
