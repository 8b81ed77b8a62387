{{/* Names and labels shared by every template. */}}

{{- define "spam-serving.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "spam-serving.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "spam-serving.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "spam-serving.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "spam-serving.selectorLabels" -}}
app.kubernetes.io/name: {{ include "spam-serving.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "spam-serving.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "spam-serving.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: spam-mlops
spam-mlops/environment: {{ .Values.environment }}
{{- end -}}

{{- define "spam-serving.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "spam-serving.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, or repository@digest when a digest pins the image. Arg: dict root image */}}
{{- define "spam-serving.image" -}}
{{- $img := .image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" .root.Values.image.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" .root.Values.image.repository (required "image.tag is required" $img.tag) -}}
{{- end -}}
{{- end -}}

{{- define "spam-serving.apiKeysSecretName" -}}
{{- if eq .Values.apiKeys.source "existingSecret" -}}
{{- required "apiKeys.existingSecret is required when apiKeys.source=existingSecret" .Values.apiKeys.existingSecret -}}
{{- else -}}
{{- printf "%s-api-keys" (include "spam-serving.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/*
The pod template of the stable and the canary Deployment.
Args: dict "root" $ "track" "stable"|"canary" "image" (dict tag digest)
*/}}
{{- define "spam-serving.podTemplate" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
metadata:
  labels:
    {{- include "spam-serving.labels" $root | nindent 4 }}
    spam-mlops/track: {{ .track }}
    {{- if $v.serviceAccount.workloadIdentityClientId }}
    azure.workload.identity/use: "true"
    {{- end }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "spam-serving.serviceAccountName" $root }}
  # the service never calls the Kubernetes API; the CSI driver mounts Key Vault secrets
  automountServiceAccountToken: false
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: spam-serving
      image: {{ include "spam-serving.image" (dict "root" $root "image" .image) }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      securityContext:
        {{- toYaml $v.securityContext | nindent 8 }}
      ports:
        - name: http
          containerPort: {{ $v.containerPort }}
          protocol: TCP
      envFrom:
        - configMapRef:
            name: {{ include "spam-serving.fullname" $root }}
      env:
        - name: SPAM_API_KEYS_FILE
          value: {{ printf "%s/api-keys" $v.apiKeys.mountPath | quote }}
        - name: SPAM_SERVE_WORKERS
          value: {{ $v.workers | quote }}
        - name: SPAM_SERVE_TRACK
          value: {{ .track | quote }}
      startupProbe:
        httpGet:
          path: {{ $v.probes.startup.path }}
          port: http
        periodSeconds: {{ $v.probes.startup.periodSeconds }}
        failureThreshold: {{ $v.probes.startup.failureThreshold }}
        timeoutSeconds: {{ $v.probes.startup.timeoutSeconds }}
      livenessProbe:
        httpGet:
          path: {{ $v.probes.liveness.path }}
          port: http
        periodSeconds: {{ $v.probes.liveness.periodSeconds }}
        failureThreshold: {{ $v.probes.liveness.failureThreshold }}
        timeoutSeconds: {{ $v.probes.liveness.timeoutSeconds }}
      readinessProbe:
        httpGet:
          path: {{ $v.probes.readiness.path }}
          port: http
        periodSeconds: {{ $v.probes.readiness.periodSeconds }}
        failureThreshold: {{ $v.probes.readiness.failureThreshold }}
        timeoutSeconds: {{ $v.probes.readiness.timeoutSeconds }}
      resources:
        {{- toYaml $v.resources | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        - name: spam-home
          mountPath: /home/bentoml/spam
        - name: api-keys
          mountPath: {{ $v.apiKeys.mountPath }}
          readOnly: true
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 256Mi
    - name: spam-home
      {{- if $v.persistence.existingClaim }}
      persistentVolumeClaim:
        claimName: {{ $v.persistence.existingClaim }}
      {{- else }}
      emptyDir:
        sizeLimit: {{ $v.persistence.emptyDirSizeLimit }}
      {{- end }}
    - name: api-keys
      {{- if eq $v.apiKeys.source "csi" }}
      csi:
        driver: secrets-store.csi.k8s.io
        readOnly: true
        volumeAttributes:
          secretProviderClass: {{ include "spam-serving.fullname" $root }}
      {{- else }}
      secret:
        secretName: {{ include "spam-serving.apiKeysSecretName" $root }}
        defaultMode: 0400
      {{- end }}
  {{- if $v.topologySpread.enabled }}
  topologySpreadConstraints:
    - maxSkew: {{ $v.topologySpread.maxSkew }}
      topologyKey: topology.kubernetes.io/zone
      whenUnsatisfiable: ScheduleAnyway
      labelSelector:
        matchLabels:
          {{- include "spam-serving.selectorLabels" $root | nindent 10 }}
          spam-mlops/track: {{ .track }}
  {{- end }}
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
