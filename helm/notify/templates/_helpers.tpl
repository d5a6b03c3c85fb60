{{/*
Names and labels.
*/}}
{{- define "notify.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the release name, prefixed to the chart name unless it already
contains it. Kept to 50 characters: the StatefulSet's pods add "-N" and the
controller adds a hash label, and "-gossip" goes on the headless Service.
*/}}
{{- define "notify.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "notify.gossipServiceName" -}}
{{- printf "%s-gossip" (include "notify.fullname" .) }}
{{- end }}

{{- define "notify.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Pod selector: stable for the life of the release (selectors are immutable). */}}
{{- define "notify.selectorLabels" -}}
app.kubernetes.io/name: {{ include "notify.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "notify.labels" -}}
helm.sh/chart: {{ include "notify.chart" . }}
{{ include "notify.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: notify
{{- end }}

{{- define "notify.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "notify.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "notify.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
Seconds in a duration of whole hours, minutes and seconds ("20s", "1m30s");
values.schema.json only lets such durations through.
*/}}
{{- define "notify.durationSeconds" -}}
{{- $d := toString . }}
{{- $h := regexFind "[0-9]+h" $d | trimSuffix "h" | default "0" | atoi }}
{{- $m := regexFind "[0-9]+m" $d | trimSuffix "m" | default "0" | atoi }}
{{- $s := regexFind "[0-9]+s" $d | trimSuffix "s" | default "0" | atoi }}
{{- add (mul $h 3600) (mul $m 60) $s }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the kubelet must not SIGKILL a node before the
preStop pause and the drain are over, plus time to leave the cluster.
*/}}
{{- define "notify.terminationGracePeriodSeconds" -}}
{{- $needed := add (int .Values.preStopSleepSeconds) (include "notify.durationSeconds" .Values.config.drainTimeout | atoi) }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $needed 15 }}
{{- else if le (int .Values.terminationGracePeriodSeconds) $needed }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than preStopSleepSeconds + config.drainTimeout (%d s)" (int .Values.terminationGracePeriodSeconds) $needed) }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
Secrets. For each credential: the Secret and key the pods read it from, and
whether the chart's own Secret carries it. An existingSecret always wins, and
then the chart renders no value for it.
*/}}
{{- define "notify.secretName" -}}
{{- include "notify.fullname" . }}
{{- end }}

{{- define "notify.hasPublicKeys" -}}
{{- if or .Values.auth.publicKeys.inline .Values.auth.publicKeys.existingSecret .Values.auth.publicKeys.existingConfigMap }}true{{ end }}
{{- end }}

{{/* Tokens verified with keys other than the HMAC secret (PEM files or JWK Sets)? */}}
{{- define "notify.hasKeys" -}}
{{- if or (include "notify.hasPublicKeys" .) .Values.auth.jwks.urls }}true{{ end }}
{{- end }}

{{/* Phoenix.Tokens taken (a secret key base given or from an existing Secret)? */}}
{{- define "notify.hasPhoenix" -}}
{{- if or .Values.auth.phoenix.existingSecret .Values.auth.phoenix.secretKeyBase }}true{{ end }}
{{- end }}

{{/* NOTIFY_API_AUTH: "on" or "off"; YAML 1.1 reads a bare on/off as a boolean. */}}
{{- define "notify.apiAuth" -}}
{{- $v := .Values.config.apiAuth }}
{{- if kindIs "bool" $v }}{{ ternary "on" "off" $v }}{{ else }}{{ $v }}{{ end }}
{{- end }}

{{/*
Redis topology: "sentinel" (redis.sentinel.addrs), "cluster"
(redis.cluster.addrs), "url" (redis.url or redis.existingSecret's URL) or
empty (none: the embedded broker). The node takes exactly one, so with
sentinel or cluster no REDIS_URL is rendered; notify.validate refuses both.
*/}}
{{- define "notify.redisTopology" -}}
{{- if .Values.redis.sentinel.addrs }}sentinel
{{- else if .Values.redis.cluster.addrs }}cluster
{{- else if or .Values.redis.existingSecret .Values.redis.url }}url
{{- end }}
{{- end }}

{{/* Sentinel or Cluster: the topologies whose credentials are settings of their own. */}}
{{- define "notify.redisAddrs" -}}
{{- if or .Values.redis.sentinel.addrs .Values.redis.cluster.addrs }}true{{ end }}
{{- end }}

{{/* Redis URL in the chart's Secret? */}}
{{- define "notify.ownsRedisURL" -}}
{{- if and (not .Values.redis.existingSecret) .Values.redis.url (eq (include "notify.redisTopology" .) "url") }}true{{ end }}
{{- end }}

{{/* REDIS_PASSWORD set? (Sentinel or Cluster: from existingSecret, or given) */}}
{{- define "notify.hasRedisPassword" -}}
{{- if and (include "notify.redisAddrs" .) (ternary .Values.redis.existingSecretPasswordKey .Values.redis.password (not (empty .Values.redis.existingSecret))) }}true{{ end }}
{{- end }}

{{/* REDIS_SENTINEL_PASSWORD set? (Sentinel only: from existingSecret, or given) */}}
{{- define "notify.hasRedisSentinelPassword" -}}
{{- if and .Values.redis.sentinel.addrs (ternary .Values.redis.existingSecretSentinelPasswordKey .Values.redis.sentinel.password (not (empty .Values.redis.existingSecret))) }}true{{ end }}
{{- end }}

{{/* Redis password in the chart's Secret? */}}
{{- define "notify.ownsRedisPassword" -}}
{{- if and (not .Values.redis.existingSecret) (include "notify.hasRedisPassword" .) }}true{{ end }}
{{- end }}

{{/* Sentinel password in the chart's Secret? */}}
{{- define "notify.ownsRedisSentinelPassword" -}}
{{- if and (not .Values.redis.existingSecret) (include "notify.hasRedisSentinelPassword" .) }}true{{ end }}
{{- end }}

{{/* JWT secret in the chart's Secret? (given, or generated when no public keys or JWKS verify tokens) */}}
{{- define "notify.ownsJWTSecret" -}}
{{- if and (not .Values.auth.existingSecret) (or .Values.auth.jwtSecret (not (include "notify.hasKeys" .))) }}true{{ end }}
{{- end }}

{{/* Phoenix secret key base in the chart's Secret? (only when given: never generated) */}}
{{- define "notify.ownsPhoenixKey" -}}
{{- if and (not .Values.auth.phoenix.existingSecret) .Values.auth.phoenix.secretKeyBase }}true{{ end }}
{{- end }}

{{- define "notify.ownsAPIKey" -}}
{{- if not .Values.api.existingSecret }}true{{ end }}
{{- end }}

{{- define "notify.ownsGossipKey" -}}
{{- if not .Values.gossip.existingSecret }}true{{ end }}
{{- end }}

{{- define "notify.ownsSecret" -}}
{{- if or (include "notify.ownsRedisURL" .) (include "notify.ownsRedisPassword" .) (include "notify.ownsRedisSentinelPassword" .) (include "notify.ownsJWTSecret" .) (include "notify.ownsAPIKey" .) (include "notify.ownsGossipKey" .) (include "notify.ownsPhoenixKey" .) }}true{{ end }}
{{- end }}

{{/*
A value of the chart's Secret: the one given in values, else the one already
in the cluster (so generated credentials survive upgrades), else a new one.
Call with (list $ "key" $given "generator").
*/}}
{{- define "notify.secretValue" -}}
{{- $root := index . 0 }}
{{- $key := index . 1 }}
{{- $given := index . 2 }}
{{- $kind := index . 3 }}
{{- if $given }}
{{- $given }}
{{- else }}
{{- $existing := lookup "v1" "Secret" $root.Release.Namespace (include "notify.secretName" $root) }}
{{- if and $existing $existing.data (hasKey $existing.data $key) }}
{{- index $existing.data $key | b64dec }}
{{- else if eq $kind "bytes32" }}
{{- randBytes 32 }}
{{- else }}
{{- randAlphaNum 48 }}
{{- end }}
{{- end }}
{{- end }}

{{/* The public key mount and the NOTIFY_JWT_PUBLIC_KEYS path list. */}}
{{- define "notify.publicKeysDir" -}}/etc/notify/jwt-keys{{- end }}

{{- define "notify.publicKeyFiles" -}}
{{- if .Values.auth.publicKeys.inline }}
{{- keys .Values.auth.publicKeys.inline | sortAlpha | toJson }}
{{- else }}
{{- .Values.auth.publicKeys.keys | toJson }}
{{- end }}
{{- end }}

{{/* Checks that span several values (the schema checks each one alone). */}}
{{- define "notify.validate" -}}
{{- $replicas := ternary .Values.autoscaling.maxReplicas .Values.replicaCount .Values.autoscaling.enabled }}
{{- $redis := .Values.redis }}
{{- if and $redis.sentinel.addrs $redis.cluster.addrs }}
{{- fail "redis.sentinel.addrs and redis.cluster.addrs are both set: configure one Redis topology (the node refuses to start with two)" }}
{{- end }}
{{- if and $redis.sentinel.addrs (not $redis.sentinel.master) }}
{{- fail "redis.sentinel.master is required with redis.sentinel.addrs: the name the sentinels monitor the master under" }}
{{- end }}
{{- if and $redis.sentinel.master (not $redis.sentinel.addrs) }}
{{- fail "redis.sentinel.master is set without redis.sentinel.addrs, the sentinels to ask for the master" }}
{{- end }}
{{- if and $redis.sentinel.password (not $redis.sentinel.addrs) }}
{{- fail "redis.sentinel.password is set without redis.sentinel.addrs" }}
{{- end }}
{{- if and (or $redis.username $redis.password) (not (include "notify.redisAddrs" .)) }}
{{- fail "redis.username and redis.password are for redis.sentinel or redis.cluster: with one server, put the credentials in redis.url" }}
{{- end }}
{{- if and $redis.username (not (include "notify.hasRedisPassword" .)) }}
{{- fail "redis.username needs a password: redis.password, or redis.existingSecretPasswordKey in redis.existingSecret" }}
{{- end }}
{{- if and (gt (int $replicas) 1) (not (include "notify.redisTopology" .)) }}
{{- fail "redis.url or redis.existingSecret (one server), redis.sentinel.addrs or redis.cluster.addrs is required with more than one replica: without Redis each node runs its own embedded broker" }}
{{- end }}
{{- if and (eq $redis.subscribeMode "user") (not (include "notify.redisTopology" .)) }}
{{- fail "redis.subscribeMode user subscribes on Redis: it needs redis.url, redis.existingSecret, redis.sentinel.addrs or redis.cluster.addrs" }}
{{- end }}
{{- if and (eq $redis.subscribeMode "sharded") (not $redis.cluster.addrs) }}
{{- fail "redis.subscribeMode sharded uses the sharded pub/sub of a Redis Cluster: it needs redis.cluster.addrs (on one server or Sentinel, use user)" }}
{{- end }}
{{- if gt (int64 .Values.config.maxPublishSize) (int64 .Values.config.sendQueueBytes) }}
{{- fail "config.maxPublishSize must not exceed config.sendQueueBytes: a bigger message could never be delivered" }}
{{- end }}
{{- if lt (include "notify.durationSeconds" .Values.config.pingInterval | atoi) 1 }}
{{- fail "config.pingInterval must be at least 1s" }}
{{- end }}
{{- if and .Values.auth.jwks.urls (lt (include "notify.durationSeconds" .Values.auth.jwks.refresh | atoi) 1) }}
{{- fail "auth.jwks.refresh must be at least 1s" }}
{{- end }}
{{- $pk := .Values.auth.publicKeys }}
{{- if gt (len (compact (list (ternary "inline" "" (not (empty $pk.inline))) $pk.existingSecret $pk.existingConfigMap))) 1 }}
{{- fail "auth.publicKeys: set one of inline, existingSecret or existingConfigMap" }}
{{- end }}
{{- if and (or $pk.existingSecret $pk.existingConfigMap) (empty $pk.keys) }}
{{- fail "auth.publicKeys.keys must list the PEM files to use from the existing Secret or ConfigMap" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not .Values.autoscaling.targetCPUUtilizationPercentage) (not .Values.autoscaling.connections.enabled) }}
{{- fail "autoscaling needs a metric: targetCPUUtilizationPercentage or connections.enabled" }}
{{- end }}
{{- if and .Values.httpRoute.enabled (empty .Values.httpRoute.parentRefs) }}
{{- fail "httpRoute.parentRefs must name the Gateway(s) to attach to" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (lt (int .Values.autoscaling.maxReplicas) (int .Values.autoscaling.minReplicas)) }}
{{- fail "autoscaling.maxReplicas must be >= autoscaling.minReplicas" }}
{{- end }}
{{- end }}
