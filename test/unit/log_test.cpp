#include <doctest/doctest.h>

#include "common/log.hpp"

using namespace mw;

TEST_CASE("log lines are logfmt with quoted values where needed") {
    auto line = log::format_line(log::level::info, "cni", "pod wired",
                                 {{"container_id", "abc"}, {"error", "a \"b\"\nc"}, {"empty", ""}},
                                 1700000000123LL);
    CHECK(line ==
          "ts=2023-11-14T22:13:20.123Z level=info component=cni msg=\"pod wired\" "
          "container_id=abc error=\"a \\\"b\\\"\\nc\" empty=\"\"\n");
}

TEST_CASE("log levels parse") {
    log::level l;
    CHECK(log::parse_level("debug", l));
    CHECK(l == log::level::debug);
    CHECK(log::parse_level("off", l));
    CHECK_FALSE(log::parse_level("verbose", l));
}
