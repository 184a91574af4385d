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

{{/*
The installation's name: the release name as syncd's instance names are written (lowercase
letters, digits and '-', at most 40), so two releases never touch each other's objects.
*/}}
{{- define "syncd.instance" -}}
{{- if hasKey .Values.config "instance" -}}
{{- .Values.config.instance -}}
{{- else -}}
{{- .Release.Name | lower | replace "_" "-" | replace "." "-" | trunc 40 | trimAll "-" -}}
{{- end -}}
{{- end -}}

{{/* The installation's Lease, named as syncd names it (RBAC grants exactly this one). */}}
{{- define "syncd.lease" -}}
{{- $instance := include "syncd.instance" . -}}
{{- ternary "syncd-leader" (printf "syncd-leader-%s" $instance) (eq $instance "default") -}}
{{- end -}}

{{/* A syncd duration (300, "45s", "5m", "1h30m") in whole seconds; anything else must be given. */}}
{{- define "syncd.seconds" -}}
{{- $v := toString . -}}
{{- if regexMatch "^[0-9]+$" $v -}}
{{- $v -}}
{{- else if regexMatch "^([0-9]+[smhd])+$" $v -}}
{{- $units := dict "s" 1 "m" 60 "h" 3600 "d" 86400 -}}
{{- $total := 0 -}}
{{- range regexFindAll "[0-9]+[smhd]" $v -1 -}}
{{- $total = add $total (mul (atoi (regexFind "[0-9]+" .)) (get $units (regexFind "[smhd]" .))) -}}
{{- end -}}
{{- $total -}}
{{- else -}}
{{- fail (printf "can't work out seconds from the timeout %q: set terminationGracePeriodSeconds" $v) -}}
{{- end -}}
{{- end -}}

{{/*
How long a stopping pod may take: the longest convergence timeout of the config plus a
margin, so SIGTERM during a swap lets it finish instead of killing it half-way.
*/}}
{{- define "syncd.gracePeriod" -}}
{{- if .Values.terminationGracePeriodSeconds -}}
{{- .Values.terminationGracePeriodSeconds -}}
{{- else -}}
{{- $longest := int (include "syncd.seconds" (dig "defaults" "timeout" 300 .Values.config)) -}}
{{- range .Values.config.secrets -}}
{{- if hasKey . "timeout" -}}
{{- $longest = max $longest (int (include "syncd.seconds" .timeout)) -}}
{{- end -}}
{{- end -}}
{{- add $longest .Values.gracePeriodMargin -}}
{{- end -}}
{{- end -}}

{{/*
The syncd config: the user's, with the kubernetes target, the installation name, leader
election and the daemon filled in. Leader election is always on: a rolling update runs the
old and the new pod side by side, and only the Lease holder may write.
*/}}
{{- define "syncd.config" -}}
{{- $target := dict "type" "kubernetes" "namespace" .Release.Namespace -}}
{{- if .Values.namespaces }}{{ $_ := set $target "namespaces" .Values.namespaces }}{{ end -}}
{{- $_ := set $target "leader_election" (dict "enabled" true "namespace" .Release.Namespace "lease" (include "syncd.lease" .)) -}}
{{- $custom := list -}}
{{- range .Values.rbac.customWorkloads }}{{ $custom = append $custom (printf "%s.%s" .resource .group) }}{{ end -}}
{{- $_ := set $target "custom_workloads" $custom -}}
{{- $config := deepCopy .Values.config -}}
{{- $_ := set $config "instance" (include "syncd.instance" .) -}}
{{- $_ := set $config "target" (mergeOverwrite $target (default (dict) $config.target)) -}}
{{- $daemon := dict "listen" (printf "0.0.0.0:%d" (int .Values.metrics.port)) -}}
{{- $_ := set $config "daemon" (mergeOverwrite $daemon (default (dict) $config.daemon)) -}}
{{- toYaml $config -}}
{{- end -}}
