// The on-disk record cache (meshd/record_cache.hpp): its file format (round trip, MAC, bounds),
// the lifetime accounting across a restart (same boot, another boot, a wall clock behind),
// unusable files (corrupt, truncated, oversized, another version, another PSK), the atomic
// save and set-aside, the writer thread (background_writer: latest wins, callbacks on the
// core's io_context, stop() runs what waits), and the import into a real node core (verified again:
// revoked, own and forged records refused; the cache never extends a lifetime).
#include <doctest/doctest.h>
#include <sodium.h>
#include <sys/stat.h>

#include <boost/asio.hpp>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <thread>

#include "meshd/background_writer.hpp"
#include "meshd/core/node_core.hpp"
#include "meshd/record_cache.hpp"
#include "meshd/record_cache_writer.hpp"
#include "meshd_test_util.hpp"

using meshd_test::ep;
using namespace mw;
using namespace mw::meshd;
using meshd_test::identity;
using meshd_test::record;
using meshd_test::t0;
using meshd_test::tmp_dir;

namespace {

cache_key key_of(std::string_view psk) {
    return record_cache::key_from_psk(
        std::span(reinterpret_cast<const uint8_t*>(psk.data()), psk.size()));
}

const cache_key k_key = key_of("0123456789abcdef0123456789abcdef");

cache_clock clock_at(uint8_t boot, uint64_t boottime_ms, uint64_t unix_ms) {
    cache_clock c;
    c.boot.fill(boot);
    c.boottime_ms = boottime_ms;
    c.unix_ms = unix_ms;
    return c;
}

std::vector<cached_record> cache_sample() {
    return {cached_record{record(1, 5, 600'000), 500'000, ep("192.168.1.1:51820")},
            cached_record{record(2, 7, 600'000), 100'000, std::nullopt},
            cached_record{record(3, 9, 600'000), 300'000, ep("[2001:db8::3]:51820")}};
}

std::vector<uint8_t> read_file(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void write_file(const std::string& p, const std::vector<uint8_t>& b) {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

}  // namespace

TEST_CASE("record cache: round trip keeps records and hints, the time since the save counts") {
    record_cache c("/nonexistent", k_key, 100);
    const auto saved = clock_at(1, 50'000, t0);
    auto bytes = c.encode(cache_sample(), saved);
    // Same boot, 60 s later on CLOCK_BOOTTIME (the wall clock says an hour: not used).
    auto got = c.decode(bytes, clock_at(1, 110'000, t0 + 3'600'000));
    REQUIRE(got);
    CHECK(got->basis == elapsed_basis::boot_clock);
    CHECK(got->elapsed_ms == 60'000);
    CHECK(got->expired == 0);
    REQUIRE(got->records.size() == 3);
    auto want = cache_sample();
    for (size_t i = 0; i < 3; ++i) {
        CHECK(got->records[i].record.same_content(want[i].record));
        CHECK(got->records[i].record.sig == want[i].record.sig);
        CHECK(got->records[i].remaining_ms == want[i].remaining_ms - 60'000);
        CHECK(got->records[i].hint == want[i].hint);
    }
    // Empty caches too.
    auto none = c.decode(c.encode({}, saved), saved);
    REQUIRE(none);
    CHECK(none->records.empty());
}

TEST_CASE("record cache: expiry accounting across restarts never extends a lifetime") {
    record_cache c("/nonexistent", k_key, 100);
    const auto saved = clock_at(1, 50'000, t0);
    const auto bytes = c.encode(cache_sample(), saved);

    SUBCASE("same boot: what ran out is dropped and counted") {
        auto got = c.decode(bytes, clock_at(1, 50'000 + 300'000, t0));
        REQUIRE(got);
        // 500 s left -> 200 s; 100 s and 300 s (exactly run out) are gone.
        REQUIRE(got->records.size() == 1);
        CHECK(got->records[0].record.name == "node-1");
        CHECK(got->records[0].remaining_ms == 200'000);
        CHECK(got->expired == 2);
    }
    SUBCASE("another boot: the wall clock difference") {
        auto got = c.decode(bytes, clock_at(2, 1'000, t0 + 150'000));
        REQUIRE(got);
        CHECK(got->basis == elapsed_basis::wall_clock);
        CHECK(got->elapsed_ms == 150'000);
        REQUIRE(got->records.size() == 2);
        CHECK(got->records[0].remaining_ms == 350'000);
        CHECK(got->records[1].remaining_ms == 150'000);
        CHECK(got->expired == 1);
    }
    SUBCASE("another boot, the wall clock behind the save: counted as 0, never added") {
        auto got = c.decode(bytes, clock_at(2, 1'000, t0 - 86'400'000));
        REQUIRE(got);
        CHECK(got->basis == elapsed_basis::wall_clock_behind);
        CHECK(got->elapsed_ms == 0);
        REQUIRE(got->records.size() == 3);
        auto want = cache_sample();
        for (size_t i = 0; i < 3; ++i) CHECK(got->records[i].remaining_ms == want[i].remaining_ms);
    }
    SUBCASE("same boot, CLOCK_BOOTTIME reading behind: nothing passed, nothing added") {
        auto got = c.decode(bytes, clock_at(1, 10'000, t0));
        REQUIRE(got);
        CHECK(got->elapsed_ms == 0);
        CHECK(got->records[0].remaining_ms == 500'000);
    }
    SUBCASE("a remaining lifetime above the signed one is cut to it") {
        std::vector<cached_record> v{cached_record{record(4, 1, 60'000), 3'600'000, {}}};
        auto got = c.decode(c.encode(v, saved), clock_at(1, 60'000, t0));
        REQUIRE(got);
        REQUIRE(got->records.size() == 1);
        CHECK(got->records[0].remaining_ms == 50'000);  // 60 s lifetime, 10 s passed
    }
    SUBCASE("elapsed_since on its own") {
        elapsed_basis b{};
        CHECK(elapsed_since(saved, clock_at(1, 51'000, 0), &b) == 1'000);
        CHECK(b == elapsed_basis::boot_clock);
        CHECK(elapsed_since(saved, clock_at(3, 0, t0 + 5), &b) == 5);
        CHECK(b == elapsed_basis::wall_clock);
        CHECK(elapsed_since(saved, clock_at(3, 999'999, t0 - 1), &b) == 0);
        CHECK(b == elapsed_basis::wall_clock_behind);
    }
}

TEST_CASE("record cache: corrupt, truncated, foreign, oversized and other-PSK files are refused") {
    record_cache c("/nonexistent", k_key, 100);
    const auto saved = clock_at(1, 50'000, t0);
    const auto good = c.encode(cache_sample(), saved);
    REQUIRE(c.decode(good, saved));

    // Every truncation, and every single flipped byte.
    for (size_t n = 0; n < good.size(); ++n) {
        auto cut = std::vector<uint8_t>(good.begin(), good.begin() + static_cast<long>(n));
        CHECK_FALSE(c.decode(cut, saved));
    }
    for (size_t i = 0; i < good.size(); ++i) {
        auto bad = good;
        bad[i] ^= 0x40;
        auto got = c.decode(bad, saved);
        CHECK_FALSE(got);
        if (got) break;
    }
    // Trailing garbage (even with a recomputed MAC it is not a valid file).
    auto longer = good;
    longer.push_back(0);
    CHECK_FALSE(c.decode(longer, saved));

    // Another version: said so.
    auto v2 = good;
    v2[5] = 2;
    auto got = c.decode(v2, saved);
    REQUIRE_FALSE(got);
    CHECK(got.err().message.find("version 2") != std::string::npos);

    // Written for another cluster (another PSK).
    record_cache other("/nonexistent", key_of("another cluster's pre-shared key!"), 100);
    got = other.decode(good, saved);
    REQUIRE_FALSE(got);
    CHECK(got.err().message.find("MAC") != std::string::npos);
    // During a key roll: a file MAC'd under an accepted key (psk.acceptPaths) still loads, and
    // the next write is under the sealing key only.
    other.set_accepted_keys({k_key});
    REQUIRE(other.decode(good, saved));
    auto rewritten = other.encode(cache_sample(), saved);
    CHECK_FALSE(c.decode(rewritten, saved));

    // More entries than this node's store holds.
    record_cache small("/nonexistent", k_key, 2);
    got = small.decode(good, saved);
    REQUIRE_FALSE(got);
    CHECK(got.err().message.find("more than the 2") != std::string::npos);
    // ... and encode() keeps to the bound.
    auto bounded = small.decode(small.encode(cache_sample(), saved), saved);
    REQUIRE(bounded);
    CHECK(bounded->records.size() == 2);
}

TEST_CASE("record cache: atomic save, load, oversized and unreadable files, set aside") {
    tmp_dir dir;
    const std::string state = dir.path + "/state";
    record_cache c(state, k_key, 4);
    const auto saved = clock_at(1, 50'000, t0);

    auto none = c.load(saved);
    REQUIRE_FALSE(none);
    CHECK(none.err().is(errc::not_found));

    REQUIRE(c.save(cache_sample(), saved));
    struct stat st {};
    REQUIRE(::stat(c.path().c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    CHECK_FALSE(std::filesystem::exists(c.path() + ".tmp"));
    auto got = c.load(clock_at(1, 60'000, t0));
    REQUIRE(got);
    CHECK(got->records.size() == 3);
    CHECK(got->records[0].remaining_ms == 490'000);

    // A second save replaces the first.
    REQUIRE(c.save({cache_sample()[1]}, saved));
    got = c.load(saved);
    REQUIRE(got);
    REQUIRE(got->records.size() == 1);
    CHECK(got->records[0].record.name == "node-2");

    // Truncated on disk (a torn copy, a full disk elsewhere).
    auto bytes = read_file(c.path());
    bytes.resize(bytes.size() - 10);
    write_file(c.path(), bytes);
    got = c.load(saved);
    REQUIRE_FALSE(got);
    CHECK(got.err().is(errc::protocol_error));
    auto aside = c.set_aside();
    REQUIRE(aside);
    CHECK(*aside == c.path() + ".corrupt");
    CHECK(std::filesystem::exists(*aside));
    CHECK_FALSE(std::filesystem::exists(c.path()));

    // Larger than the store's bound can make: not even read.
    write_file(c.path(), std::vector<uint8_t>(c.max_file_size() + 1, 0));
    got = c.load(saved);
    REQUIRE_FALSE(got);
    CHECK(got.err().is(errc::exhausted));

    // Not a file at all.
    std::filesystem::remove(c.path());
    std::filesystem::create_directory(c.path());
    got = c.load(saved);
    REQUIRE_FALSE(got);
    CHECK_FALSE(got.err().is(errc::not_found));
    // Moving it aside fails here (rename(2) cannot put a directory over the older .corrupt
    // file): the daemon then reports it "unreadable", leaves it, and starts without it.
    CHECK_FALSE(c.set_aside());
    std::filesystem::remove(c.path() + ".corrupt");
    CHECK(c.set_aside());
}

TEST_CASE("record cache: the writer thread writes the latest state and reports back") {
    tmp_dir dir;
    boost::asio::io_context io;
    record_cache c(dir.path, k_key, 100);
    record_cache_writer w(c, io);
    int done = 0;
    w.write(cache_sample(), clock_at(1, 50'000, t0), [&](status s) {
        CHECK(s);
        ++done;
    });
    // The callback comes back through the io_context.
    auto guard = boost::asio::make_work_guard(io);
    for (int i = 0; i < 500 && done == 0; ++i) io.run_for(std::chrono::milliseconds(10));
    guard.reset();
    CHECK(done == 1);
    auto got = c.load(clock_at(1, 50'000, t0));
    REQUIRE(got);
    CHECK(got->records.size() == 3);
    // stop() writes what waits, then joins.
    w.write({cache_sample()[2]}, clock_at(1, 50'000, t0), nullptr);
    w.stop();
    got = c.load(clock_at(1, 50'000, t0));
    REQUIRE(got);
    REQUIRE(got->records.size() == 1);
    CHECK(got->records[0].record.name == "node-3");
}

TEST_CASE("background writer: latest wins, the running write finishes, stop runs what waits") {
    boost::asio::io_context io;
    // Declared before the writer, so that its thread is joined while they still exist.
    std::mutex mu;
    std::condition_variable cv;
    bool release = false, started = false;   // under mu
    std::vector<int> ran;                    // under mu
    std::vector<std::pair<int, bool>> done;  // on io's thread
    auto open_gate = [&] {
        std::lock_guard lock(mu);
        release = true;
        cv.notify_all();
    };
    background_writer w(io);
    // A failed REQUIRE must not leave the writer's thread blocked in a job while w is joined.
    struct on_exit {
        std::function<void()> f;
        ~on_exit() { f(); }
    } gate_guard{open_gate};
    auto work = [&](int n, bool block) {
        return [&, n, block]() -> status {
            std::unique_lock lock(mu);
            if (block) {
                started = true;
                cv.notify_all();
                cv.wait(lock, [&] { return release; });
            }
            ran.push_back(n);
            if (n == 3) return error(errc::io_error, "disk full");
            return {};
        };
    };
    auto cb = [&](int n) { return [&, n](status s) { done.emplace_back(n, bool(s)); }; };
    auto wait_started = [&] {
        std::unique_lock lock(mu);
        return cv.wait_for(lock, std::chrono::seconds(5), [&] { return started; });
    };
    // 1 runs and blocks; 2 waits, then 3 replaces it (2 never runs, its callback is dropped).
    w.post(work(1, true), cb(1));
    REQUIRE(wait_started());
    w.post(work(2, false), cb(2));
    w.post(work(3, false), cb(3));
    open_gate();
    auto guard = boost::asio::make_work_guard(io);
    for (int i = 0; i < 500 && done.size() < 2; ++i) io.run_for(std::chrono::milliseconds(10));
    guard.reset();
    REQUIRE(done.size() == 2);
    CHECK(done[0] == std::pair{1, true});
    CHECK(done[1] == std::pair{3, false});  // the failure reaches the callback
    CHECK(w.runs() == 2);
    {
        std::lock_guard lock(mu);
        CHECK(ran == std::vector<int>{1, 3});
    }
    // stop() while 4 runs and 5 waits: 4 finishes, 5 runs, neither calls back (4 is released
    // only once stop() was called); later posts are ignored.
    {
        std::lock_guard lock(mu);
        release = false;
        started = false;
    }
    w.post(work(4, true), cb(4));
    REQUIRE(wait_started());
    w.post(work(5, false), cb(5));
    std::thread releaser([&] {
        for (int i = 0; i < 5000 && !w.stopping(); ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        open_gate();
    });
    w.stop();
    releaser.join();
    w.post(work(6, false), cb(6));
    w.stop();  // idempotent
    io.restart();
    io.poll();
    {
        std::lock_guard lock(mu);
        CHECK(ran == std::vector<int>{1, 3, 4, 5});
    }
    CHECK(w.runs() == 4);
    CHECK(done.size() == 2);
}

TEST_CASE("record cache: the core verifies cached records again and keeps their expiry") {
    constexpr std::string_view psk = "0123456789abcdef0123456789abcdef";
    auto sealer =
        psk_sealer::create(std::span(reinterpret_cast<const uint8_t*>(psk.data()), psk.size()))
            .value();
    node_core_config cfg;
    cfg.node_name = "me";
    cfg.endpoints = {ep("192.168.1.50:51821")};
    cfg.revoked = {identity(2).id()};
    node_core core(cfg, identity(50), sealer, meshd_test::test_rng());
    const uint64_t now = t0;
    core.start(now);

    auto forged = record(3, 9, 600'000);
    forged.pod_cidrs = {ip_prefix::parse("10.99.0.0/24").value()};  // signature no longer fits
    auto self = record(50, 3, 600'000, "me");
    std::vector<cached_record> v{
        cached_record{record(1, 5, 600'000), 120'000, {}},  // kept, 120 s left (not 600)
        cached_record{record(2, 7, 600'000), 500'000, {}},  // revoked in the config
        cached_record{forged, 500'000, {}},                 // bad signature
        cached_record{self, 500'000, {}},                   // our own record
    };
    // Through the file, so what the core sees is what a restart reads.
    record_cache c("/nonexistent", k_key, 100);
    auto got = c.decode(c.encode(v, clock_at(1, 0, t0)), clock_at(1, 20'000, t0));
    REQUIRE(got);
    REQUIRE(got->records.size() == 4);
    auto imp = offer_cached(core, identity(50).id(), got->records, now);
    CHECK(imp.offered == 1);
    CHECK(imp.own == 1);
    CHECK(imp.refused == 2);
    CHECK(imp.refusals.size() == 2);
    CHECK(core.store().size() == 1);
    REQUIRE(core.store().find(identity(1).id()));
    CHECK_FALSE(core.store().find(identity(2).id()));
    CHECK_FALSE(core.store().find(identity(3).id()));
    // 120 s at the save, 20 s passed: it expires 100 s from now, not a lifetime from now.
    CHECK(core.store().expires_at(identity(1).id()) == now + 100'000);
    // Learned via the cache; the same record from a relay later adds the source, and (a
    // duplicate) does not extend the expiry either.
    core.tick(now);
    auto peers = core.peers();
    REQUIRE(peers.size() == 1);
    CHECK(learned_via_names(peers[0].sources) == std::vector<std::string>{"cache"});
    REQUIRE(core.offer_record(record(1, 5, 600'000), learned_via::relay, now + 1000));
    CHECK(core.store().expires_at(identity(1).id()) == now + 100'000);
    core.tick(now + 1000);
    peers = core.peers();
    CHECK(learned_via_names(peers[0].sources) == std::vector<std::string>{"relay", "cache"});
    // It goes when its remaining life is over.
    core.tick(now + 100'000);
    CHECK(core.store().size() == 0);
}
