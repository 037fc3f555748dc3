{{/* Names, labels and shared fragments of the recplane chart. */}}

{{- define "recplane.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name; "recplane" alone when the release is called recplane. */}}
{{- define "recplane.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "recplane.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "recplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: recplane
{{- end -}}

{{- define "recplane.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "recplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "recplane.minioSelectorLabels" -}}
app.kubernetes.io/name: {{ include "recplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: minio
{{- end -}}

{{- define "recplane.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "recplane.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false: name an existing ServiceAccount" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag of one component; the tag defaults to the chart's appVersion. */}}
{{- define "recplane.image" -}}
{{- $image := index .root.Values.image .component -}}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag) -}}
{{- end -}}

{{- define "recplane.minioName" -}}
{{- printf "%s-minio" (include "recplane.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The Secret holding accessKey and secretKey of the store. */}}
{{- define "recplane.storeSecretName" -}}
{{- if .Values.store.existingSecret -}}
{{- .Values.store.existingSecret -}}
{{- else -}}
{{- printf "%s-store" (include "recplane.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* host:port of the store; checks that exactly one kind of store is configured. */}}
{{- define "recplane.storeEndpoint" -}}
{{- $store := .Values.store -}}
{{- if and $store.minio.bundled $store.endpoint -}}
{{- fail "store.endpoint and store.minio.bundled=true exclude each other: keep store.endpoint for an external S3/MinIO, or the bundled MinIO" -}}
{{- else if $store.minio.bundled -}}
{{- printf "%s.%s.svc:9000" (include "recplane.minioName" .) .Release.Namespace -}}
{{- else if $store.endpoint -}}
{{- if not $store.existingSecret -}}
{{- fail "store.existingSecret is required with store.endpoint: create a Secret with keys accessKey and secretKey in the release namespace and name it here" -}}
{{- end -}}
{{- $store.endpoint -}}
{{- else -}}
{{- fail "no artifact store configured: set store.endpoint and store.existingSecret for an external S3/MinIO, or store.minio.bundled=true for a bundled MinIO" -}}
{{- end -}}
{{- end -}}

{{/* Environment every recplane process needs to reach the store (same names as recplane.store). */}}
{{- define "recplane.storeEnv" -}}
- name: RECPLANE_STORE
  value: {{ printf "s3://%s" .Values.store.bucket | quote }}
- name: RECPLANE_S3_ENDPOINT
  value: {{ include "recplane.storeEndpoint" . | quote }}
- name: RECPLANE_S3_SECURE
  value: {{ .Values.store.secure | toString | quote }}
- name: RECPLANE_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "recplane.storeSecretName" . }}
      key: accessKey
- name: RECPLANE_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "recplane.storeSecretName" . }}
      key: secretKey
{{- end -}}

{{/* Pod and container security contexts that meet the "restricted" Pod Security Standard. */}}
{{- define "recplane.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "recplane.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}
