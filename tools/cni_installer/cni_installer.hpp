// cni_installer: puts the meshwire CNI plugin and its conflist on a node, the way the DaemonSet's
// init container runs it (`meshwire-install`). Both files are written to a temporary file in the
// destination directory and renamed over the target, so a runtime that execs the plugin or reads
// the conflist at that moment sees the old file or the new one, never a half-written one. A file
// whose bytes and mode already match is left alone (a second run changes nothing, not even the
// mtime). Nothing else in either directory is touched: not other plugins' files, not the
// directories themselves (created when missing, never removed).
#pragma once

#include <string>
#include <vector>

#include "common/result.hpp"

namespace mw::tools {

struct cni_installer_options {
    std::string plugin_source;    // the meshwire binary to install (in the image)
    std::string conflist_source;  // the conflist to install (the ConfigMap's key)
    std::string bin_dir;          // the host's /opt/cni/bin, as mounted
    std::string conf_dir;         // the host's /etc/cni/net.d, as mounted
    std::string conf_name;        // the conflist's file name (sorts where the operator wants it)
};

// What happened to one file.
struct install_action {
    std::string path;
    bool changed = false;  // false: identical already, left alone
};

class cni_installer {
public:
    explicit cni_installer(cni_installer_options o) : opts_(std::move(o)) {}

    // Validates the inputs, then installs the plugin (0755) and the conflist (0644).
    result<std::vector<install_action>> run() const;

    // The conflist checks: a JSON object with cniVersion, name and a non-empty plugins array whose
    // first plugin is meshwire (it must be first: it does not chain on a prevResult). The message
    // names what is wrong.
    static status validate_conflist(const std::string& text);

    // The conf name must be a plain file name ending in .conflist (what CNI runtimes load).
    static status validate_conf_name(const std::string& name);

    // Writes `bytes` as dir/name with `mode` through dir/.name.meshwire-install.tmp + rename,
    // unless dir/name is already a regular file with those bytes and that mode.
    static result<install_action> install_file(const std::string& dir, const std::string& name,
                                               const std::string& bytes, unsigned mode);

private:
    cni_installer_options opts_;
};

}  // namespace mw::tools
