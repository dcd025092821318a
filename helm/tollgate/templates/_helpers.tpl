{{- define "tollgate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tollgate.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tollgate.labels" -}}
{{ include "tollgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tollgate.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* tollgate.yaml, built from the values unless configOverride is set. */}}
{{- define "tollgate.config" -}}
{{- if .Values.configOverride -}}
{{ .Values.configOverride }}
{{- else -}}
version: 1
server:
  {{- if eq .Values.mode "sidecar" }}
  grpc_listen: unix:/run/tollgate/tollgate.sock
  {{- else }}
  grpc_listen: 0.0.0.0:50051
  {{- end }}
  admin_listen: 0.0.0.0:9090
  max_request_body: {{ .Values.server.maxRequestBody }}
  drain_timeout: {{ .Values.server.drainTimeout }}
  {{- if .Values.server.debugState }}
  debug_state: true
  {{- end }}
  {{- if ne .Values.mode "sidecar" }}
  {{- if not (or .Values.grpcAuth.tlsSecret .Values.grpcAuth.secret) }}
  {{- fail "standalone mode serves gRPC on the network: set grpcAuth.tlsSecret and/or grpcAuth.secret" }}
  {{- end }}
  grpc_auth:
    {{- if .Values.grpcAuth.secret }}
    secret: { file: /var/run/secrets/tollgate-grpc/secret }
    {{- end }}
    {{- if .Values.grpcAuth.tlsSecret }}
    tls:
      cert_file: /var/run/secrets/tollgate-grpc-tls/tls.crt
      key_file: /var/run/secrets/tollgate-grpc-tls/tls.key
      client_ca_file: /var/run/secrets/tollgate-grpc-tls/ca.crt
    {{- end }}
    {{- with .Values.grpcAuth.attemptTokenTtl }}
    attempt_token_ttl: {{ . }}
    {{- end }}
  {{- end }}
{{- if .Values.clientAuth.enabled }}
auth:
  mode: api_key
  key_file: /var/run/secrets/tollgate-client/keys
consumers:
  {{- range .Values.clientAuth.consumers }}
  - name: {{ . }}
  {{- end }}
{{- end }}
log:
  level: {{ .Values.log.level }}
  format: {{ .Values.log.format }}
{{- if or .Values.telemetry.otlp.endpoint .Values.telemetry.timeToFirstToken }}
telemetry:
  {{- if .Values.telemetry.otlp.endpoint }}
  traces:
    enabled: true
    endpoint: {{ .Values.telemetry.otlp.endpoint }}
    protocol: {{ .Values.telemetry.otlp.protocol }}
    sampling_ratio: {{ .Values.telemetry.otlp.samplingRatio }}
    service_name: {{ .Values.telemetry.otlp.serviceName }}
  {{- end }}
  {{- if .Values.telemetry.timeToFirstToken }}
  metrics:
    time_to_first_token: true
  {{- end }}
{{- end }}
{{- if .Values.audit.output }}
audit:
  output: {{ .Values.audit.output }}
{{- end }}
backends:
{{- range .Values.providers }}
  - name: {{ .name }}
    kind: {{ .kind }}
    base_path: {{ .basePath | default "/v1" }}
    {{- if .apiKeySecret }}
    auth:
      bearer: { file: /var/run/secrets/tollgate/{{ .name }} }
    {{- end }}
{{- end }}
{{- with .Values.models }}
models:
{{ toYaml . | indent 2 }}
{{- end }}
{{- with .Values.routes }}
routes:
{{ toYaml . | indent 2 }}
{{- end }}
{{- end -}}
{{- end -}}
