{{/*
Names, labels and shared fragments. Component templates (webhook.yaml, ...) describe a workload
with a small dict and hand it to "cardsync.workload" (_workload.tpl).
*/}}

{{- define "cardsync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped base name: "<release>-cardsync", or the release name when it already says cardsync. */}}
{{- define "cardsync.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<fullname>-<component>"; the fullname is shortened first so the component suffix survives. */}}
{{- define "cardsync.componentName" -}}
{{- $base := include "cardsync.fullname" .root | trunc (int (sub 62 (len .name))) | trimSuffix "-" }}
{{- printf "%s-%s" $base .name }}
{{- end }}

{{- define "cardsync.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; pass (dict "root" $ "name" "<component>") or (dict "root" $). */}}
{{- define "cardsync.labels" -}}
helm.sh/chart: {{ include "cardsync.chart" .root }}
{{ include "cardsync.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: cardsync
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "cardsync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cardsync.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .name }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{- define "cardsync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cardsync.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "cardsync.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "cardsync.configMapName" -}}
{{- include "cardsync.componentName" (dict "root" . "name" "config") }}
{{- end }}

{{/*
The secret settings, by the name a component template uses for them: environment variable and
the values entry that locates it in a Secret.
*/}}
{{- define "cardsync.secretEnvNames" -}}
bus: {env: CARDSYNC__BUS__URL, value: busUrl}
postgres: {env: CARDSYNC__POSTGRES__URL, value: postgresUrl}
redis: {env: CARDSYNC__REDIS__URL, value: redisUrl}
credentialKey: {env: CARDSYNC__SECRETS__CREDENTIAL_KEY, value: credentialKey}
credentialKeyId: {env: CARDSYNC__SECRETS__CREDENTIAL_KEY_ID, value: credentialKeyId, optional: true}
previousCredentialKeys: {env: CARDSYNC__SECRETS__PREVIOUS_CREDENTIAL_KEYS, value: previousCredentialKeys, optional: true}
{{- end }}

{{/* env entries for (dict "root" $ "secrets" (list "bus" "postgres" ...)); "credentialKey" brings
the optional key id and previous keys of a rotation with it. */}}
{{- define "cardsync.secretEnv" -}}
{{- $root := .root }}
{{- $names := include "cardsync.secretEnvNames" . | fromYaml }}
{{- $default := default (include "cardsync.fullname" $root) $root.Values.secrets.existingSecret }}
{{- $secrets := .secrets }}
{{- if has "credentialKey" $secrets }}
{{- $secrets = concat $secrets (list "credentialKeyId" "previousCredentialKeys") }}
{{- end }}
{{- range $secrets }}
{{- $entry := get $names . }}
{{- $ref := get $root.Values.secrets $entry.value }}
- name: {{ $entry.env }}
  valueFrom:
    secretKeyRef:
      name: {{ default $default $ref.name }}
      key: {{ $ref.key }}
      {{- if $entry.optional }}
      optional: true
      {{- end }}
{{- end }}
{{- end }}

{{/*
The non-secret settings every workload shares, as a map of environment variables: the ConfigMap's
data, and the migration Job's env (a hook runs before the ConfigMap exists).
*/}}
{{- define "cardsync.sharedConfig" -}}
{{- $c := .Values.config }}
CARDSYNC__TELEMETRY__LOG_FORMAT: {{ $c.logFormat | quote }}
CARDSYNC__TELEMETRY__LOG_FILTER: {{ $c.logFilter | quote }}
{{- with $c.otlpEndpoint }}
CARDSYNC__TELEMETRY__OTLP_ENDPOINT: {{ . | quote }}
{{- end }}
{{- with $c.topologyPrefix }}
CARDSYNC__TOPOLOGY__PREFIX: {{ . | quote }}
{{- end }}
CARDSYNC__BUS__QUEUE_TYPE: {{ $c.queueType | quote }}
CARDSYNC__HTTP__SHUTDOWN_TIMEOUT: {{ printf "%ds" (int .Values.shutdown.httpTimeoutSeconds) | quote }}
CARDSYNC__BUS__DRAIN_TIMEOUT: {{ printf "%ds" (int .Values.shutdown.busDrainTimeoutSeconds) | quote }}
{{- range $key, $value := $c.env }}
{{ $key }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* Photo storage settings (a map), for workloads that use photos: only the chosen backend's. */}}
{{- define "cardsync.photoConfig" -}}
{{- $p := .Values.photos }}
{{- if eq $p.backend "s3" }}
CARDSYNC__PHOTOS__URL: {{ printf "s3://%s/%s" $p.s3.bucket $p.s3.prefix | trimSuffix "/" | quote }}
{{- with $p.s3.region }}
AWS_REGION: {{ . | quote }}
{{- end }}
{{- with $p.s3.endpoint }}
AWS_ENDPOINT: {{ . | quote }}
{{- end }}
{{- else if eq $p.backend "azureBlob" }}
CARDSYNC__PHOTOS__URL: {{ printf "az://%s/%s" $p.azureBlob.container $p.azureBlob.prefix | trimSuffix "/" | quote }}
AZURE_STORAGE_ACCOUNT_NAME: {{ $p.azureBlob.account | quote }}
{{- else if eq $p.backend "volume" }}
CARDSYNC__PHOTOS__URL: {{ printf "file://%s" $p.volume.mountPath | quote }}
{{- else }}
{{- /* none: the pod's scratch /tmp (the root filesystem is read-only); lost with the pod, and
one per pod: for trying cardsync out with one replica, not for production. */}}
CARDSYNC__PHOTOS__URL: "file:///tmp/cardsync-photos"
{{- end }}
{{- end }}

{{/* Secret env of the photo backend (static keys), when configured. */}}
{{- define "cardsync.photoSecretEnv" -}}
{{- $root := . }}
{{- $p := .Values.photos }}
{{- $secret := default (include "cardsync.fullname" .) .Values.secrets.existingSecret }}
{{- if and (eq $p.backend "s3") $p.s3.accessKeyIdKey }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $p.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ required "photos.s3.secretAccessKeyKey: set it with photos.s3.accessKeyIdKey" $p.s3.secretAccessKeyKey }}
{{- end }}
{{- if and (eq $p.backend "azureBlob") $p.azureBlob.accountKeyKey }}
- name: AZURE_STORAGE_ACCOUNT_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $p.azureBlob.accountKeyKey }}
{{- end }}
{{- end }}

{{/*
Checks the schema cannot express, with messages that say what to change. Included once, from
configmap.yaml; each workload checks its own settings through "cardsync.assertNoSecrets".
*/}}
{{- define "cardsync.validate" -}}
{{- include "cardsync.assertNoSecrets" (dict "scope" "config.env" "env" .Values.config.env) }}
{{- if and .Values.azureWorkloadIdentity.enabled (not .Values.serviceAccount.create) }}
{{- fail "azureWorkloadIdentity.enabled: the chart annotates the ServiceAccount it creates; with serviceAccount.create=false, annotate your own ServiceAccount with azure.workload.identity/client-id and leave this disabled" }}
{{- end }}
{{- end }}

{{/* Settings maps must not carry credentials: (dict "scope" "<values path>" "env" <map>). */}}
{{- define "cardsync.assertNoSecrets" -}}
{{- $secretKeys := list "CARDSYNC__BUS__URL" "CARDSYNC__POSTGRES__URL" "CARDSYNC__REDIS__URL" }}
{{- range $key, $_ := .env }}
{{- if or (has $key $secretKeys) (hasPrefix "CARDSYNC__SECRETS__" $key) }}
{{- fail (printf "%s.%s: secrets are never set in values; put it in the Secret named by secrets.existingSecret and reference it under secrets.*" $.scope $key) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds must outlast the preStop sleep plus the longer drain deadline, or
the kubelet kills a pod mid-drain. Pass (dict "root" $ "values" <component values> "key" "<key>").
*/}}
{{- define "cardsync.assertGracePeriod" -}}
{{- $drain := max (int .root.Values.shutdown.httpTimeoutSeconds) (int .root.Values.shutdown.busDrainTimeoutSeconds) }}
{{- $needed := add $drain (int .values.preStopSleepSeconds) }}
{{- if le (int .values.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "%s.terminationGracePeriodSeconds (%d) must exceed %s.preStopSleepSeconds (%d) + the longer drain deadline (%ds, from shutdown.httpTimeoutSeconds / shutdown.busDrainTimeoutSeconds) = %ds, or pods are killed before in-flight work finishes" .key (int .values.terminationGracePeriodSeconds) .key (int .values.preStopSleepSeconds) $drain $needed) }}
{{- end }}
{{- end }}
