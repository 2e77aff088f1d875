{{/*
Names, labels and the image reference shared by every template.
*/}}

{{/* The chart's name, at most 63 characters. */}}
{{- define "warden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of resource names: fullnameOverride, else the release name when it already holds
the chart's name, else `<release>-<chart>`. Suffixes (`-controller`, `-router`) are added to it,
so it is kept to 50 characters.
*/}}
{{- define "warden.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "warden.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "warden.controller.fullname" -}}
{{- printf "%s-controller" (include "warden.fullname" .) -}}
{{- end -}}

{{- define "warden.router.fullname" -}}
{{- printf "%s-router" (include "warden.fullname" .) -}}
{{- end -}}

{{- define "warden.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create -}}
{{- default (include "warden.controller.fullname" .) .Values.controller.serviceAccount.name -}}
{{- else -}}
{{- required "controller.serviceAccount.name is required when controller.serviceAccount.create is false" .Values.controller.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "warden.router.serviceAccountName" -}}
{{- if .Values.router.serviceAccount.create -}}
{{- default (include "warden.router.fullname" .) .Values.router.serviceAccount.name -}}
{{- else -}}
{{- required "router.serviceAccount.name is required when router.serviceAccount.create is false" .Values.router.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The router's token Secret: the user's, or the one the chart makes from router.auth.tokens. */}}
{{- define "warden.router.authSecretName" -}}
{{- default (printf "%s-tokens" (include "warden.router.fullname" .)) .Values.router.auth.existingSecret -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "warden.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "warden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: warden
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The selector labels of one component (pass a dict with "ctx" and "component"). */}}
{{- define "warden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "warden.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The labels of one component's pods: its selector labels and the release's. */}}
{{- define "warden.podLabels" -}}
{{ include "warden.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: warden
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* warden's image: `repository@digest` when a digest is given, else `repository:tag`. */}}
{{- define "warden.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The restricted Pod Security Standard for warden's own pods: pod level, then container level.
uid and gid 65532 (distroless' nonroot), RuntimeDefault seccomp, no privilege escalation, no
capabilities, a read-only root filesystem.
*/}}
{{- define "warden.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "warden.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* An HTTP probe (pass a dict with "probe" (the values), "path" and "port"). */}}
{{- define "warden.httpProbe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
initialDelaySeconds: {{ .probe.initialDelaySeconds }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end -}}

{{/*
The controller's permissions on what it reconciles: in a ClusterRole when it watches every
namespace, in a Role per namespace otherwise. Update on the finalizers subresources lets it set
blockOwnerDeletion on the objects it owns where the OwnerReferencesPermissionEnforcement
admission plugin is on.
*/}}
{{- define "warden.controller.rules" -}}
- apiGroups: ["agents.x-k8s.io"]
  resources: ["sandboxes"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["agents.x-k8s.io"]
  resources: ["sandboxes/status"]
  verbs: ["get", "update", "patch"]
- apiGroups: ["extensions.agents.x-k8s.io"]
  resources: ["sandboxtemplates"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["extensions.agents.x-k8s.io"]
  resources: ["sandboxclaims"]
  verbs: ["get", "list", "watch", "update", "patch", "delete"]
- apiGroups: ["extensions.agents.x-k8s.io"]
  resources: ["sandboxclaims/status"]
  verbs: ["get", "update", "patch"]
- apiGroups: ["extensions.agents.x-k8s.io"]
  resources: ["sandboxwarmpools"]
  verbs: ["get", "list", "watch", "update", "patch"]
- apiGroups: ["extensions.agents.x-k8s.io"]
  resources: ["sandboxwarmpools/status", "sandboxwarmpools/scale"]
  verbs: ["get", "update", "patch"]
- apiGroups: ["agents.x-k8s.io"]
  resources: ["sandboxes/finalizers"]
  verbs: ["update"]
- apiGroups: ["extensions.agents.x-k8s.io"]
  resources: ["sandboxtemplates/finalizers", "sandboxclaims/finalizers", "sandboxwarmpools/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["pods", "services", "persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/* Egress every warden component needs: cluster DNS and the API server. */}}
{{- define "warden.networkPolicy.commonEgress" -}}
{{- $np := .Values.networkPolicy -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ $np.dns.namespace }}
      podSelector:
        matchLabels:
          {{- toYaml $np.dns.podLabels | nindent 10 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
- to:
    {{- range $np.apiServer.cidrs }}
    - ipBlock:
        cidr: {{ . | quote }}
    {{- end }}
  ports:
    {{- range $np.apiServer.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end -}}
