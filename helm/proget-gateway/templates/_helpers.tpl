{{/*
Names, labels and the gateway config. Every helper takes the chart's context (`.`), or, from an
application chart that has this chart as a dependency, `(index .Subcharts "proget-gateway")`.
*/}}

{{- define "proget-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "proget-gateway.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "proget-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "proget-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "proget-gateway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "proget-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ ternary "gateway" "sidecar-config" (eq .Values.mode "central") }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "proget-gateway.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "proget-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "proget-gateway.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "proget-gateway.configMapName" -}}
{{- printf "%s-config" (include "proget-gateway.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "proget-gateway.secretName" -}}
{{- if .Values.keys.existingSecret -}}
{{- .Values.keys.existingSecret -}}
{{- else -}}
{{- printf "%s-keys" (include "proget-gateway.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Where the pod sees its files. The config path is passed in PROGET_GATEWAY_CONFIG. */}}
{{- define "proget-gateway.configDir" -}}/etc/proget-gateway/config{{- end -}}
{{- define "proget-gateway.configPath" -}}/etc/proget-gateway/config/gateway.yaml{{- end -}}
{{- define "proget-gateway.keysDir" -}}/etc/proget-gateway/keys{{- end -}}
{{- define "proget-gateway.redisDir" -}}/etc/proget-gateway/redis{{- end -}}

{{/* The key names, as a YAML list: from keys.names with an existing Secret, else from keys.create. */}}
{{- define "proget-gateway.keyNames" -}}
{{- if .Values.keys.existingSecret -}}
{{- toYaml .Values.keys.names -}}
{{- else -}}
{{- toYaml (keys (default dict .Values.keys.create) | sortAlpha) -}}
{{- end -}}
{{- end -}}

{{/* Refuse, at render time, the mistakes that would only show up as a crash-looping pod. */}}
{{- define "proget-gateway.validate" -}}
{{- $names := include "proget-gateway.keyNames" . | fromYamlArray -}}
{{- if and .Values.keys.existingSecret .Values.keys.create -}}
{{- fail "keys: give keys.existingSecret (with keys.names) or keys.create, not both" -}}
{{- end -}}
{{- if not $names -}}
{{- fail "keys: no ProGet key defined: set keys.existingSecret and keys.names, or keys.create" -}}
{{- end -}}
{{- if eq .Values.mode "central" -}}
{{- if not .Values.config.clients -}}
{{- fail "config.clients: central mode needs at least one client (see config/example.yaml)" -}}
{{- end -}}
{{- if eq (int .Values.ports.http) (int .Values.ports.admin) -}}
{{- fail (printf "ports.admin: %v is also ports.http; the admin endpoints never share the proxy's port" .Values.ports.admin) -}}
{{- end -}}
{{- range $c, $client := .Values.config.clients -}}
{{- range $i, $rule := $client.rules -}}
{{- if not (has $rule.key $names) -}}
{{- fail (printf "config.clients[%d].rules[%d].key: %q is not one of the keys (%s)" $c $i $rule.key (join ", " $names)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $_ := include "proget-gateway.terminationGrace" . -}}
{{- else -}}
{{- if eq (int .Values.sidecar.port) (int .Values.sidecar.adminPort) -}}
{{- fail (printf "sidecar.adminPort: %v is also sidecar.port; the admin endpoints never share the proxy's port" .Values.sidecar.adminPort) -}}
{{- end -}}
{{- if .Values.config.clients -}}
{{- fail "config.clients: must be empty in sidecar mode; the sidecar's one client is sidecar.client" -}}
{{- end -}}
{{- range $i, $rule := .Values.sidecar.client.rules -}}
{{- if not (has $rule.key $names) -}}
{{- fail (printf "sidecar.client.rules[%d].key: %q is not one of the keys (%s)" $i $rule.key (join ", " $names)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Seconds the kubelet waits after SIGTERM before SIGKILL: above preStop sleep + shutdown.drain_delay +
shutdown.timeout (gateway defaults 5 and 25), plus 5 s to exit, so a drain is never cut short.
0 = exactly that; a smaller explicit value is refused.
*/}}
{{- define "proget-gateway.terminationGrace" -}}
{{- $shutdown := default dict .Values.config.shutdown -}}
{{- $drain := ternary $shutdown.drain_delay 5 (hasKey $shutdown "drain_delay") -}}
{{- $timeout := ternary $shutdown.timeout 25 (hasKey $shutdown "timeout") -}}
{{- $need := add 5 (ceil (addf .Values.preStopSleepSeconds $drain $timeout) | int) -}}
{{- $given := int .Values.terminationGracePeriodSeconds -}}
{{- if and $given (lt $given $need) -}}
{{- fail (printf "terminationGracePeriodSeconds: %d is below preStopSleepSeconds + config.shutdown.drain_delay + config.shutdown.timeout + 5 s to exit = %d; raise it (or 0: computed)" $given $need) -}}
{{- end -}}
{{- ternary $given $need (gt $given 0) -}}
{{- end -}}

{{/* serve's arguments: --no-reload when reload is off. */}}
{{- define "proget-gateway.args" -}}
{{- if .Values.reload -}}[serve]{{- else -}}[serve, --no-reload]{{- end -}}
{{- end -}}

{{/*
The gateway config document: the user's `config` plus listen/admin (mode dependent) and one `file:`
key source per key. In sidecar mode the one client is the anonymous `sidecar.client`.
*/}}
{{- define "proget-gateway.gatewayConfig" -}}
{{- include "proget-gateway.validate" . -}}
{{- $cfg := deepCopy .Values.config -}}
{{- if eq .Values.mode "central" -}}
{{- $_ := set $cfg "listen" (dict "host" .Values.listenHost "port" .Values.ports.http "keep_alive_timeout" .Values.keepAliveTimeout) -}}
{{- $_ := set $cfg "admin" (dict "host" .Values.listenHost "port" .Values.ports.admin) -}}
{{- else -}}
{{- $_ := set $cfg "listen" (dict "host" "127.0.0.1" "port" .Values.sidecar.port "keep_alive_timeout" .Values.keepAliveTimeout) -}}
{{- $_ := set $cfg "admin" (dict "host" "127.0.0.1" "port" .Values.sidecar.adminPort) -}}
{{- $client := dict "name" .Values.sidecar.client.name "anonymous" true "rules" .Values.sidecar.client.rules -}}
{{- $_ := set $cfg "clients" (list $client) -}}
{{- end -}}
{{- $keys := dict -}}
{{- $dir := include "proget-gateway.keysDir" . -}}
{{- range $name := include "proget-gateway.keyNames" . | fromYamlArray -}}
{{- $_ := set $keys $name (dict "file" (printf "%s/%s" $dir $name)) -}}
{{- end -}}
{{- $_ := set $cfg "keys" $keys -}}
{{- with .Values.rateLimitRedis.existingSecret -}}
{{- if ne $.Values.mode "central" -}}
{{- fail "rateLimitRedis: a shared Redis is for central mode (a sidecar serves one pod)" -}}
{{- end -}}
{{- $limit := deepCopy (default dict $cfg.rate_limit) -}}
{{- $redis := deepCopy (default dict $limit.redis) -}}
{{- $_ := set $redis "url_file" (printf "%s/%s" (include "proget-gateway.redisDir" $) $.Values.rateLimitRedis.key) -}}
{{- $_ := set $limit "redis" $redis -}}
{{- if not (hasKey $limit "backend") -}}
{{- $_ := set $limit "backend" "redis" -}}
{{- end -}}
{{- $_ := set $cfg "rate_limit" $limit -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/*
Pod annotations. With reload on (the default) a changed ConfigMap or Secret reaches the running pods
through the kubelet's volume update and the gateway's reload, without a roll; with rollOnConfigChange
(or reload off) checksums roll the pods when the config or a chart-managed key changes. An existing
Secret is not visible at render time either way.
Call with (dict "root" . "prefix" "checksum/"); the sidecar uses a longer prefix so it cannot clash
with the application's own checksum annotations.
*/}}
{{- define "proget-gateway.checksums" -}}
{{- $v := .root.Values -}}
proget-gateway/config-reload: {{ ternary "on" "off" (and $v.reload true) | quote }}
{{- if or $v.rollOnConfigChange (not $v.reload) }}
{{ .prefix }}config: {{ include "proget-gateway.gatewayConfig" .root | sha256sum }}
{{- if $v.keys.existingSecret }}
{{ .prefix }}secret: {{ printf "existing:%s:%s" $v.keys.existingSecret (join "," $v.keys.names) | sha256sum }}
{{- else }}
{{ .prefix }}secret: {{ toJson $v.keys.create | sha256sum }}
{{- end }}
{{- end }}
{{- end -}}
