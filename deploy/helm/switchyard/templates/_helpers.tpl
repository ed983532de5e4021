{{/* Chart name, overridable. */}}
{{- define "switchyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix: the release name, plus the chart name unless it already contains it. Trimmed so that "-gossip" still fits 63 characters. */}}
{{- define "switchyard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 56 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "switchyard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "switchyard.labels" -}}
helm.sh/chart: {{ include "switchyard.chart" . }}
app.kubernetes.io/name: {{ include "switchyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: switchyard
{{- end }}

{{/* Selector of the edge pods. */}}
{{- define "switchyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: edge
{{- end }}

{{/*
The label every Switchyard pod of the cluster carries, edge pods and agents
with the sidecar alike: `switchyard inject` gives it to the pods it adds the
sidecar to. The gossip Service and the NetworkPolicy select it, so there is
one Switchyard cluster per namespace.
*/}}
{{- define "switchyard.clusterLabel" -}}
switchyard.io/sidecar: "injected"
{{- end }}

{{/* Names of the objects. */}}
{{- define "switchyard.gossipServiceName" -}}
{{ include "switchyard.fullname" . }}-gossip
{{- end }}

{{- define "switchyard.secretName" -}}
{{- if .Values.secret.existingSecret }}
{{- .Values.secret.existingSecret }}
{{- else }}
{{- include "switchyard.fullname" . }}
{{- end }}
{{- end }}

{{/* --join: the headless Service's DNS name, which resolves to every node. */}}
{{- define "switchyard.join" -}}
{{ include "switchyard.gossipServiceName" . }}.{{ .Release.Namespace }}.svc:7946
{{- end }}

{{- define "switchyard.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/*
The environment of a Switchyard node in a pod: the downward API, then the
SWITCHYARD_* variables (which refer to $(POD_NAME) and $(POD_IP)), the
secrets, then the extra flags.
*/}}
{{- define "switchyard.nodeEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: SWITCHYARD_LISTEN
  value: "0.0.0.0:8787"
- name: SWITCHYARD_ADVERTISE_URL
  value: "http://$(POD_IP):8787"
- name: SWITCHYARD_NODE_NAME
  value: "$(POD_NAME)"
- name: SWITCHYARD_GOSSIP_BIND
  value: "0.0.0.0:7946"
- name: SWITCHYARD_GOSSIP_ADVERTISE
  value: "$(POD_IP):7946"
- name: SWITCHYARD_JOIN
  value: {{ include "switchyard.join" . | quote }}
- name: SWITCHYARD_DRAIN_TIMEOUT
  value: {{ .Values.drainTimeout | quote }}
- name: SWITCHYARD_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: SWITCHYARD_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: SWITCHYARD_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "switchyard.secretName" . }}
      key: api-keys
- name: SWITCHYARD_TOKEN_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "switchyard.secretName" . }}
      key: token-secret
      optional: true
- name: SWITCHYARD_GOSSIP_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "switchyard.secretName" . }}
      key: gossip-key
{{- with .Values.goMemLimit }}
- name: GOMEMLIMIT
  value: {{ . | quote }}
{{- end }}
{{- $reserved := list "listen" "advertise-url" "node-name" "gossip-bind" "gossip-advertise" "join" "drain-timeout" "log-level" "log-format" "api-key" "api-keys" "gossip-key" "token-secret" "config" "print-config" }}
{{- range $flag, $value := .Values.flags }}
{{- if has $flag $reserved }}
{{- fail (printf "flags.%s: the chart sets --%s itself; use its own value instead" $flag $flag) }}
{{- end }}
- name: {{ printf "SWITCHYARD_%s" ($flag | replace "-" "_" | upper) }}
  value: {{ include "switchyard.flagValue" $value | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* A flag value as the environment takes it: lists comma-separated, whole numbers without an exponent (values files decode numbers as float64). */}}
{{- define "switchyard.flagValue" -}}
{{- if kindIs "slice" . }}
{{- $items := list }}
{{- range . }}{{ $items = append $items (include "switchyard.flagValue" .) }}{{ end }}
{{- join "," $items }}
{{- else if and (kindIs "float64" .) (eq . (floor .)) }}
{{- int64 . | toString }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}
