// Preloaded ahead of libfaketime by test_clock_skew.py: timerfd_settime/timerfd_gettime go to
// the kernel untouched.
//
// Why: libfaketime 0.9.10 (Debian 12) subtracts its wall-clock offset from every absolute
// timerfd deadline, CLOCK_MONOTONIC ones included, even with FAKETIME_DONT_FAKE_MONOTONIC=1.
// Boost.Asio arms "expire now" as TFD_TIMER_ABSTIME at 1 ns on its CLOCK_MONOTONIC timerfd: at
// +5 h that becomes a negative time (EINVAL, the timer never fires), at -2 days a deadline two
// days of uptime away. A real machine's wrong or stepping wall clock never moves a monotonic
// timer, so what libfaketime does here would test libfaketime, not meshd (every core tick of
// meshd came up to the next unrelated wakeup late: "woken late" every 160 ms on the relay).
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

extern "C" {

int timerfd_settime(int fd, int flags, const struct itimerspec* new_value,
                    struct itimerspec* old_value) {
    return static_cast<int>(::syscall(SYS_timerfd_settime, fd, flags, new_value, old_value));
}

int timerfd_gettime(int fd, struct itimerspec* curr_value) {
    return static_cast<int>(::syscall(SYS_timerfd_gettime, fd, curr_value));
}
}
