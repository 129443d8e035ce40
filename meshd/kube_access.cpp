#include "meshd/kube_access.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sodium.h>
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include "common/ip_address.hpp"

namespace mw::meshd {

namespace {

error invalid(const std::string& msg) {
    return error(errc::invalid_argument, msg);
}

// A file's whole content, or an error naming the field and the path.
result<std::string> read_file(const std::string& path, const std::string& field) {
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        int e = errno;
        return invalid(field + ": " + path + ": " + std::strerror(e ? e : ENOENT));
    }
    std::ostringstream ss;
    ss << f.rdbuf();
    if (f.bad()) return invalid(field + ": " + path + ": cannot be read");
    return ss.str();
}

result<std::string> base64_decode(const std::string& text, const std::string& field) {
    std::string out(text.size(), '\0');
    size_t len = 0;
    if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                          text.size(), " \t\r\n", &len, nullptr,
                          sodium_base64_VARIANT_ORIGINAL) != 0) {
        return invalid(field + ": is not base64");
    }
    out.resize(len);
    return out;
}

std::string openssl_reason() {
    unsigned long e = ERR_get_error();
    ERR_clear_error();
    if (e == 0) return "no PEM data";
    const char* r = ERR_reason_error_string(e);
    return r ? r : "unknown OpenSSL error";
}

struct bio_free {
    void operator()(BIO* b) const { BIO_free(b); }
};
struct x509_free {
    void operator()(X509* x) const { X509_free(x); }
};
struct pkey_free {
    void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using bio_ptr = std::unique_ptr<BIO, bio_free>;
using x509_ptr = std::unique_ptr<X509, x509_free>;
using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_free>;

bio_ptr mem_bio(std::string_view s) {
    return bio_ptr(BIO_new_mem_buf(s.data(), static_cast<int>(s.size())));
}

bool is_loopback_host(const std::string& host) {
    if (host == "localhost") return true;
    auto a = ip_address::parse(host);
    if (!a) return false;
    if (a->is_v4()) return (a->to_u128() >> 24 & 0xff) == 127;
    return a->to_u128() == 1;
}

// kubeconfig helpers: a named entry of clusters/contexts/users.
YAML::Node find_named(const YAML::Node& list, const std::string& list_name, const std::string& name,
                      const std::string& what, std::string& path_out) {
    if (!list || !list.IsSequence()) return YAML::Node();
    for (size_t i = 0; i < list.size(); ++i) {
        const YAML::Node& e = list[i];
        if (e.IsMap() && e["name"] && e["name"].IsScalar() && e["name"].as<std::string>() == name) {
            path_out = list_name + "[" + std::to_string(i) + "]." + what;
            return e[what];
        }
    }
    return YAML::Node();
}

std::string scalar(const YAML::Node& m, const char* key) {
    const YAML::Node n = m[key];
    return n && n.IsScalar() ? n.as<std::string>() : std::string();
}

std::string relative_to(const std::string& dir, const std::string& p) {
    if (p.empty() || p[0] == '/' || dir.empty()) return p;
    return dir + "/" + p;
}

// A user's PEM (client-certificate, client-key) and the field it came from, for errors.
struct user_pem_source {
    std::string pem;    // empty: neither field is set
    std::string field;  // "<kubeconfig>: users[i].user.<key>[-data]"
};

// kubectl's two ways to give a user's PEM: inline as `<key>-data` (base64, preferred when both
// are set) or as the file `<key>` (relative to the kubeconfig's directory).
result<user_pem_source> user_pem(const YAML::Node& u, const std::string& key,
                                 const std::string& where, const std::string& dir) {
    user_pem_source out;
    if (auto d = scalar(u, (key + "-data").c_str()); !d.empty()) {
        out.field = where + "." + key + "-data";
        out.pem = MW_TRY(base64_decode(d, out.field));
    } else if (auto p = scalar(u, key.c_str()); !p.empty()) {
        out.field = where + "." + key;
        out.pem = MW_TRY(read_file(relative_to(dir, p), out.field));
    }
    return out;
}

}  // namespace

std::string kube_access::url() const {
    bool v6 = host.find(':') != std::string::npos;
    return std::string(tls ? "https://" : "http://") + (v6 ? "[" + host + "]" : host) + ":" +
           std::to_string(port);
}

kube_environment kube_environment::from_process() {
    kube_environment e;
    if (const char* h = std::getenv("KUBERNETES_SERVICE_HOST")) e.service_host = h;
    if (const char* p = std::getenv("KUBERNETES_SERVICE_PORT")) e.service_port = p;
    return e;
}

status parse_kube_url(std::string_view url, const std::string& field, kube_access& out) {
    const std::string u(url);
    std::string_view rest;
    if (url.rfind("https://", 0) == 0) {
        out.tls = true;
        rest = url.substr(8);
    } else if (url.rfind("http://", 0) == 0) {
        out.tls = false;
        rest = url.substr(7);
    } else {
        return invalid(field + ": \"" + u + "\" is not an https:// URL");
    }
    // A trailing "/" is fine; a path prefix, query or user info is not supported.
    if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
    if (rest.find_first_of("/?#@") != std::string_view::npos)
        return invalid(field + ": \"" + u + "\": only scheme://host[:port] is supported");
    std::string host;
    std::string_view port_text;
    if (!rest.empty() && rest[0] == '[') {
        auto close = rest.find(']');
        if (close == std::string_view::npos)
            return invalid(field + ": \"" + u + "\": unclosed [ in the host");
        host = std::string(rest.substr(1, close - 1));
        auto after = rest.substr(close + 1);
        if (!after.empty()) {
            if (after[0] != ':') return invalid(field + ": \"" + u + "\": bad port");
            port_text = after.substr(1);
        }
    } else {
        auto colon = rest.find(':');
        host = std::string(rest.substr(0, colon));
        if (colon != std::string_view::npos) port_text = rest.substr(colon + 1);
    }
    if (host.empty()) return invalid(field + ": \"" + u + "\" has no host");
    out.host = host;
    out.port = out.tls ? 443 : 80;
    if (!port_text.empty()) {
        unsigned long p = 0;
        for (char c : port_text) {
            if (c < '0' || c > '9' || p > 65535)
                return invalid(field + ": \"" + u + "\": bad port");
            p = p * 10 + static_cast<unsigned>(c - '0');
        }
        if (p == 0 || p > 65535) return invalid(field + ": \"" + u + "\": bad port");
        out.port = static_cast<uint16_t>(p);
    }
    if (!out.tls && !is_loopback_host(host)) {
        return invalid(field + ": \"" + u +
                       "\": plain http:// is only accepted for a loopback address "
                       "(127.0.0.1, ::1, localhost); use https://");
    }
    return {};
}

status check_pem_certificates(std::string_view pem, const std::string& field) {
    ERR_clear_error();
    auto b = mem_bio(pem);
    x509_ptr first(PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr));
    if (!first) return invalid(field + ": is not a PEM certificate (" + openssl_reason() + ")");
    ERR_clear_error();
    return {};
}

status check_pem_key_pair(std::string_view cert_pem, std::string_view key_pem,
                          const std::string& cert_field, const std::string& key_field) {
    MW_TRY_STATUS(check_pem_certificates(cert_pem, cert_field));
    ERR_clear_error();
    auto kb = mem_bio(key_pem);
    pkey_ptr key(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
    if (!key) return invalid(key_field + ": is not a PEM private key (" + openssl_reason() + ")");
    auto cb = mem_bio(cert_pem);
    x509_ptr cert(PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr));
    if (!cert || X509_check_private_key(cert.get(), key.get()) != 1) {
        ERR_clear_error();
        return invalid(key_field + ": does not belong to the certificate of " + cert_field);
    }
    ERR_clear_error();
    return {};
}

result<kube_access> parse_kubeconfig(std::string_view text, const std::string& dir,
                                     const std::string& name) {
    YAML::Node root;
    try {
        root = YAML::Load(std::string(text));
    } catch (const YAML::Exception& e) {
        return error(errc::parse_error, name + ": not YAML: " + e.what());
    }
    if (!root.IsMap()) return invalid(name + ": not a kubeconfig (no mapping at the top)");
    try {
        const std::string ctx_name = scalar(root, "current-context");
        if (ctx_name.empty()) return invalid(name + ": current-context: is not set");
        std::string ctx_path;
        YAML::Node ctx = find_named(root["contexts"], "contexts", ctx_name, "context", ctx_path);
        if (!ctx || !ctx.IsMap())
            return invalid(name + ": current-context: no context named \"" + ctx_name + "\"");
        const std::string cluster_name = scalar(ctx, "cluster");
        const std::string user_name = scalar(ctx, "user");
        std::string cl_path, user_path;
        YAML::Node cl = find_named(root["clusters"], "clusters", cluster_name, "cluster", cl_path);
        if (!cl || !cl.IsMap())
            return invalid(name + ": " + ctx_path + ".cluster: no cluster named \"" + cluster_name +
                           "\"");
        kube_access a;
        a.source = "kubeconfig " + name;
        const std::string server = scalar(cl, "server");
        if (server.empty()) return invalid(name + ": " + cl_path + ".server: is not set");
        MW_TRY_STATUS(parse_kube_url(server, name + ": " + cl_path + ".server", a));
        if (cl["insecure-skip-tls-verify"] && cl["insecure-skip-tls-verify"].IsScalar() &&
            cl["insecure-skip-tls-verify"].as<std::string>() == "true") {
            return invalid(name + ": " + cl_path +
                           ".insecure-skip-tls-verify: is not supported (meshd always verifies "
                           "the API server; give certificate-authority-data)");
        }
        if (auto d = scalar(cl, "certificate-authority-data"); !d.empty()) {
            const std::string f = name + ": " + cl_path + ".certificate-authority-data";
            a.ca_pem = MW_TRY(base64_decode(d, f));
            MW_TRY_STATUS(check_pem_certificates(a.ca_pem, f));
        } else if (auto p = scalar(cl, "certificate-authority"); !p.empty()) {
            const std::string f = name + ": " + cl_path + ".certificate-authority";
            a.ca_pem = MW_TRY(read_file(relative_to(dir, p), f));
            MW_TRY_STATUS(check_pem_certificates(a.ca_pem, f + " " + relative_to(dir, p)));
        }
        if (!user_name.empty()) {
            YAML::Node u = find_named(root["users"], "users", user_name, "user", user_path);
            if (!u || !u.IsMap())
                return invalid(name + ": " + ctx_path + ".user: no user named \"" + user_name +
                               "\"");
            for (const char* unsupported : {"exec", "auth-provider", "username", "password"}) {
                if (u[unsupported]) {
                    return invalid(name + ": " + user_path + "." + unsupported +
                                   ": is not supported by meshd (use a token, tokenFile or a "
                                   "client certificate)");
                }
            }
            a.token = scalar(u, "token");
            if (auto p = scalar(u, "tokenFile"); !p.empty()) {
                a.token_file = relative_to(dir, p);
                MW_TRY(read_file(a.token_file, name + ": " + user_path + ".tokenFile"));
            }
            const auto cert =
                MW_TRY(user_pem(u, "client-certificate", name + ": " + user_path, dir));
            const auto key = MW_TRY(user_pem(u, "client-key", name + ": " + user_path, dir));
            a.cert_pem = cert.pem;
            a.key_pem = key.pem;
            if (a.cert_pem.empty() != a.key_pem.empty()) {
                return invalid(name + ": " + user_path + ": " +
                               (a.cert_pem.empty() ? "client-key without client-certificate"
                                                   : "client-certificate without client-key"));
            }
            if (!a.cert_pem.empty())
                MW_TRY_STATUS(check_pem_key_pair(a.cert_pem, a.key_pem, cert.field, key.field));
        }
        return a;
    } catch (const YAML::Exception& e) {
        return error(errc::parse_error, name + ": " + e.what());
    }
}

result<kube_access> resolve_kube_access(const kube_settings& s, const kube_environment& env) {
    kube_access a;
    const bool explicit_endpoint = !s.api_server.empty() || !s.meta_server.empty();
    if (explicit_endpoint) {
        const std::string field =
            !s.api_server.empty() ? "kubernetes.apiServer" : "kubernetes.metaServer";
        MW_TRY_STATUS(
            parse_kube_url(!s.api_server.empty() ? s.api_server : s.meta_server, field, a));
        a.source = field + " " + a.url();
    } else if (!s.kube_config.empty()) {
        auto text = MW_TRY(read_file(s.kube_config, "kubernetes.kubeConfig"));
        auto slash = s.kube_config.rfind('/');
        std::string dir = slash == std::string::npos ? "." : s.kube_config.substr(0, slash);
        a = MW_TRY(parse_kubeconfig(text, dir, "kubernetes.kubeConfig " + s.kube_config));
    } else {
        if (!env.service_host || env.service_host->empty()) {
            return invalid(
                "kubernetes: none of apiServer, metaServer or kubeConfig is set, and "
                "KUBERNETES_SERVICE_HOST is unset (meshd is not in a pod): set one of them");
        }
        std::string host = *env.service_host;
        if (host.find(':') != std::string::npos) host = "[" + host + "]";
        std::string port = env.service_port.value_or("443");
        MW_TRY_STATUS(parse_kube_url("https://" + host + ":" + port, "KUBERNETES_SERVICE_HOST", a));
        a.source = "in-cluster " + a.url();
        const std::string ca = env.service_account_dir + "/ca.crt";
        a.ca_pem = MW_TRY(read_file(ca, "in-cluster service account CA"));
        MW_TRY_STATUS(check_pem_certificates(a.ca_pem, "in-cluster service account CA " + ca));
        a.token_file = env.service_account_dir + "/token";
        MW_TRY(read_file(a.token_file, "in-cluster service account token"));
    }
    // The config's files add to (and override) what the way in gave.
    if (!s.ca_file.empty()) {
        a.ca_pem = MW_TRY(read_file(s.ca_file, "kubernetes.caFile"));
        MW_TRY_STATUS(check_pem_certificates(a.ca_pem, "kubernetes.caFile " + s.ca_file));
    }
    if (s.cert_file.empty() != s.key_file.empty()) {
        return invalid(std::string("kubernetes: ") + (s.cert_file.empty()
                                                          ? "keyFile without certFile"
                                                          : "certFile without keyFile"));
    }
    if (!s.cert_file.empty()) {
        a.cert_pem = MW_TRY(read_file(s.cert_file, "kubernetes.certFile"));
        a.key_pem = MW_TRY(read_file(s.key_file, "kubernetes.keyFile"));
        MW_TRY_STATUS(check_pem_key_pair(a.cert_pem, a.key_pem,
                                         "kubernetes.certFile " + s.cert_file,
                                         "kubernetes.keyFile " + s.key_file));
    }
    if (!s.token_file.empty()) {
        a.token_file = s.token_file;
        MW_TRY(read_file(s.token_file, "kubernetes.tokenFile"));
    }
    if (!a.tls && (!a.cert_pem.empty() || !a.token.empty() || !a.token_file.empty())) {
        return invalid(
            "kubernetes: credentials are never sent over plain http://; use https:// for " +
            a.url());
    }
    return a;
}

}  // namespace mw::meshd
