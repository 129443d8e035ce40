# Included from test/CMakeLists.txt (a file of its own: test/sanitize/ is shared with the ASan tests).
# ThreadSanitizer (issue 14 §7): the threaded parts of meshwire under TSan, from their own tree
# build-tsan/ (clang++-14, MESHWIRE_SANITIZE=thread, -O1 -g), built by test/sanitize/tsan_build.sh
# with only the targets below, meshd, meshctl, the CNI plugin and relay_e2e. See tsan.sh.
set(tsan_dir ${CMAKE_CURRENT_LIST_DIR})

if(MESHWIRE_SANITIZE STREQUAL "thread")
  # The unit tests whose cases start threads (control socket, metrics endpoint, meshctl against
  # the control server, control inbox producer/consumer, record cache writer, wireguard-go
  # supervision), not the ~45 pure ones: the TSan build compiles 6 test files instead of 50.
  set(unit_dir ${PROJECT_SOURCE_DIR}/test/unit)
  add_executable(tsan_unit_tests
                 ${unit_dir}/main.cpp ${unit_dir}/control_server_test.cpp
                 ${unit_dir}/meshd_control_inbox_test.cpp ${unit_dir}/metrics_test.cpp
                 ${unit_dir}/meshctl_format_test.cpp ${unit_dir}/meshd_record_cache_test.cpp
                 ${unit_dir}/wg_userspace_backend_test.cpp
                 # The five daemon files those cases use, instead of all of meshwire_meshd: the
                 # binary does not wait for the daemon library to build.
                 ${PROJECT_SOURCE_DIR}/meshd/control_inbox.cpp
                 ${PROJECT_SOURCE_DIR}/meshd/record_cache.cpp
                 ${PROJECT_SOURCE_DIR}/meshd/record_cache_writer.cpp
                 ${PROJECT_SOURCE_DIR}/meshd/background_writer.cpp
                 ${PROJECT_SOURCE_DIR}/meshd/directories.cpp)
  target_link_libraries(tsan_unit_tests PRIVATE meshwire_meshd_io meshwire_meshd_core
                                                meshwire_meshctl meshwire_common doctest::doctest)
  target_compile_definitions(tsan_unit_tests PRIVATE MESHWIRE_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  return()  # the tests below belong to the ordinary build's ctest
endif()

# tsan_build: configures and builds build-tsan/ (cold: ~13 min of CPU, estimated from 6-8 s per
# compile; warm: nothing to do); the others need it. TIMEOUT covers a cold build on a busy box.
# PROCESSORS 2: it compiles with -j2, so the cpu part runs nothing beside it. Tried without (one
# slot, d464bd3's suite run): two -j2 builds beside the serial part oversubscribed the cores, the
# suite took 37 min instead of 33 (asan_unit_sim 1,124 s against 698) and the QEMU guest's
# failover test failed on a relay switch just before its kill.
add_test(NAME tsan_build COMMAND ${tsan_dir}/tsan_build.sh)
set_tests_properties(tsan_build PROPERTIES LABELS "tsan;cpu" TIMEOUT 1500 SKIP_RETURN_CODE 77
                     PROCESSORS 2 FIXTURES_SETUP meshwire_tsan_built)
# tsan_unit: the threaded unit cases and relay_e2e (forwarder and proxies with real traffic on
# loopback) under TSan; CPU and loopback only.
add_test(NAME tsan_unit COMMAND ${tsan_dir}/tsan.sh unit relay)
set_tests_properties(tsan_unit PROPERTIES LABELS "tsan;cpu" TIMEOUT 600 SKIP_RETURN_CODE 77
                     ENVIRONMENT TSAN_NO_BUILD=1 FIXTURES_REQUIRED meshwire_tsan_built)
# tsan_mesh: meshd (every thread) on a three-node mesh of the e2e testbed, root, namespaces.
add_test(NAME tsan_mesh COMMAND ${tsan_dir}/tsan.sh mesh)
set_tests_properties(tsan_mesh PROPERTIES LABELS "tsan;e2e" RUN_SERIAL TRUE TIMEOUT 600
                     SKIP_RETURN_CODE 77 ENVIRONMENT TSAN_NO_BUILD=1
                     FIXTURES_REQUIRED "meshwire_tsan_built;meshwire_e2e_clean")
