{{/*
Sidecar mode: the pieces an application chart puts into its own pod template. With this chart as a
dependency (alias-free, `mode: sidecar` in its values), the application's Deployment does:

  template:
    metadata:
      annotations:
        {{- include "proget-gateway.sidecar.annotations" (index .Subcharts "proget-gateway") | nindent 8 }}
    spec:
      containers:
        - name: app
          env: [{name: PROGET_URL, value: http://127.0.0.1:8080}]   # no credential at all
        {{- include "proget-gateway.sidecar" (index .Subcharts "proget-gateway") | nindent 8 }}
      volumes:
        {{- include "proget-gateway.sidecar.volumes" (index .Subcharts "proget-gateway") | nindent 8 }}

(with sidecar.native: true, include "proget-gateway.sidecar" under initContainers instead).
The ConfigMap and the Secret it mounts are rendered by this chart itself (configmap.yaml, secret.yaml).
The gateway binds 127.0.0.1 only: nothing outside the pod can use the pod's key. Probes therefore
run inside the container (exec), with the interpreter the image already has.
*/}}

{{- define "proget-gateway.sidecar.probe" -}}
exec:
  command:
    - python3
    - -c
    - "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=3)"
    - {{ printf "http://127.0.0.1:%d%s" (int .root.Values.sidecar.adminPort) .path | quote }}
{{- end -}}

{{- define "proget-gateway.sidecar" -}}
- name: {{ .Values.sidecar.containerName }}
  image: {{ include "proget-gateway.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if .Values.sidecar.native }}
  restartPolicy: Always
  {{- end }}
  args: {{ include "proget-gateway.args" . }}
  env:
    - name: PROGET_GATEWAY_CONFIG
      value: {{ include "proget-gateway.configPath" . }}
    - name: PROGET_GATEWAY_HEALTHCHECK_URL
      value: {{ printf "http://127.0.0.1:%d/healthz" (int .Values.sidecar.adminPort) | quote }}
  {{- with .Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
  {{- end }}
  startupProbe:
    {{- include "proget-gateway.sidecar.probe" (dict "root" . "path" "/healthz") | nindent 4 }}
    periodSeconds: 2
    timeoutSeconds: 5
    failureThreshold: 15
  livenessProbe:
    {{- include "proget-gateway.sidecar.probe" (dict "root" . "path" "/healthz") | nindent 4 }}
    periodSeconds: 10
    timeoutSeconds: 5
    failureThreshold: 3
  {{- if .Values.sidecar.readinessProbe }}
  readinessProbe:
    {{- include "proget-gateway.sidecar.probe" (dict "root" . "path" "/readyz") | nindent 4 }}
    periodSeconds: 10
    timeoutSeconds: 5
    failureThreshold: 2
  {{- end }}
  resources:
    {{- toYaml .Values.sidecar.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.containerSecurityContext | nindent 4 }}
  volumeMounts:
    - name: proget-gateway-config
      mountPath: {{ include "proget-gateway.configDir" . }}
      readOnly: true
    - name: proget-gateway-keys
      mountPath: {{ include "proget-gateway.keysDir" . }}
      readOnly: true
    - name: proget-gateway-tmp
      mountPath: /tmp
  {{- with .Values.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* The sidecar's volumes; keys are world-readable inside the files only because the application pod's
     fsGroup is not ours to set, and only the sidecar container mounts them. */}}
{{- define "proget-gateway.sidecar.volumes" -}}
- name: proget-gateway-config
  configMap:
    name: {{ include "proget-gateway.configMapName" . }}
- name: proget-gateway-keys
  secret:
    secretName: {{ include "proget-gateway.secretName" . }}
    defaultMode: 292 # 0444
    optional: false
- name: proget-gateway-tmp
  emptyDir:
    medium: Memory
    sizeLimit: 16Mi
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Annotations that restart the application pod when the sidecar's config or managed keys change. */}}
{{- define "proget-gateway.sidecar.annotations" -}}
{{ include "proget-gateway.checksums" (dict "root" . "prefix" "checksum/proget-gateway-") }}
{{- end -}}
