# CTest helpers for tests that run inside the QEMU guest (test/vm/README.md).
#
#   include(${PROJECT_SOURCE_DIR}/test/vm/MeshwireVm.cmake)
#   meshwire_add_vm_test(NAME <name> COMMAND <command> [args...]
#                        [TIMEOUT <seconds>] [MEM <MiB>] [LABELS <label>...] [RW <dir>...]
#                        [ENV <NAME=VALUE>...] [RUN_SERIAL])
#
# The command (e.g. $<TARGET_FILE:my_e2e_test>) runs as root in the guest, chrooted into the host's
# read-only root, with the guest's own environment plus ENV (run-in-vm.sh --env). The test gets
# the labels e2e and vm (plus LABELS), is skipped (exit 77) where QEMU cannot run, and requires
# the fixture that fetches the guest kernel. RUN_SERIAL: nothing else runs beside it (for tests
# with time bounds: the guest's two emulated CPUs need the host's two).
include_guard(GLOBAL)

set(MESHWIRE_VM_DIR "${CMAKE_CURRENT_LIST_DIR}" CACHE INTERNAL "test/vm harness scripts")

# Fetching the kernel (idempotent, ~10 s the first time) is a fixture, so `ctest` works on a fresh
# machine after install/deps.sh.
add_test(NAME vm_fetch_kernel COMMAND ${MESHWIRE_VM_DIR}/fetch-kernel.sh)
set_tests_properties(vm_fetch_kernel PROPERTIES
  FIXTURES_SETUP meshwire_vm_kernel
  LABELS "e2e;vm"
  TIMEOUT 900)

function(meshwire_add_vm_test)
  cmake_parse_arguments(PARSE_ARGV 0 arg "RUN_SERIAL" "NAME;TIMEOUT;MEM" "COMMAND;LABELS;RW;ENV")
  if(NOT arg_NAME OR NOT arg_COMMAND)
    message(FATAL_ERROR "meshwire_add_vm_test: NAME and COMMAND are required")
  endif()
  if(NOT arg_TIMEOUT)
    set(arg_TIMEOUT 600)
  endif()
  # The harness times out first (and kills QEMU), leaving CTest's TIMEOUT as the backstop.
  math(EXPR vm_timeout "${arg_TIMEOUT} - 30")
  set(opts --skip-if-unavailable --timeout ${vm_timeout})
  if(arg_MEM)
    list(APPEND opts --mem ${arg_MEM})
  endif()
  foreach(dir IN LISTS arg_RW)
    list(APPEND opts --rw ${dir})
  endforeach()
  foreach(var IN LISTS arg_ENV)
    if(NOT var MATCHES "^[A-Za-z_][A-Za-z0-9_]*=")
      message(FATAL_ERROR "meshwire_add_vm_test(${arg_NAME}): ENV wants NAME=VALUE, not ${var}")
    endif()
    list(APPEND opts --env ${var})
  endforeach()
  add_test(NAME ${arg_NAME} COMMAND ${MESHWIRE_VM_DIR}/run-in-vm.sh ${opts} -- ${arg_COMMAND})
  set_tests_properties(${arg_NAME} PROPERTIES
    FIXTURES_REQUIRED meshwire_vm_kernel
    LABELS "e2e;vm;${arg_LABELS}"
    SKIP_RETURN_CODE 77
    PROCESSORS 2 # the guest has two vCPUs under TCG
    TIMEOUT ${arg_TIMEOUT})
  if(arg_RUN_SERIAL)
    set_tests_properties(${arg_NAME} PROPERTIES RUN_SERIAL TRUE)
  endif()
endfunction()
