// Where meshd reaches the Kubernetes API and how it proves who it is (issue 11 §3). Three ways
// in, in this order of precedence (meshd --help, README "Kubernetes"):
//   kubernetes.apiServer / kubernetes.metaServer   an explicit endpoint, with caFile, certFile +
//                                                  keyFile and/or tokenFile from the config;
//                                                  metaServer is KubeEdge's edge endpoint
//                                                  (EdgeMesh's name; default 127.0.0.1:10550)
//   kubernetes.kubeConfig                          a kubeconfig: current-context's cluster
//                                                  (server, CA file or data) and user (token,
//                                                  tokenFile, client certificate and key)
//   neither                                        in-cluster: KUBERNETES_SERVICE_HOST/PORT,
//                                                  the service account's token and CA
// https is verified against the CA given (else the system's trust store); there is no insecure
// mode. Plain http:// only for a loopback endpoint named explicitly (the edge endpoint's
// unauthenticated default). Files are read and certificates checked here, at startup, so a bad
// path or certificate is an error naming the field; only the token file is read again on every
// request (service account tokens rotate).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace mw::meshd {

struct kube_access {
    bool tls = true;
    std::string host;  // name or IP literal (no brackets)
    uint16_t port = 443;
    std::string ca_pem;             // empty: the system's trust store
    std::string cert_pem, key_pem;  // client certificate (both or neither)
    std::string token;              // a fixed bearer token (kubeconfig `token`)
    std::string token_file;         // read again before each request; wins over `token`
    std::string source;             // for logs: "in-cluster", "kubeconfig /path", ...

    std::string url() const;  // "https://host:port"
};

// What the config says (meshd_config's kubernetes section, copied so this stays testable).
struct kube_settings {
    std::string api_server, meta_server, kube_config;
    std::string ca_file, cert_file, key_file, token_file;
};

// The environment of the in-cluster way in, injected for tests.
struct kube_environment {
    std::optional<std::string> service_host, service_port;  // KUBERNETES_SERVICE_HOST/PORT
    std::string service_account_dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    static kube_environment from_process();
};

// Errors (errc::invalid_argument) name the field: "kubernetes.kubeConfig /etc/k.yaml:
// users[0].user.client-certificate: /nope.crt: No such file or directory".
result<kube_access> resolve_kube_access(const kube_settings& s, const kube_environment& env);

// A kubeconfig's text (yaml) → access; `dir` resolves its relative file paths (kubectl's rule).
// `name` prefixes the messages.
result<kube_access> parse_kubeconfig(std::string_view yaml_text, const std::string& dir,
                                     const std::string& name);

// "https://host[:port]" or "http://loopback[:port]" → tls, host, port. Anything else (a path,
// http to a non-loopback address, a query) is refused with `field` in the message.
status parse_kube_url(std::string_view url, const std::string& field, kube_access& out);

// Checks PEM text: at least one certificate / exactly a private key (OpenSSL), and that a
// certificate and key belong together. Messages name `field`.
status check_pem_certificates(std::string_view pem, const std::string& field);
status check_pem_key_pair(std::string_view cert_pem, std::string_view key_pem,
                          const std::string& cert_field, const std::string& key_field);

}  // namespace mw::meshd
