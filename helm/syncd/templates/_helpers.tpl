{{/* Names and labels shared by every template. */}}
{{- define "syncd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "syncd.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "syncd.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "syncd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "syncd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The chart's labels, then commonLabels: a common label can't replace one of the chart's. */}}
{{- define "syncd.labels" -}}
{{- $labels := include "syncd.selectorLabels" . | fromYaml -}}
{{- $_ := set $labels "app.kubernetes.io/version" .Chart.AppVersion -}}
{{- $_ := set $labels "app.kubernetes.io/managed-by" .Release.Service -}}
{{- $_ := set $labels "helm.sh/chart" (printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63) -}}
{{- toYaml (merge $labels (default (dict) .Values.commonLabels)) -}}
{{- end -}}

{{/* The chart's labels with more of an object's own (these win): (list $ extraLabels). */}}
{{- define "syncd.labelsWith" -}}
{{- $extra := deepCopy (default (dict) (index . 1)) -}}
{{- toYaml (merge $extra (include "syncd.labels" (index . 0) | fromYaml)) -}}
{{- end -}}

{{/* The pods' labels: the selector's win over podLabels, which win over commonLabels. */}}
{{- define "syncd.podLabels" -}}
{{- $labels := include "syncd.selectorLabels" . | fromYaml -}}
{{- toYaml (merge $labels (default (dict) .Values.podLabels) (default (dict) .Values.commonLabels)) -}}
{{- end -}}

{{/* The ConfigMap holding syncd.yaml: the user's own, or the one the chart renders. */}}
{{- define "syncd.configMapName" -}}
{{- default (include "syncd.fullname" .) .Values.existingConfigMap -}}
{{- end -}}

{{- define "syncd.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* A probe's timings from its values (livenessProbe, readinessProbe, startupProbe). */}}
{{- define "syncd.probeTimings" -}}
{{- range $key := list "initialDelaySeconds" "periodSeconds" "timeoutSeconds" "failureThreshold" }}
{{- if hasKey $ $key }}
{{ $key }}: {{ get $ $key }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
The mounts and volumes the syncd container and the test pod's share: the config, a scratch
/tmp, and the provider credentials (extraVolumes, extraVolumeMounts).
*/}}
{{- define "syncd.volumeMounts" -}}
- name: config
  mountPath: /etc/syncd
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "syncd.podVolumes" -}}
- name: config
  configMap:
    name: {{ include "syncd.configMapName" . }}
- name: tmp
  emptyDir: {medium: Memory, sizeLimit: 16Mi}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* imagePullSecrets: each given as a name or as {name: ...}. */}}
{{- define "syncd.imagePullSecrets" -}}
{{- range .Values.imagePullSecrets }}
{{- if kindIs "string" . }}
- name: {{ . }}
{{- else }}
- name: {{ .name }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The scheduling settings the syncd pod and the test pod share. */}}
{{- define "syncd.scheduling" -}}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
PromQL label matchers for this release's series: a ServiceMonitor labels them with the
Service's namespace and, as the job, its name.
*/}}
{{- define "syncd.metricsSelector" -}}
{{- default (printf "namespace=%q, job=\"%s-metrics\"" .Release.Namespace (include "syncd.fullname" .)) .Values.prometheusRule.selector -}}
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
