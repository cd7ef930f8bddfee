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

{{/* A map as key=value pairs, comma-separated, sorted by key: the operator's label flags. */}}
{{- define "homelab-operator.keyValues" -}}
{{- $pairs := list -}}
{{- range $key, $value := . -}}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}
