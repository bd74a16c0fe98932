{{/* Chart name, overridable. */}}
{{- define "weir.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the broker cluster's name (the client Service, the StatefulSet), which
     resources give as spec.clusterRef.name. */}}
{{- define "weir.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "weir.headless" -}}{{ include "weir.fullname" . }}-headless{{- end -}}
{{- define "weir.operatorName" -}}{{ include "weir.fullname" . }}-operator{{- end -}}

{{- define "weir.labels" -}}
app.kubernetes.io/name: {{ include "weir.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "weir.brokerSelector" -}}
app.kubernetes.io/name: {{ include "weir.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: broker
{{- end -}}

{{- define "weir.operatorSelector" -}}
app.kubernetes.io/name: {{ include "weir.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* --voters: the first min(voters, replicas) pods, ID@POD.HEADLESS.NS.svc.DOMAIN:RAFT. */}}
{{- define "weir.voters" -}}
{{- $full := include "weir.fullname" . -}}
{{- $headless := include "weir.headless" . -}}
{{- $n := min (int .Values.broker.voters) (int .Values.broker.replicas) -}}
{{- $out := list -}}
{{- range $i := until (int $n) -}}
{{- $out = append $out (printf "%d@%s-%d.%s.%s.svc.%s:%d" $i $full $i $headless $.Release.Namespace $.Values.clusterDomain (int $.Values.broker.ports.raft)) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}
