/* sshkey: checks one OpenSSH public key line, as a user pastes it or as it
 * stands in authorized_keys ("ssh-ed25519 AAAAC3Nza... alice@laptop"), and
 * describes the key: its type, size, SHA-256 fingerprint (the same string
 * ssh-keygen -l prints) and comment. Keys come from users, so the check is
 * strict: base64 in its one canonical spelling, every field of the key data
 * length-checked against its type, nothing left over. ECDSA points are only
 * checked for size and form, not for lying on the curve. authorized_keys
 * options ("from=...", "command=...") and certificates are not accepted.
 * Nothing is allocated: the caller owns the line and the result. Pure, so
 * any thread may call it.
 */
#pragma once

#include <stddef.h>

#define SSHKEY_LINE_MAX 16384 /* longest line accepted, not counting one line ending */
#define SSHKEY_FP_MAX   64    /* "SHA256:" + 43 base64 chars + NUL fits */

struct sshkey_info {
        char type[40]; /* "ssh-ed25519", "ssh-rsa", ..., "sk-ecdsa-sha2-nistp256@openssh.com" */
        unsigned bits; /* 256 for (sk-)ed25519, modulus bits for RSA, curve bits for ECDSA */
        char fingerprint[SSHKEY_FP_MAX]; /* "SHA256:" + unpadded base64 of sha256(key data) */
        char comment[256]; /* trailing comment, trimmed, "" if none; cut at a UTF-8 boundary */
};

/* Parses one public key line "TYPE BASE64 [COMMENT]" of len bytes; it need
 * not be NUL-terminated and nothing past len is read. Blanks (space, tab)
 * may surround the fields and one trailing "\n" or "\r\n" is allowed; any
 * other control character, a NUL or a newline inside the line is not, nor is
 * a comment that is not UTF-8.
 * Accepted: ssh-ed25519, ssh-rsa of 2048 to 16384 bits, ecdsa-sha2-nistp256,
 * -nistp384, -nistp521, sk-ssh-ed25519@openssh.com and
 * sk-ecdsa-sha2-nistp256@openssh.com.
 * Returns 0 and fills *ret (ret may be NULL to only check). Returns -EINVAL
 * if the line is not such a key, and puts a short reason for a human in why
 * ("unsupported key type", "key data is not valid base64", "RSA key shorter
 * than 2048 bits", ...), cut to why_len; why may be NULL. -ENOMEM if the hash
 * cannot be computed. *ret is written only on success, why only on failure. */
int sshkey_parse(const char *line, size_t len, struct sshkey_info *ret, char *why, size_t why_len);
