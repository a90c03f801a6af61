{{/*
The ledger's pod template, shared by the StatefulSet (SQLite on its volume) and the
Deployment (PostgreSQL: a writer and standbys). Indented for its place under `spec:`.
*/}}
{{- define "modeltrust.ledger.podTemplate" }}
{{- $auditWriters := prepend .Values.ledger.auth.extraAuditWriters (include "modeltrust.operator.serviceAccountSubject" .) }}
{{- $db := include "modeltrust.ledger.usesDatabase" . }}
{{- $database := default (dict) .Values.ledger.database }}
{{- $replicas := int (include "modeltrust.ledger.replicas" .) }}
{{- $witnesses := default (list) .Values.ledger.witnesses }}
  template:
    metadata:
      labels:
        {{- include "modeltrust.ledger.selectorLabels" . | nindent 8 }}
        {{- with .Values.ledger.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        # The ledger reads its publisher set at start: restart it when the set changes.
        modeltrust.dev/publishers-sha256: {{ include "modeltrust.ledger.publisherKeys" . | sha256sum }}
        {{- with .Values.ledger.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "modeltrust.ledger.serviceAccountName" . }}
      # The ledger calls the TokenReview API to authenticate audit writers.
      automountServiceAccountToken: true
      enableServiceLinks: false
      # Let the sequencer finish its batch and sign the checkpoint before it is killed.
      terminationGracePeriodSeconds: 30
      {{- with .Values.imagePullSecrets }}
      imagePullSecrets:
        {{- range . }}
        - name: {{ . }}
        {{- end }}
      {{- end }}
      {{- with .Values.ledger.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- include "modeltrust.podSecurityContext" . | nindent 8 }}
      containers:
        - name: ledger
          image: {{ include "modeltrust.image" . }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          args:
            - ledger
            - serve
            - --listen=0.0.0.0:{{ .Values.ledger.port }}
            {{- if $db }}
            # The database URL (with its password) comes from the Secret, in the environment
            # (MODELTRUST_LEDGER_DATABASE_URL), never on the command line.
            - --writer-lease={{ $database.writerLease | default 10 }}
            {{- else }}
            - --db=/var/lib/modeltrust/ledger/ledger.db
            {{- if (default (dict) .Values.ledger.writerLease).enabled }}
            # One writer per volume, decided by a Lease and fenced by the writer's own clock.
            - --writer-lease-name={{ include "modeltrust.ledger.fullname" . }}-writer
            - --writer-lease-namespace={{ .Release.Namespace }}
            - --writer-lease={{ .Values.ledger.writerLease.duration | default 8 }}
            {{- end }}
            {{- end }}
            - --key=/etc/modeltrust.dev/ledger-key/{{ .Values.ledger.signingKey.secretKey }}
            - --origin={{ include "modeltrust.ledger.origin" . }}
            - --publishers=/etc/modeltrust.dev/publishers/publishers.pem
            # Audit entries only from these service accounts, checked with TokenReview, and only
            # with tokens issued for the ledger's audience (never a Kubernetes API token).
            {{- range $auditWriters }}
            - --tokenreview-allow={{ . }}
            {{- end }}
            - --tokenreview-audience={{ .Values.ledger.auth.audience }}
            {{- range $witnesses }}
            - --witness
            - {{ include "modeltrust.witness.url" (dict "root" $ "witness" .) }}
            - {{ .verifierKey }}
            {{- end }}
            {{- range .Values.ledger.extraArgs }}
            - {{ . | quote }}
            {{- end }}
          {{- if $db }}
          env:
            - name: MODELTRUST_LEDGER_DATABASE_URL
              valueFrom:
                secretKeyRef:
                  name: {{ $database.existingSecret }}
                  key: {{ $database.secretKey | default "url" }}
          {{- end }}
          ports:
            - name: http
              containerPort: {{ .Values.ledger.port }}
              protocol: TCP
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 3
          {{- if not $db }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            initialDelaySeconds: 10
            periodSeconds: 20
            timeoutSeconds: 5
            failureThreshold: 3
          {{- end }}
          resources:
            {{- toYaml .Values.ledger.resources | nindent 12 }}
          securityContext:
            {{- include "modeltrust.containerSecurityContext" . | nindent 12 }}
          volumeMounts:
            {{- if not $db }}
            - name: data
              mountPath: /var/lib/modeltrust/ledger
            {{- end }}
            - name: signing-key
              mountPath: /etc/modeltrust.dev/ledger-key
              readOnly: true
            - name: publishers
              mountPath: /etc/modeltrust.dev/publishers
              readOnly: true
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: publishers
          configMap:
            name: {{ include "modeltrust.ledger.fullname" . }}-publishers
        - name: signing-key
          secret:
            secretName: {{ .Values.ledger.signingKey.existingSecret }}
            # Readable by the ledger's group (fsGroup) only; never world-readable.
            defaultMode: 0440
            items:
              - key: {{ .Values.ledger.signingKey.secretKey }}
                path: {{ .Values.ledger.signingKey.secretKey }}
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
      {{- with .Values.ledger.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.ledger.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if .Values.ledger.affinity }}
      affinity:
        {{- toYaml .Values.ledger.affinity | nindent 8 }}
      {{- else if and (gt $replicas 1) .Values.ledger.podAntiAffinity }}
      # Writer and standbys on different nodes, so one node's loss leaves a standby.
      affinity:
        {{- include "modeltrust.podAntiAffinity" (dict "mode" .Values.ledger.podAntiAffinity "labels" (include "modeltrust.ledger.selectorLabels" .)) | nindent 8 }}
      {{- end }}
{{- end }}
