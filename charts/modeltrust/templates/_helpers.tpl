{{/* Names. Cluster-scoped objects use the full name, which carries the release name. */}}
{{- define "modeltrust.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modeltrust.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "modeltrust.operator.fullname" -}}
{{- printf "%s-operator" (include "modeltrust.fullname" .) -}}
{{- end -}}

{{- define "modeltrust.ledger.fullname" -}}
{{- printf "%s-ledger" (include "modeltrust.fullname" .) -}}
{{- end -}}

{{- define "modeltrust.ledger.headless" -}}
{{- printf "%s-ledger-headless" (include "modeltrust.fullname" .) -}}
{{- end -}}

{{- define "modeltrust.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "modeltrust.operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- required "operator.serviceAccount.name must name an existing ServiceAccount when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "modeltrust.ledger.serviceAccountName" -}}
{{- include "modeltrust.ledger.fullname" . -}}
{{- end -}}

{{/* Labels. */}}
{{- define "modeltrust.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "modeltrust.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modeltrust
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "modeltrust.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modeltrust.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "modeltrust.operator.selectorLabels" -}}
{{ include "modeltrust.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "modeltrust.ledger.selectorLabels" -}}
{{ include "modeltrust.selectorLabels" . }}
app.kubernetes.io/component: ledger
{{- end -}}

{{/* The image, by digest when one is given. */}}
{{- define "modeltrust.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The ledger's origin (also its note key name). */}}
{{/* The ledger's origin is its checkpoint key's name (the ledger refuses any other). */}}
{{- define "modeltrust.ledger.origin" -}}
{{- first (splitList "+" .Values.ledger.verifierKey) -}}
{{- end -}}

{{/* Every publisher key the ledger accepts, one PEM block after another. */}}
{{- define "modeltrust.ledger.publisherKeys" -}}
{{- $keys := list -}}
{{- if .Values.policy.create -}}
{{- range .Values.policy.publishers }}{{ $keys = append $keys (trim .publicKey) }}{{ end -}}
{{- end -}}
{{- range .Values.ledger.extraPublisherKeys }}{{ $keys = append $keys (trim .) }}{{ end -}}
{{- if not $keys -}}
{{- fail "the ledger needs at least one publisher key: set policy.publishers (with policy.create=true) or ledger.extraPublisherKeys" -}}
{{- end -}}
{{- join "\n" (uniq $keys) -}}
{{- end -}}

{{- define "modeltrust.ledger.url" -}}
{{- default (printf "http://%s.%s.svc:%d" (include "modeltrust.ledger.fullname" .) .Release.Namespace (int .Values.ledger.service.port)) .Values.policy.ledgerUrl -}}
{{- end -}}

{{/* Where the operator's ledger-audience token is mounted. */}}
{{- define "modeltrust.operator.ledgerTokenDir" -}}
/var/run/secrets/modeltrust.dev/ledger-token
{{- end -}}

{{- define "modeltrust.operator.serviceAccountSubject" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "modeltrust.operator.serviceAccountName" .) -}}
{{- end -}}

{{/*
Restricted Pod Security Standard, for every pod and container of the chart. The uid/gid is
the image's non-root user (Dockerfile: USER 65532:65532).
*/}}
{{- define "modeltrust.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "modeltrust.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
The ledger's signing key must be a C2SP note signer key for this ledger's origin, and the
verifier key in the policy must be its public half (same name and key id). Checked at install
time whenever the chart can read the cluster (not under `helm template`).
*/}}
{{- define "modeltrust.ledger.checkKeys" -}}
{{- $secretName := required "ledger.signingKey.existingSecret is required: create the ledger key first (modeltrust ledger keygen; see docs/install.md, \"Ledger key\")" .Values.ledger.signingKey.existingSecret -}}
{{- $verifier := required "ledger.verifierKey is required: the verifier key `modeltrust ledger keygen` printed with the signing key (see docs/install.md, \"Ledger key\")" .Values.ledger.verifierKey -}}
{{- $vparts := regexSplit "\\+" $verifier 3 -}}
{{- if ne (len $vparts) 3 -}}
{{- fail (printf "ledger.verifierKey %q is not a C2SP verifier key (name+hexid+base64)" $verifier) -}}
{{- end -}}
{{- $secrets := lookup "v1" "Secret" .Release.Namespace "" -}}
{{- if $secrets -}}{{/* empty under `helm template` and client dry-runs: nothing to compare */}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace $secretName -}}
{{- if not $secret -}}
{{- fail (printf "Secret %q (ledger.signingKey.existingSecret) does not exist in namespace %q: create it before installing (docs/install.md, \"Ledger key\")" $secretName .Release.Namespace) -}}
{{- end -}}
{{- $data := default (dict) $secret.data -}}
{{- if not (hasKey $data .Values.ledger.signingKey.secretKey) -}}
{{- fail (printf "Secret %q has no key %q (ledger.signingKey.secretKey)" $secretName .Values.ledger.signingKey.secretKey) -}}
{{- end -}}
{{- $sparts := regexSplit "\\+" (trim (b64dec (index $data .Values.ledger.signingKey.secretKey))) 5 -}}
{{- if or (ne (len $sparts) 5) (ne (index $sparts 0) "PRIVATE") (ne (index $sparts 1) "KEY") -}}
{{- fail (printf "Secret %q key %q is not a C2SP note signer key (PRIVATE+KEY+name+hexid+base64)" $secretName .Values.ledger.signingKey.secretKey) -}}
{{- end -}}
{{- if or (ne (index $sparts 2) (index $vparts 0)) (ne (index $sparts 3) (index $vparts 1)) -}}
{{- fail (printf "ledger.verifierKey (%s+%s) is not the public half of the signing key in Secret %q (%s+%s)" (index $vparts 0) (index $vparts 1) $secretName (index $sparts 2) (index $sparts 3)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Every cross-field check, in the order a first-time user meets them. Included by each template
that depends on these values, so the first error is always the most basic one.
*/}}
{{- define "modeltrust.validate" -}}
{{- include "modeltrust.ledger.checkKeys" . -}}
{{- if .Values.policy.create -}}
{{- if not .Values.policy.publishers -}}
{{- fail "policy.publishers is empty: name at least one trusted publisher ({name, publicKey}), or set policy.create=false and create a ModelTrustPolicy yourself (docs/install.md, \"Trust policy\")" -}}
{{- end -}}
{{- if gt (int .Values.policy.threshold) (len .Values.policy.publishers) -}}
{{- fail (printf "policy.threshold (%d) exceeds the number of policy.publishers (%d)" (int .Values.policy.threshold) (len .Values.policy.publishers)) -}}
{{- end -}}
{{- if gt (int .Values.policy.witnessQuorum) (len .Values.policy.witnesses) -}}
{{- fail (printf "policy.witnessQuorum (%d) exceeds the number of policy.witnesses (%d)" (int .Values.policy.witnessQuorum) (len .Values.policy.witnesses)) -}}
{{- end -}}
{{- end -}}
{{- $keys := include "modeltrust.ledger.publisherKeys" . -}}
{{- end -}}
