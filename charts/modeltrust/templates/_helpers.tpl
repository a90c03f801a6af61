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
{{- end -}}
{{- include "modeltrust.validateHA" . -}}
{{- $keys := include "modeltrust.ledger.publisherKeys" . -}}
{{- end -}}

{{/*
A resource quantity ("1Gi", "1.5G", "500M", 1073741824) in bytes, printed as an integer;
empty for any other form (milli units, exponents), which callers then compare as text.
The API server stores quantities in canonical form ("1024Mi" comes back as "1Gi"), so
stored and given sizes are compared by value, never by spelling.
*/}}
{{- define "modeltrust.quantityBytes" -}}
{{- $q := "" -}}
{{- if kindIs "float64" . -}}{{- $q = printf "%.0f" . -}}{{- else -}}{{- $q = trim (toString .) -}}{{- end -}}
{{- if regexMatch "^([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([KMGTPE]i|[kMGTPE])?$" $q -}}
{{- $number := regexReplaceAll "[^0-9.].*$" $q "" -}}
{{- $suffix := trimPrefix $number $q -}}
{{- $units := dict "" 1.0 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 -}}
{{- printf "%.0f" (mulf (float64 $number) (get $units $suffix)) -}}
{{- end -}}
{{- end -}}

{{/*
The operator's resources. Its scratch volume (/tmp, an emptyDir of operator.scratchSize)
counts against the container's ephemeral storage, so unless operator.resources names
ephemeral-storage itself, the container requests scratchSize (the scheduler then places it
on a node with that much local disk free) and is limited to scratchSize + 512Mi (its logs).
*/}}
{{- define "modeltrust.operator.resources" -}}
{{- $resources := deepCopy (default (dict) .Values.operator.resources) -}}
{{- $requests := default (dict) (get $resources "requests") -}}
{{- $limits := default (dict) (get $resources "limits") -}}
{{- $scratch := include "modeltrust.quantityBytes" .Values.operator.scratchSize -}}
{{- if not (hasKey $requests "ephemeral-storage") -}}
{{- $_ := set $requests "ephemeral-storage" (toString .Values.operator.scratchSize) -}}
{{- end -}}
{{- if and (not (hasKey $limits "ephemeral-storage")) $scratch -}}
{{- $_ := set $limits "ephemeral-storage" (printf "%.0fMi" (addf (ceil (divf $scratch 1048576.0)) 512.0)) -}}
{{- end -}}
{{- $limit := include "modeltrust.quantityBytes" (get $limits "ephemeral-storage" | default "") -}}
{{- if and $scratch $limit (lt (float64 $limit) (float64 $scratch)) -}}
{{- fail (printf "operator.resources.limits.ephemeral-storage (%v) is below operator.scratchSize (%v): the kubelet would evict the operator before its scratch volume is full; raise the limit or lower scratchSize" (get $limits "ephemeral-storage") .Values.operator.scratchSize) -}}
{{- end -}}
{{- $_ := set $resources "requests" $requests -}}
{{- $_ := set $resources "limits" $limits -}}
{{- toYaml $resources -}}
{{- end -}}

{{/*
Storage checks against the cluster, at install and upgrade (lookup sees nothing under
`helm template` and client dry-runs, and then nothing is checked):

- with no storageClassName, the ledger's claim uses the cluster's default StorageClass; when
  the cluster has none and the claim does not exist yet, the claim would stay Pending and
  `helm install --wait` would wait out its whole timeout: refuse, and say what to set;
- a StatefulSet's volumeClaimTemplates cannot change: an upgrade that changes
  ledger.persistence.size, storageClassName or accessModes would be rejected by the API
  server half-way and leave a failed revision: refuse it before anything is applied, and say
  how to resize.
*/}}
{{- define "modeltrust.ledger.checkStorage" -}}
{{- $p := .Values.ledger.persistence -}}
{{- $ns := .Release.Namespace -}}
{{- $sts := include "modeltrust.ledger.fullname" . -}}
{{- $claim := printf "data-%s-0" $sts -}}
{{- if not $p.storageClassName -}}
{{- $classes := lookup "storage.k8s.io/v1" "StorageClass" "" "" -}}
{{- if and $classes (not (lookup "v1" "PersistentVolumeClaim" $ns $claim)) -}}
{{- $names := list -}}
{{- $default := false -}}
{{- range $classes.items -}}
{{- $names = append $names .metadata.name -}}
{{- $a := default (dict) .metadata.annotations -}}
{{- if or (eq (toString (get $a "storageclass.kubernetes.io/is-default-class")) "true") (eq (toString (get $a "storageclass.beta.kubernetes.io/is-default-class")) "true") -}}
{{- $default = true -}}
{{- end -}}
{{- end -}}
{{- if not $default -}}
{{- fail (printf "this cluster has no default StorageClass, and ledger.persistence.storageClassName is empty: the ledger's PersistentVolumeClaim %s/%s would stay Pending and `helm install --wait` would wait until its timeout. Set ledger.persistence.storageClassName to a StorageClass (here: %s), or to \"-\" to bind a PersistentVolume you created (storageClassName \"\", claimRef %s/%s), or make one class the default (kubectl annotate storageclass NAME storageclass.kubernetes.io/is-default-class=true). docs/install.md, \"Storage\"" $ns $claim (default "none" (join ", " $names)) $ns $claim) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $existing := lookup "apps/v1" "StatefulSet" $ns $sts -}}
{{- if $existing -}}
{{- $old := dict -}}
{{- range $existing.spec.volumeClaimTemplates -}}{{- if eq .metadata.name "data" -}}{{- $old = .spec -}}{{- end -}}{{- end -}}
{{- $changes := list -}}
{{- $oldSize := toString (dig "resources" "requests" "storage" "" $old) -}}
{{- $oldBytes := include "modeltrust.quantityBytes" $oldSize -}}
{{- $newBytes := include "modeltrust.quantityBytes" $p.size -}}
{{- $sameSize := ternary (eq $oldBytes $newBytes) (eq $oldSize (toString $p.size)) (and (ne $oldBytes "") (ne $newBytes "")) -}}
{{- if not $sameSize -}}
{{- $changes = append $changes (printf "size %s -> %v" $oldSize $p.size) -}}
{{- end -}}
{{- $oldClass := "" -}}
{{- if hasKey $old "storageClassName" -}}{{- $oldClass = default "-" $old.storageClassName -}}{{- end -}}
{{- if ne $oldClass (toString (default "" $p.storageClassName)) -}}
{{- $changes = append $changes (printf "storageClassName %q -> %q" $oldClass (toString (default "" $p.storageClassName))) -}}
{{- end -}}
{{- if ne (toJson (default (list) $old.accessModes)) (toJson $p.accessModes) -}}
{{- $changes = append $changes (printf "accessModes %s -> %s" (toJson (default (list) $old.accessModes)) (toJson $p.accessModes)) -}}
{{- end -}}
{{- if $changes -}}
{{- fail (printf "ledger.persistence cannot change with helm upgrade (%s): StatefulSet %s/%s exists, and Kubernetes does not let a StatefulSet's volumeClaimTemplates change, so the upgrade would fail half-way. Nothing was changed. To keep the ledger's volume as it is, upgrade with its current values (size %s). To grow it: expand PersistentVolumeClaim %s/%s itself (its StorageClass must allow volume expansion), then `kubectl -n %s delete statefulset %s --cascade=orphan` (the ledger pod and its claim stay) and run this upgrade again. A new storageClassName or accessModes needs a new volume with a copy of the data. docs/install.md, \"Resizing the ledger's volume\"" (join "; " $changes) $ns $sts $oldSize $ns $claim $ns $sts) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The ledger's egress rules (networkPolicy.ledgerEgress; a list, rendered as YAML). The API
server: networkPolicy.ledgerEgress.apiServer when given, else read from the cluster at
install and upgrade time (the `kubernetes` Service's ClusterIP on its port, and the
addresses and port of its EndpointSlice, which is what a CNI sees after the Service's
address is translated); where the chart cannot read the cluster (`helm template`), TCP
443 and 6443 to any address.
*/}}
{{- define "modeltrust.ledger.egressRules" -}}
{{- $egress := default (dict) .Values.networkPolicy.ledgerEgress -}}
{{- $rules := list -}}
{{- if $egress.apiServer -}}
{{- $rules = concat $rules $egress.apiServer -}}
{{- else -}}
{{- $peers := list -}}
{{- $ports := list -}}
{{- $service := lookup "v1" "Service" "default" "kubernetes" -}}
{{- if $service -}}
{{- range (default (list $service.spec.clusterIP) $service.spec.clusterIPs) -}}
{{- $peers = append $peers (dict "ipBlock" (dict "cidr" (printf "%s/%s" . (ternary "128" "32" (contains ":" .))))) -}}
{{- end -}}
{{- range $service.spec.ports -}}
{{- $ports = append $ports (dict "port" (int .port) "protocol" (default "TCP" .protocol)) -}}
{{- end -}}
{{- $slice := lookup "discovery.k8s.io/v1" "EndpointSlice" "default" "kubernetes" -}}
{{- range ($slice.endpoints | default list) -}}
{{- range .addresses -}}
{{- $peers = append $peers (dict "ipBlock" (dict "cidr" (printf "%s/%s" . (ternary "128" "32" (contains ":" .))))) -}}
{{- end -}}
{{- end -}}
{{- range ($slice.ports | default list) -}}
{{- $ports = append $ports (dict "port" (int .port) "protocol" (default "TCP" .protocol)) -}}
{{- end -}}
{{- end -}}
{{- if not $ports -}}
{{- $ports = list (dict "port" 443 "protocol" "TCP") (dict "port" 6443 "protocol" "TCP") -}}
{{- end -}}
{{- if $peers -}}
{{- $rules = append $rules (dict "to" (uniq $peers) "ports" (uniq $ports)) -}}
{{- else -}}
{{- $rules = append $rules (dict "ports" (uniq $ports)) -}}
{{- end -}}
{{- end -}}
{{- $witnesses := default (list) .Values.ledger.witnesses -}}
{{- $db := include "modeltrust.ledger.usesDatabase" . -}}
{{- if or $egress.dns $witnesses $db -}}{{/* witnesses and the database are reached by name */}}
{{- $rules = append $rules (fromYaml (include "modeltrust.dnsEgressRule" .)) -}}
{{- end -}}
{{- if $witnesses -}}
{{- $peer := dict "podSelector" (dict "matchLabels" (fromYaml (include "modeltrust.witnesses.selectorLabels" .))) -}}
{{- $rules = append $rules (dict "to" (list $peer) "ports" (list (dict "port" (int (include "modeltrust.witness.port" .)) "protocol" "TCP"))) -}}
{{- end -}}
{{- if $db -}}
{{- if $egress.database -}}
{{- $rules = concat $rules $egress.database -}}
{{- else -}}
{{- $rules = append $rules (dict "ports" (list (dict "port" 5432 "protocol" "TCP"))) -}}
{{- end -}}
{{- end -}}
{{- $rules = concat $rules (default (list) $egress.extraRules) -}}
{{- toYaml $rules -}}
{{- end -}}

{{/* --- High availability: PostgreSQL storage, standbys, witnesses (docs/install.md, "High availability") --- */}}

{{/* "true" when the ledger keeps its log in PostgreSQL (ledger.database.existingSecret), else "". */}}
{{- define "modeltrust.ledger.usesDatabase" -}}
{{- $db := default (dict) .Values.ledger.database -}}
{{- if $db.existingSecret -}}true{{- end -}}
{{- end -}}

{{- define "modeltrust.ledger.replicas" -}}
{{- int (default 1 .Values.ledger.replicas) -}}
{{- end -}}

{{/* The witnesses the chart runs (ledger.witnesses; a list, empty by default). */}}
{{- define "modeltrust.witnesses" -}}
{{- toJson (default (list) .Values.ledger.witnesses) -}}
{{- end -}}

{{/* Object name of one witness: (dict "root" $ "witness" .). */}}
{{- define "modeltrust.witness.fullname" -}}
{{- printf "%s-witness-%s" (include "modeltrust.fullname" .root) .witness.name -}}
{{- end -}}

{{- define "modeltrust.witness.selectorLabels" -}}
{{ include "modeltrust.selectorLabels" .root }}
app.kubernetes.io/component: witness
modeltrust.dev/witness: {{ .witness.name }}
{{- end -}}

{{/* Every witness pod of the release (PodDisruptionBudget, NetworkPolicy peers). */}}
{{- define "modeltrust.witnesses.selectorLabels" -}}
{{ include "modeltrust.selectorLabels" . }}
app.kubernetes.io/component: witness
{{- end -}}

{{- define "modeltrust.witness.port" -}}
{{- int (default 8081 (default (dict) .Values.witness).port) -}}
{{- end -}}

{{/* Where the ledger reaches one witness (its Service): (dict "root" $ "witness" .). */}}
{{- define "modeltrust.witness.url" -}}
{{- printf "http://%s.%s.svc:%d" (include "modeltrust.witness.fullname" .) .root.Release.Namespace (int (include "modeltrust.witness.port" .root)) -}}
{{- end -}}

{{- define "modeltrust.witness.secretKey" -}}
{{- default "witness-key" (default (dict) .signingKey).secretKey -}}
{{- end -}}

{{/*
Pod anti-affinity that spreads a component's pods over nodes: (dict "mode" "soft"|"hard"|""
"labels" <selector labels YAML>). Soft: preferred, by hostname (the scheduler may still put
them together when it must); hard: required (a pod stays Pending rather than share a node).
*/}}
{{- define "modeltrust.podAntiAffinity" -}}
{{- if eq .mode "hard" -}}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- .labels | nindent 10 }}
{{- else if eq .mode "soft" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- .labels | nindent 12 }}
{{- end -}}
{{- end -}}

{{/*
The policy's witness keys: policy.witnesses and the verifier keys of the witnesses the chart
runs (ledger.witnesses), each once. A JSON list.
*/}}
{{- define "modeltrust.policy.witnesses" -}}
{{- $keys := list -}}
{{- range (default (list) .Values.policy.witnesses) }}{{ $keys = append $keys . }}{{ end -}}
{{- range (default (list) .Values.ledger.witnesses) }}{{ $keys = append $keys .verifierKey }}{{ end -}}
{{- toJson (uniq $keys) -}}
{{- end -}}

{{/*
The checks of the HA values, with what to do about each:
- ledger.replicas above 1 needs PostgreSQL (SQLite has one writer per volume);
- each witness: a unique name short enough for its objects' names, a timestamped
  cosignature verifier key (type 0x04, `modeltrust ledger keygen --witness`), and, where
  the chart can read the cluster, an existing Secret holding the matching signer key;
- policy: a quorum no larger than its witnesses, and maxCosignatureAge only with a quorum.
*/}}
{{- define "modeltrust.validateHA" -}}
{{- $replicas := int (include "modeltrust.ledger.replicas" .) -}}
{{- if and (gt $replicas 1) (not (include "modeltrust.ledger.usesDatabase" .)) -}}
{{- fail (printf "ledger.replicas is %d, but without ledger.database the ledger keeps its log in SQLite on one volume, which has exactly one writer: a second pod would need a volume of its own and fork the log. For standby ledger pods, store the log in PostgreSQL: create a Secret with the postgresql:// URL and set ledger.database.existingSecret (docs/install.md, \"High availability\"); otherwise set ledger.replicas to 1" $replicas) -}}
{{- end -}}
{{- $fullname := include "modeltrust.fullname" . -}}
{{- $names := list -}}
{{- $witnesses := default (list) .Values.ledger.witnesses -}}
{{- $secrets := dict -}}
{{- if $witnesses -}}{{- $secrets = lookup "v1" "Secret" .Release.Namespace "" -}}{{- end -}}
{{- range $i, $w := $witnesses -}}
{{- $name := required (printf "ledger.witnesses[%d].name is required (a short DNS label, e.g. \"a\")" $i) $w.name -}}
{{- if has $name $names -}}
{{- fail (printf "ledger.witnesses: two witnesses are named %q; each needs its own name (and its own key)" $name) -}}
{{- end -}}
{{- $names = append $names $name -}}
{{- $sts := printf "%s-witness-%s" $fullname $name -}}
{{- if gt (len $sts) 52 -}}
{{- fail (printf "witness StatefulSet name %q is %d characters; Kubernetes allows 52 (its pods' controller-revision-hash label adds 11): use a shorter ledger.witnesses[%d].name, or a shorter release name or fullnameOverride" $sts (len $sts) $i) -}}
{{- end -}}
{{- $vkey := required (printf "ledger.witnesses[%d].verifierKey is required: the verifier key `modeltrust ledger keygen --witness` printed with the witness's key" $i) $w.verifierKey -}}
{{- $vparts := regexSplit "\\+" $vkey 3 -}}
{{- if or (ne (len $vparts) 3) (ne (substr 0 1 (b64dec (index $vparts 2))) "\x04") -}}
{{- fail (printf "ledger.witnesses[%d].verifierKey %q is not a witness cosignature key (C2SP, type 0x04): make the witness's key with `modeltrust ledger keygen --witness --origin NAME --out FILE`, which prints it" $i $vkey) -}}
{{- end -}}
{{- $secretName := required (printf "ledger.witnesses[%d].signingKey.existingSecret is required: put the key `modeltrust ledger keygen --witness` wrote in a Secret first (docs/install.md, \"Witness keys\")" $i) (default (dict) $w.signingKey).existingSecret -}}
{{- $secretKey := include "modeltrust.witness.secretKey" $w -}}
{{- if $secrets -}}{{/* empty under `helm template` and client dry-runs: nothing to compare */}}
{{- $secret := lookup "v1" "Secret" $.Release.Namespace $secretName -}}
{{- if not $secret -}}
{{- fail (printf "Secret %q (ledger.witnesses[%d].signingKey.existingSecret) does not exist in namespace %q: create it before installing (docs/install.md, \"Witness keys\")" $secretName $i $.Release.Namespace) -}}
{{- end -}}
{{- $data := default (dict) $secret.data -}}
{{- if not (hasKey $data $secretKey) -}}
{{- fail (printf "Secret %q has no key %q (ledger.witnesses[%d].signingKey.secretKey)" $secretName $secretKey $i) -}}
{{- end -}}
{{- $sparts := regexSplit "\\+" (trim (b64dec (index $data $secretKey))) 5 -}}
{{- if or (ne (len $sparts) 5) (ne (index $sparts 0) "PRIVATE") (ne (index $sparts 1) "KEY") -}}
{{- fail (printf "Secret %q key %q is not a C2SP note signer key (PRIVATE+KEY+name+hexid+base64)" $secretName $secretKey) -}}
{{- end -}}
{{- if or (ne (index $sparts 2) (index $vparts 0)) (ne (index $sparts 3) (index $vparts 1)) -}}
{{- fail (printf "ledger.witnesses[%d].verifierKey (%s+%s) is not the public half of the key in Secret %q (%s+%s)" $i (index $vparts 0) (index $vparts 1) $secretName (index $sparts 2) (index $sparts 3)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if .Values.policy.create -}}
{{- $witnesses := fromJsonArray (include "modeltrust.policy.witnesses" .) -}}
{{- if gt (int .Values.policy.witnessQuorum) (len $witnesses) -}}
{{- fail (printf "policy.witnessQuorum (%d) exceeds the number of witnesses the policy knows (%d: policy.witnesses and ledger.witnesses)" (int .Values.policy.witnessQuorum) (len $witnesses)) -}}
{{- end -}}
{{- if and .Values.policy.maxCosignatureAge (lt (int .Values.policy.witnessQuorum) 1) -}}
{{- fail "policy.maxCosignatureAge needs policy.witnessQuorum of at least 1: an age limit on cosignatures nobody requires would check nothing" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Egress to the cluster's DNS (kube-dns pods, UDP and TCP 53), as one NetworkPolicyEgressRule. */}}
{{- define "modeltrust.dnsEgressRule" -}}
to:
  - namespaceSelector: {}
    podSelector:
      matchLabels:
        k8s-app: kube-dns
ports:
  - port: 53
    protocol: UDP
  - port: 53
    protocol: TCP
{{- end -}}

{{/* A duration as the policy writes it ("1h", "10m", "90s", "1h30m") in whole seconds. */}}
{{- define "modeltrust.durationSeconds" -}}
{{- $d := toString . -}}
{{- $h := regexFind "[0-9]+h" $d | trimSuffix "h" | default "0" | int -}}
{{- $m := regexFind "[0-9]+m" $d | trimSuffix "m" | default "0" | int -}}
{{- $s := regexFind "[0-9]+s" $d | trimSuffix "s" | default "0" | int -}}
{{- add (mul $h 3600) (mul $m 60) $s -}}
{{- end -}}

{{/* spec.ledger.mirrors of the chart's policy: this release's witnesses (when the policy
reads this release's ledger), then policy.ledgerMirrors; a JSON list. */}}
{{- define "modeltrust.policy.mirrors" -}}
{{- $mirrors := list -}}
{{- if not .Values.policy.ledgerUrl -}}
{{- range default (list) .Values.ledger.witnesses -}}
{{- $mirrors = append $mirrors (include "modeltrust.witness.url" (dict "root" $ "witness" .)) -}}
{{- end -}}
{{- end -}}
{{- range default (list) .Values.policy.ledgerMirrors -}}
{{- if not (has . $mirrors) -}}{{- $mirrors = append $mirrors . -}}{{- end -}}
{{- end -}}
{{- toJson $mirrors -}}
{{- end -}}
