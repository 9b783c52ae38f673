{{- define "kong.env" -}}
- name: KONG_DATABASE
  value: postgres
- name: KONG_PG_HOST
  value: {{ .Values.pg.host | quote }}
- name: KONG_PG_PORT
  value: {{ .Values.pg.port | quote }}
- name: KONG_PG_DATABASE
  value: {{ .Values.pg.database | quote }}
- name: KONG_PG_USER
  value: {{ .Values.pg.user | quote }}
- name: KONG_PG_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.pg.passwordSecret }}
      key: password
{{- if .Values.pg.schema }}
- name: KONG_PG_SCHEMA
  value: {{ .Values.pg.schema | quote }}
{{- end }}
- name: KONG_PREFIX
  value: /kong_prefix/
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}
{{- define "kong.job" -}}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .root.Release.Name }}-kong-{{ .name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    app.kubernetes.io/name: kong
    app.kubernetes.io/instance: {{ .root.Release.Name | quote }}
    app.kubernetes.io/component: {{ .name }}
  {{- with .annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  backoffLimit: 2
  template:
    spec:
      securityContext:
        {{- toYaml .root.Values.podSecurityContext | nindent 8 }}
      containers:
      - name: kong-{{ .name }}
        image: "{{ .root.Values.image.repository }}:{{ .root.Values.image.tag }}"
        args: [ "kong", "migrations", {{ .action | quote }} ]
        env:
          {{- include "kong.env" .root | nindent 8 }}
        securityContext:
          {{- toYaml .root.Values.containerSecurityContext | nindent 10 }}
        volumeMounts:
        - {name: kong-prefix, mountPath: /kong_prefix/}
        - {name: kong-tmp, mountPath: /tmp}
      volumes:
      - {name: kong-prefix, emptyDir: {}}
      - {name: kong-tmp, emptyDir: {}}
      restartPolicy: OnFailure
{{- end -}}
