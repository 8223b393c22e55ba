/* notify_send speaks sd_notify's datagram protocol to $NOTIFY_SOCKET. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "notify.h"

static void test_no_socket_is_a_noop(void **state)
{
        (void)state;
        unsetenv("NOTIFY_SOCKET");
        assert_int_equal(notify_send("READY=1"), 0);
        setenv("NOTIFY_SOCKET", "relative/path", 1);
        assert_int_equal(notify_send("READY=1"), -EINVAL);
        unsetenv("NOTIFY_SOCKET");
}

static void receive_on(const char *path, int abstract)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct timeval tv = { .tv_sec = 2 };
        char buf[64];
        int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
        socklen_t len;

        assert_true(fd >= 0);
        memcpy(sa.sun_path, path, strlen(path));
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
        if (abstract)
                sa.sun_path[0] = '\0';
        else
                unlink(path);
        assert_int_equal(bind(fd, (struct sockaddr *)&sa, len), 0);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setenv("NOTIFY_SOCKET", path, 1);
        assert_int_equal(notify_send("READY=1\nSTATUS=serving"), 0);
        ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
        assert_true(n > 0);
        buf[n] = '\0';
        assert_string_equal(buf, "READY=1\nSTATUS=serving");
        close(fd);
        if (!abstract)
                unlink(path);
        unsetenv("NOTIFY_SOCKET");
}

static void test_path_socket(void **state)
{
        char path[64];
        (void)state;
        snprintf(path, sizeof(path), "/tmp/tasman-notify-%d.sock", (int)getpid());
        receive_on(path, 0);
}

static void test_abstract_socket(void **state)
{
        char path[64];
        (void)state;
        snprintf(path, sizeof(path), "@tasman-notify-%d", (int)getpid());
        receive_on(path, 1);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_no_socket_is_a_noop),
                cmocka_unit_test(test_path_socket),
                cmocka_unit_test(test_abstract_socket),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
