{{/* Full name of the release's objects, at most 63 characters. */}}
{{- define "sloserve.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sloserve.labels" -}}
app.kubernetes.io/name: sloserve-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sloserve
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sloserve.selectorLabels" -}}
app.kubernetes.io/name: sloserve-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sloserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sloserve.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sloserve.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The namespaces given a Role, as a JSON list (empty with watchAllNamespaces). */}}
{{- define "sloserve.watchedNamespaces" -}}
{{- if .Values.watchAllNamespaces -}}
[]
{{- else if .Values.watchNamespaces -}}
{{- toJson .Values.watchNamespaces -}}
{{- else -}}
{{- fail "watchNamespaces is empty: list the namespaces to watch, or set watchAllNamespaces=true" -}}
{{- end -}}
{{- end -}}

{{/* Rules for the ModelServices and their children: exactly the verbs the operator uses. */}}
{{- define "sloserve.namespacedRules" -}}
- apiGroups: ["sloserve.io"]
  resources: ["modelservices"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["sloserve.io"]
  resources: ["modelservices/status"]
  verbs: ["get", "patch"]
# Children carry ownerReferences with blockOwnerDeletion: the OwnerReferencesPermissionEnforcement admission
# plugin refuses those unless their creator may update the owner's finalizers.
- apiGroups: ["sloserve.io"]
  resources: ["modelservices/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["podmonitors", "prometheusrules"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- if .Values.routing.enabled }}
# spec.routing: the InferencePools and HTTPRoutes the operator renders (docs/routing.md); granted only when
# enabled, like any kind the operator does not otherwise write.
- apiGroups: ["inference.networking.k8s.io"]
  resources: ["inferencepools"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "create", "patch", "delete"]
{{- end }}
{{- end -}}
