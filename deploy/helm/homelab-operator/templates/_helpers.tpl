{{- define "homelab-operator.labels" -}}
app.kubernetes.io/name: homelab-operator
app.kubernetes.io/part-of: homelab-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "homelab-operator.selectorLabels" -}}
app.kubernetes.io/name: homelab-operator
app.kubernetes.io/component: controller
{{- end -}}
