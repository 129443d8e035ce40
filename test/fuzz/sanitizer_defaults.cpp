// Sanitizer defaults linked into every fuzz target, so that running a target by hand (reproducing
// an artifact) behaves as in test/fuzz/run.sh without any *SAN_OPTIONS in the environment.
// UBSan is already fatal at compile time (-fno-sanitize-recover=all, set by run.sh); halt_on_error
// keeps it fatal should a target be built without that flag, and the stack trace shows which
// parser the undefined behaviour is in, not only the line.

extern "C" const char* __ubsan_default_options() {
    return "halt_on_error=1:print_stacktrace=1";
}
