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

{{- define "ecsi.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ecsi.labels" -}}
{{ include "ecsi.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "ecsi.image" -}}
{{- printf "%s:%s" .repository (default $.AppVersion .tag) -}}
{{- end -}}

{{- define "ecsi.credentialsSecret" -}}
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
{{- default (printf "%s-credentials" (include "ecsi.fullname" .)) $c.existingSecret -}}
{{- end -}}

{{/* Management-cluster mode: "true" when the controller works on a tenant cluster; refuses what cannot work there. */}}
{{- define "ecsi.tenantMode" -}}
{{- if .Values.tenantKubeconfig.secretName -}}
{{- if not .Values.controller.enabled -}}
{{- fail "tenantKubeconfig: the management-cluster release runs the controller; set controller.enabled: true (controller.enabled: false is for the tenant's release)" -}}
{{- end -}}
{{- if .Values.controller.hostNetwork -}}
{{- fail "tenantKubeconfig: set controller.hostNetwork: false (in a management cluster the node's network and Elemento daemons are not the tenant's)" -}}
{{- end -}}
{{- if not .Values.api.url -}}
{{- fail "tenantKubeconfig: set api.url (an Elemento endpoint reachable from the management cluster; api.host names the node's own daemons)" -}}
{{- end -}}
true
{{- end -}}
{{- end -}}

{{/* The sidecars' and the driver's arguments and mount in management-cluster mode. */}}
{{- define "ecsi.tenantArg" -}}
{{- if include "ecsi.tenantMode" . }}, "--kubeconfig=/etc/elemento/tenant/{{ .Values.tenantKubeconfig.key }}"{{ end -}}
{{- end -}}

{{- define "ecsi.leaseNamespace" -}}
{{- if include "ecsi.tenantMode" . -}}kube-system{{- else -}}{{ .Release.Namespace }}{{- end -}}
{{- end -}}

{{- define "ecsi.tenantMount" -}}
{{- if include "ecsi.tenantMode" . }}, {name: tenant-kubeconfig, mountPath: /etc/elemento/tenant, readOnly: true}{{ end -}}
{{- end -}}
