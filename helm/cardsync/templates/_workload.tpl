{{/*
One long-running cardsync service: Deployment, Service, PodDisruptionBudget and NetworkPolicy.

A component template (webhook.yaml, ...) calls it with a dict describing what the code needs;
what an operator tunes lives in values under `key`:

  root           the chart's root context ($)
  name           binary name, resource suffix and app.kubernetes.io/component (e.g. "delta-worker")
  key            its values block (e.g. "deltaWorker")
  secrets        secret settings it reads: any of "bus", "postgres", "redis", "credentialKey"
  egress         what it connects to: any of "rabbitmq", "postgres", "redis", "graph"
  public         true: the ingress controller may reach its port
  azureIdentity  true: calls Graph, so it gets the workload identity label when enabled
  photos         true: reads or writes photo storage
  autoscaled     true: an HPA or ScaledObject owns .spec.replicas
  minReplicas    the replica floor (PodDisruptionBudget decision)
  extraEnv       (optional) settings the component template derives from values (name: value)
*/}}
{{- define "cardsync.workload" -}}
{{- $root := .root }}
{{- $v := get $root.Values .key }}
{{- $name := include "cardsync.componentName" (dict "root" $root "name" .name) }}
{{- include "cardsync.assertGracePeriod" (dict "root" $root "values" $v "key" .key) }}
{{- include "cardsync.assertNoSecrets" (dict "scope" (printf "%s.env" .key) "env" $v.env) }}
{{- $photos := .photos }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "cardsync.labels" (dict "root" $root "name" .name) | nindent 4 }}
spec:
  {{- if not .autoscaled }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "cardsync.selectorLabels" (dict "root" $root "name" .name) | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      # A new pod must be ready (schema current, broker reachable) before an old one goes.
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      labels:
        {{- include "cardsync.labels" (dict "root" $root "name" .name) | nindent 8 }}
        {{- if and .azureIdentity $root.Values.azureWorkloadIdentity.enabled }}
        azure.workload.identity/use: "true"
        {{- end }}
        {{- with (merge (dict) $v.podLabels $root.Values.podLabels) }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- with (merge (dict) $v.podAnnotations $root.Values.podAnnotations) }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "cardsync.serviceAccountName" $root }}
      automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
      enableServiceLinks: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with (default $root.Values.priorityClassName $v.priorityClassName) }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      containers:
        - name: {{ .name }}
          image: {{ include "cardsync.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: [{{ .name | quote }}]
          args: ["serve"]
          ports:
            - name: http
              containerPort: {{ $v.port }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "cardsync.configMapName" $root }}
          env:
            - name: CARDSYNC__HTTP__LISTEN
              value: {{ printf "0.0.0.0:%d" (int $v.port) | quote }}
            {{- include "cardsync.secretEnv" (dict "root" $root "secrets" .secrets) | trim | nindent 12 }}
            {{- range $key, $value := .extraEnv }}
            - name: {{ $key }}
              value: {{ $value | toString | quote }}
            {{- end }}
            {{- if $photos }}
            {{- range $key, $value := include "cardsync.photoConfig" $root | fromYaml }}
            - name: {{ $key }}
              value: {{ $value | quote }}
            {{- end }}
            {{- with include "cardsync.photoSecretEnv" $root | trim }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- end }}
            {{- range $key, $value := $v.env }}
            - name: {{ $key }}
              value: {{ $value | toString | quote }}
            {{- end }}
          startupProbe:
            httpGet:
              path: /health/live
              port: http
            {{- toYaml $v.probes.startup | nindent 12 }}
          livenessProbe:
            httpGet:
              path: /health/live
              port: http
            {{- toYaml $v.probes.liveness | nindent 12 }}
          readinessProbe:
            httpGet:
              path: /health/ready
              port: http
            {{- toYaml $v.probes.readiness | nindent 12 }}
          {{- if gt (int $v.preStopSleepSeconds) 0 }}
          lifecycle:
            preStop:
              sleep:
                seconds: {{ $v.preStopSleepSeconds }}
          {{- end }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if and $photos (eq $root.Values.photos.backend "volume") }}
            - name: photos
              mountPath: {{ $root.Values.photos.volume.mountPath }}
            {{- end }}
      volumes:
        # The root filesystem is read-only; a small scratch /tmp for any library that wants one.
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- if and $photos (eq $root.Values.photos.backend "volume") }}
        - name: photos
          persistentVolumeClaim:
            claimName: {{ required "photos.volume.claimName: name an existing ReadWriteMany PersistentVolumeClaim" $root.Values.photos.volume.claimName }}
        {{- end }}
      {{- if $root.Values.topologySpread.enabled }}
      topologySpreadConstraints:
        {{- range $topologyKey := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
        - maxSkew: 1
          topologyKey: {{ $topologyKey }}
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "cardsync.selectorLabels" (dict "root" $root "name" $.name) | nindent 14 }}
          matchLabelKeys:
            - pod-template-hash
        {{- end }}
      {{- end }}
      {{- with (default $root.Values.nodeSelector $v.nodeSelector) }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with (default $root.Values.affinity $v.affinity) }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with (default $root.Values.tolerations $v.tolerations) }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "cardsync.labels" (dict "root" $root "name" .name) | nindent 4 }}
  {{- with $v.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $v.service.type }}
  selector:
    {{- include "cardsync.selectorLabels" (dict "root" $root "name" .name) | nindent 4 }}
  ports:
    - name: http
      port: {{ $v.port }}
      targetPort: http
      protocol: TCP
{{- if and $v.pdb.enabled (gt (int .minReplicas) 1) }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "cardsync.labels" (dict "root" $root "name" .name) | nindent 4 }}
spec:
  maxUnavailable: {{ $v.pdb.maxUnavailable }}
  # Pods that never became ready (e.g. waiting for a migration) may always be evicted.
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      {{- include "cardsync.selectorLabels" (dict "root" $root "name" .name) | nindent 6 }}
{{- end }}
{{- if $root.Values.networkPolicy.enabled }}
{{- $np := $root.Values.networkPolicy }}
{{- $from := concat $np.metricsScrapers (ternary $np.ingressController (list) (default false .public)) (default (list) $v.apiClients) }}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "cardsync.labels" (dict "root" $root "name" .name) | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "cardsync.selectorLabels" (dict "root" $root "name" .name) | nindent 6 }}
  policyTypes: ["Ingress", "Egress"]
  {{- if $from }}
  ingress:
    - from:
        {{- toYaml $from | nindent 8 }}
      ports:
        - port: http
          protocol: TCP
  {{- else }}
  # Nobody is allowed in (an empty `from` would allow everybody).
  ingress: []
  {{- end }}
  egress:
    {{- include "cardsync.egressRules" (dict "root" $root "egress" .egress) | trim | nindent 4 }}
{{- end }}
{{- end }}

{{/* Egress rules: DNS, each named dependency, and the OTLP collector when configured. */}}
{{- define "cardsync.egressRules" -}}
{{- $np := .root.Values.networkPolicy }}
- to:
    {{- toYaml $np.dns | nindent 4 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- $targets := .egress }}
{{- if .root.Values.config.otlpEndpoint }}
{{- $targets = append $targets "otlp" }}
{{- end }}
{{- range $targets }}
{{- $rule := get $np.egress . }}
- ports:
    {{- range $rule.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- with $rule.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}

{{/* HorizontalPodAutoscaler on CPU: (dict "root" $ "name" "<component>" "key" "<values key>"). */}}
{{- define "cardsync.hpa" -}}
{{- $v := get .root.Values .key }}
{{- $name := include "cardsync.componentName" (dict "root" .root "name" .name) }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "cardsync.labels" (dict "root" .root "name" .name) | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  minReplicas: {{ $v.autoscaling.minReplicas }}
  maxReplicas: {{ $v.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $v.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}

{{/*
KEDA ScaledObject on RabbitMQ queue depth: (dict "root" $ "name" "<component>" "key" "<values key>"
"queues" (list "<queue short name>" ...)). Names get the topology prefix, as the services do.
*/}}
{{- define "cardsync.scaledObject" -}}
{{- $root := .root }}
{{- $v := get $root.Values .key }}
{{- $name := include "cardsync.componentName" (dict "root" $root "name" .name) }}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "cardsync.labels" (dict "root" $root "name" .name) | nindent 4 }}
spec:
  scaleTargetRef:
    name: {{ $name }}
  pollingInterval: {{ $root.Values.keda.pollingInterval }}
  cooldownPeriod: {{ $root.Values.keda.cooldownPeriod }}
  minReplicaCount: {{ $v.keda.minReplicas }}
  maxReplicaCount: {{ $v.keda.maxReplicas }}
  triggers:
    {{- range .queues }}
    - type: rabbitmq
      metadata:
        protocol: amqp
        queueName: {{ printf "%s%s" $root.Values.config.topologyPrefix . | quote }}
        mode: QueueLength
        value: {{ $v.keda.queueLength | quote }}
      authenticationRef:
        name: {{ include "cardsync.kedaAuthName" $root }}
    {{- end }}
{{- end }}

{{- define "cardsync.kedaAuthName" -}}
{{- printf "%s-rabbitmq" (include "cardsync.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Non-empty when an enabled workload scales with KEDA (the TriggerAuthentication is then rendered). */}}
{{- define "cardsync.kedaUsed" -}}
{{- range $key, $v := .Values }}
{{- if and (kindIs "map" $v) (hasKey $v "keda") (hasKey $v "enabled") }}
{{- if and $v.enabled $v.keda.enabled }}true{{ end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Ingress with TLS for a public workload: (dict "root" $ "name" "<component>" "key" "<values key>"
"paths" (list "/exact/path" ...)). Only the listed paths are routed; /metrics and /health stay inside.
*/}}
{{- define "cardsync.ingress" -}}
{{- $root := .root }}
{{- $v := get $root.Values .key }}
{{- $name := include "cardsync.componentName" (dict "root" $root "name" .name) }}
{{- $host := required (printf "%s.ingress.host: the public DNS name is required when %s.ingress.enabled" .key .key) $v.ingress.host }}
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "cardsync.labels" (dict "root" $root "name" .name) | nindent 4 }}
  {{- with $v.ingress.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- with $v.ingress.className }}
  ingressClassName: {{ . }}
  {{- end }}
  tls:
    - hosts:
        - {{ $host | quote }}
      secretName: {{ required (printf "%s.ingress.tls.secretName: served over HTTPS only; name the TLS Secret for %s" .key $host) $v.ingress.tls.secretName }}
  rules:
    - host: {{ $host | quote }}
      http:
        paths:
          {{- $pathType := default "Exact" .pathType }}
          {{- range .paths }}
          - path: {{ . }}
            pathType: {{ $pathType }}
            backend:
              service:
                name: {{ $name }}
                port:
                  name: http
          {{- end }}
{{- end }}
