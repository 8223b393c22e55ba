/* notify: tells systemd (Type=notify) how the daemon is doing, through the
 * datagram socket named by $NOTIFY_SOCKET; a no-op when it is not set (run
 * by hand, in tests). The sd_notify(3) protocol, without libsystemd.
 * Any thread. Returns 0 (also when not under systemd) or a negative errno.
 */
#pragma once

int notify_send(const char *state); /* e.g. "READY=1", "STOPPING=1" */
