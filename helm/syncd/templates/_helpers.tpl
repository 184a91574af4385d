{{/* Names and labels shared by every template. */}}
{{- define "syncd.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "syncd.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "syncd.labels" -}}
{{ include "syncd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "syncd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "syncd.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The syncd config: the user's, with the kubernetes target and the daemon filled in. */}}
{{- define "syncd.config" -}}
{{- $target := dict "type" "kubernetes" "namespace" .Release.Namespace -}}
{{- if .Values.namespaces }}{{ $_ := set $target "namespaces" .Values.namespaces }}{{ end -}}
{{- $_ := set $target "leader_election" (dict "enabled" (gt (int .Values.replicaCount) 1) "namespace" .Release.Namespace) -}}
{{- $config := deepCopy .Values.config -}}
{{- $_ := set $config "target" (mergeOverwrite $target (default (dict) $config.target)) -}}
{{- $daemon := dict "listen" (printf "0.0.0.0:%d" (int .Values.metrics.port)) -}}
{{- $_ := set $config "daemon" (mergeOverwrite $daemon (default (dict) $config.daemon)) -}}
{{- toYaml $config -}}
{{- end -}}
