{{- define "ecsi.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ecsi.controllerSA" -}}
{{- default (printf "%s-controller" (include "ecsi.fullname" .)) .Values.controller.serviceAccount.name -}}
{{- end -}}

{{- define "ecsi.nodeSA" -}}
{{- default (printf "%s-node" (include "ecsi.fullname" .)) .Values.node.serviceAccount.name -}}
{{- end -}}

{{- define "ecsi.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
