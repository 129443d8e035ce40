// The last line of defence of a tool's main(): errors below main are values, so what still
// escapes is an exception nothing could handle (bad_alloc and the like). It becomes exit status
// 1 and one line through `report` (the tool's own channel: a health probe's stdout, an
// installer's stderr) instead of std::terminate's abort and core dump.
#pragma once

#include <exception>

namespace mw {

template <class Body, class Report>
int guarded_main(Body&& body, Report&& report) {
    try {
        return body();
    } catch (const std::exception& e) {
        report(e.what());
    } catch (...) {
        report("unknown exception");
    }
    return 1;
}

}  // namespace mw
