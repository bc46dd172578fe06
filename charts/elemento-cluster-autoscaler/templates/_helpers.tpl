{{- define "ecas.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ecas.serviceAccountName" -}}
{{- default (include "ecas.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "ecas.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ecas.labels" -}}
{{ include "ecas.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: cluster-autoscaler
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The credentials Secret: exactly one source, never both silently. */}}
{{- define "ecas.credentialsSecret" -}}
{{- $c := .Values.credentials -}}
{{- $inline := or $c.username $c.password $c.token -}}
{{- if and $c.existingSecret $inline -}}
{{- fail "credentials: set either existingSecret or username/password/token, not both" -}}
{{- end -}}
{{- if and (not $c.existingSecret) (not $inline) -}}
{{- fail "credentials: set existingSecret, or username and password, or token" -}}
{{- end -}}
{{- if and (not $c.existingSecret) (not $c.token) (not (and $c.username $c.password)) -}}
{{- fail "credentials: username and password must be set together" -}}
{{- end -}}
{{- default (printf "%s-credentials" (include "ecas.fullname" .)) $c.existingSecret -}}
{{- end -}}

{{/* The gRPC link's Secret, or "" with grpc.plaintext (refused with the host's network). */}}
{{- define "ecas.tlsSecret" -}}
{{- if .Values.grpc.plaintext -}}
{{- if .Values.hostNetwork -}}
{{- fail "grpc.plaintext: refused with hostNetwork (every process of the node could reach the provider); use mTLS" -}}
{{- end -}}
{{- if .Values.grpc.tls.existingSecret -}}
{{- fail "grpc: set either plaintext or tls.existingSecret, not both" -}}
{{- end -}}
{{- else -}}
{{- default (printf "%s-grpc-tls" (include "ecas.fullname" .)) .Values.grpc.tls.existingSecret -}}
{{- end -}}
{{- end -}}
