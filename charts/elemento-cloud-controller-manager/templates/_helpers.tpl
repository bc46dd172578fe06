{{- define "eccm.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "eccm.serviceAccountName" -}}
{{- default (include "eccm.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "eccm.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "eccm.labels" -}}
{{ include "eccm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: cloud-controller-manager
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "eccm.leaseNamespace" -}}
{{- if .Values.tenantKubeconfig.secretName -}}
{{- default "kube-system" .Values.leaderElection.namespace -}}
{{- else -}}
{{- default .Release.Namespace .Values.leaderElection.namespace -}}
{{- end -}}
{{- end -}}

{{/* Management-cluster mode: "true" when the CCM works on a tenant cluster; refuses what cannot work there. */}}
{{- define "eccm.tenantMode" -}}
{{- if .Values.tenantKubeconfig.secretName -}}
{{- if .Values.hostNetwork -}}
{{- fail "tenantKubeconfig: set hostNetwork: false (in a management cluster the node's network and Elemento daemons are not the tenant's)" -}}
{{- end -}}
{{- if not .Values.api.url -}}
{{- fail "tenantKubeconfig: set api.url (an Elemento endpoint reachable from the management cluster; api.host names the node's own daemons)" -}}
{{- end -}}
true
{{- end -}}
{{- end -}}

{{- define "eccm.leaderElect" -}}
{{- if kindIs "bool" .Values.leaderElection.enabled -}}
{{- .Values.leaderElection.enabled -}}
{{- else -}}
{{- gt (int .Values.replicaCount) 1 -}}
{{- end -}}
{{- end -}}

{{/* The credentials Secret: exactly one source, never both silently. */}}
{{- define "eccm.credentialsSecret" -}}
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
{{- default (printf "%s-credentials" (include "eccm.fullname" .)) $c.existingSecret -}}
{{- end -}}
