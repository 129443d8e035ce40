#include "common/wireguard/wg_backend.hpp"

#include <unistd.h>

#include "common/log.hpp"
#include "common/netns.hpp"
#include "common/rtnl.hpp"
#include "common/wireguard/wg_kernel_backend.hpp"
#include "common/wireguard/wg_userspace_backend.hpp"

namespace mw {

bool kernel_wireguard_available(const std::string& netns_path, std::string* why) {
    auto say = [&](std::string s) {
        if (why) *why = std::move(s);
    };
    if (::access("/sys/module/wireguard", F_OK) == 0) {
        say("/sys/module/wireguard exists (module loaded or built in)");
        return true;
    }
    // Not loaded yet: creating a link of kind wireguard makes the kernel load it on demand, and
    // is the only reliable test. A scratch name is used and removed again.
    auto nl = rtnl::open_at(netns_path);
    if (!nl) {
        say("cannot open rtnetlink: " + nl.err().message);
        return false;
    }
    std::string probe = "mwprobe" + std::to_string(::getpid() % 100000);
    auto st = nl->create_link(probe, "wireguard");
    if (!st) {
        say("creating a wireguard link failed: " + st.err().message);
        return false;
    }
    if (auto li = nl->get_link(probe); li) (void)nl->delete_link(li->index);
    say("the kernel created a wireguard link");
    return true;
}

result<std::unique_ptr<wg_backend>> attach_wg_backend(const wg_backend_options& opts) {
    MW_TRY_STATUS(validate_ifname(opts.ifname));
    std::string sock = opts.socket_dir + "/" + opts.ifname + ".sock";
    if (::access(sock.c_str(), F_OK) == 0) {
        return std::unique_ptr<wg_backend>(new wg_userspace_backend(opts));
    }
    auto nl = MW_TRY(rtnl::open_at(opts.netns_path));
    auto link = nl.get_link(opts.ifname);
    if (link && link->kind == "wireguard") {
        return std::unique_ptr<wg_backend>(new wg_kernel_backend(opts));
    }
    return error(errc::not_found, "no WireGuard interface " + opts.ifname + " (no " + sock +
                                      (link ? ", and the link is a \"" + link->kind + "\" link)"
                                            : " and no such link)"));
}

result<std::unique_ptr<wg_backend>> make_wg_backend(std::string_view kind,
                                                    const wg_backend_options& opts) {
    MW_TRY_STATUS(validate_ifname(opts.ifname));
    if (kind == "kernel") return std::unique_ptr<wg_backend>(new wg_kernel_backend(opts));
    if (kind == "userspace") return std::unique_ptr<wg_backend>(new wg_userspace_backend(opts));
    if (kind != "auto") {
        return error(errc::invalid_argument,
                     "wireguard backend must be auto, kernel or userspace, not \"" +
                         std::string(kind) + "\"");
    }
    std::string why;
    if (kernel_wireguard_available(opts.netns_path, &why)) {
        log::info("wireguard backend: kernel", {{"interface", opts.ifname}, {"reason", why}});
        return std::unique_ptr<wg_backend>(new wg_kernel_backend(opts));
    }
    log::info("wireguard backend: userspace (wireguard-go)",
              {{"interface", opts.ifname}, {"reason", "no kernel WireGuard: " + why}});
    return std::unique_ptr<wg_backend>(new wg_userspace_backend(opts));
}

}  // namespace mw
