{{/* Envoy bootstrap for sidecar mode; same shape as k8s/envoy-config.yaml. */}}
{{- define "tollgate.envoyConfig" -}}
admin:
  # Loopback only: the admin API can stop listeners. tollgate's preStop hook drains through it.
  address:
    socket_address: { address: 127.0.0.1, port_value: 9901 }
static_resources:
  listeners:
    - name: tollgate_ingress
      address:
        socket_address: { address: 0.0.0.0, port_value: 10000 }
      per_connection_buffer_limit_bytes: 8388608
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: tollgate_ingress
                codec_type: AUTO
                generate_request_id: true
                always_set_request_id_in_response: true
                access_log:
                  - name: envoy.access_loggers.stdout
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
                      log_format:
                        json_format:
                          start_time: "%START_TIME%"
                          request_id: "%REQ(X-REQUEST-ID)%"
                          traceparent: "%REQ(TRACEPARENT)%"
                          method: "%REQ(:METHOD)%"
                          status: "%RESPONSE_CODE%"
                          response_code_details: "%RESPONSE_CODE_DETAILS%"
                          duration_ms: "%DURATION%"
                          upstream_cluster: "%UPSTREAM_CLUSTER%"
                          tollgate_backend: "%DYNAMIC_METADATA(io.tollgate:backend)%"
                          tollgate_model: "%DYNAMIC_METADATA(io.tollgate:model)%"
                          tollgate_route: "%DYNAMIC_METADATA(io.tollgate:route)%"
                local_reply_config:
                  mappers:
                    - filter:
                        extension_filter:
                          name: envoy.access_loggers.extension_filters.cel
                          typed_config:
                            "@type": type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter
                            expression: "response.code == 413 && response.code_details == 'request_payload_too_large'"
                      body_format_override:
                        text_format_source:
                          inline_string: '{"error":{"message":"request body too large","type":"invalid_request_error","code":"request_too_large","param":null}}'
                        content_type: application/json
                    - filter:
                        extension_filter:
                          name: envoy.access_loggers.extension_filters.cel
                          typed_config:
                            "@type": type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter
                            expression: "response.code_details.startsWith('ext_proc_error')"
                      body_format_override:
                        text_format_source:
                          inline_string: '{"error":{"message":"gateway unavailable: the tollgate processor did not answer","type":"server_error","code":"gateway_unavailable","param":null}}'
                        content_type: application/json
                route_config:
                  name: tollgate_routes
                  virtual_hosts:
                    - name: tollgate
                      domains: ["*"]
                      request_headers_to_remove: [x-tollgate-backend]
                      routes:
{{- range .Values.providers }}
                        - name: backend-{{ .name }}
                          match:
                            prefix: /
                            headers:
                              - name: x-tollgate-backend
                                string_match: { exact: {{ .name | quote }} }
                          route:
                            cluster: provider-{{ .name }}
                            auto_host_rewrite: true
                            timeout: 300s
                            idle_timeout: 120s
                            # Session stickiness (RING_HASH clusters); tollgate keeps these headers.
                            hash_policy:
                              - header: { header_name: x-session-id }
                              - header: { header_name: mcp-session-id }
{{- end }}
                        - name: no-route
                          match: { prefix: / }
                          direct_response:
                            status: 503
                            body:
                              inline_string: '{"error":{"message":"no upstream route: tollgate did not route this request","type":"server_error","code":"no_route","param":null}}'
                          response_headers_to_add:
                            - header: { key: content-type, value: application/json }
                              append_action: OVERWRITE_IF_EXISTS_OR_ADD
                http_filters:
                  - name: envoy.filters.http.ext_proc
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
                      grpc_service:
                        envoy_grpc: { cluster_name: tollgate_ext_proc }
                        timeout: 10s
                      failure_mode_allow: false
                      processing_mode:
                        request_header_mode: SEND
                        request_body_mode: BUFFERED
                        request_trailer_mode: SKIP
                        response_header_mode: SEND
                        response_body_mode: NONE
                        response_trailer_mode: SKIP
                      message_timeout: 2s
                      max_message_timeout: 10s
                      allow_mode_override: true
                      mutation_rules:
                        allow_all_routing: true
                      metadata_options:
                        receiving_namespaces:
                          untyped: [io.tollgate]
                      stat_prefix: tollgate
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
    # Kubelet probes and Prometheus reach Envoy here; only two admin paths are exposed.
    - name: probes
      address:
        socket_address: { address: 0.0.0.0, port_value: 9902 }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: probes
                route_config:
                  virtual_hosts:
                    - name: probes
                      domains: ["*"]
                      routes:
                        - match: { path: /ready }
                          route: { cluster: envoy_admin }
                        - match: { path: /stats/prometheus }
                          route: { cluster: envoy_admin }
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: tollgate_ext_proc
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options:
              connection_keepalive: { interval: 30s, timeout: 5s }
      load_assignment:
        cluster_name: tollgate_ext_proc
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    pipe: { path: /run/tollgate/tollgate.sock }
    - name: envoy_admin
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: envoy_admin
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: { address: 127.0.0.1, port_value: 9901 }
{{- range .Values.providers }}
    - name: provider-{{ .name }}
      type: LOGICAL_DNS
      dns_lookup_family: V4_PREFERRED
      connect_timeout: 5s
      # Health: eject after consecutive 5xx / gateway failures (per Envoy, per host);
      # tollgate's routing.cooldown avoids a failing backend where it has a choice.
      outlier_detection:
        consecutive_5xx: 5
        consecutive_gateway_failure: 3
        interval: 10s
        base_ejection_time: 30s
        max_ejection_percent: 100
      circuit_breakers:
        thresholds:
          - { priority: DEFAULT, max_connections: 1024, max_pending_requests: 1024, max_requests: 1024, max_retries: 8 }
      load_assignment:
        cluster_name: provider-{{ .name }}
        endpoints:
          - lb_endpoints:
              - endpoint:
                  hostname: {{ .host }}
                  address:
                    socket_address: { address: {{ .host }}, port_value: {{ .port }} }
      {{- if .tls }}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: {{ .host }}
          common_tls_context:
            validation_context:
              trusted_ca: { filename: /etc/ssl/certs/ca-certificates.crt }
              # Verify the provider's hostname, not only the chain.
              match_typed_subject_alt_names:
                - san_type: DNS
                  matcher: { exact: {{ .host }} }
      {{- end }}
{{- end }}
{{- end -}}
