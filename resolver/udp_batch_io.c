/* idnode.resolver._udp_batch_io: UDP datagrams read and sent in batches, one
 * recvmmsg(2) or sendmmsg(2) system call for up to MAX_BATCH datagrams (Linux).
 *
 * The Handle UDP door (resolver/udp_door.py, through resolver/udp_batch_io.py) uses it
 * instead of the event loop's datagram transport, which makes one recvfrom/sendto call
 * and one Python callback per datagram. The module is optional: the package builds and
 * runs without it (pyproject.toml marks it so), and the door then uses the transport.
 *
 *   recv_batch(fd, max=64, size=65536) -> [(bytes, address), ...]
 *       Reads up to ``max`` datagrams (1..MAX_BATCH) waiting on the non-blocking UDP
 *       socket ``fd``, without blocking. Nothing waiting: []. ``address`` is what
 *       Python's socket module gives: ('1.2.3.4', port) or ('::1', port, flowinfo,
 *       scope_id). A datagram longer than ``size`` bytes (1..MAX_DATAGRAM; the default
 *       holds any UDP payload) is dropped and counted ("truncated"), as is one from an
 *       address that is neither IPv4 nor IPv6 ("bad_address"), so [] may also mean that
 *       every datagram of the read was dropped while more wait (a reader watching the
 *       socket is woken again). EINTR is retried; any other error raises OSError.
 *
 *   send_batch(fd, family, items, start=0) -> int
 *       Sends items[start:], each a (bytes-like, address) pair, ``address`` a numeric
 *       address of ``family`` (AF_INET or AF_INET6) as recv_batch gives it, or None on a
 *       connected socket of any family (the tests fill an AF_UNIX pair's buffer so).
 *       Returns the index just past the last item dealt with: len(items) when all went,
 *       less when the socket's send buffer is full (EAGAIN, ENOBUFS): the caller keeps
 *       items[returned:] for when the socket is writable. A datagram the kernel refuses
 *       on its own (EMSGSIZE, EINVAL, EHOSTUNREACH, ECONNREFUSED: an ICMP error pending
 *       on a connected socket, ...) is dropped and counted ("send_errors"), the rest go
 *       on; EBADF, ENOTSOCK and EOPNOTSUPP raise OSError. EINTR is retried (a signal
 *       handler that raises ends the call with its exception). An item that is not a
 *       pair, data without the buffer protocol or an address that is not a numeric one
 *       of ``family`` is skipped and counted ("bad_items"), as a refused datagram is:
 *       the return value always says exactly what was dealt with, so a caller that
 *       keeps the rest never sends an item twice. Only bad arguments (``fd``,
 *       ``family``, ``items`` not a sequence, ``start``) and MemoryError raise. No name
 *       is ever resolved.
 *
 *   stats() -> {"truncated": n, "bad_address": n, "send_errors": n, "bad_items": n}
 *       Counts since the module was loaded (this process).
 *
 * Both functions keep the GIL: the calls never block (MSG_DONTWAIT), and recv_batch's
 * buffers are this module's, one set per process.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_BATCH 64
/* Larger than any UDP payload (65,507 bytes over IPv4, 65,527 over IPv6 without jumbo
 * options), so that the kernel's MSG_TRUNC only marks a datagram past ``size``. */
#define MAX_DATAGRAM 65536
#define MAX_FLOWINFO 0xfffffUL /* 20 bits, as the socket module checks */

static char *slots; /* MAX_BATCH * MAX_DATAGRAM bytes, allocated at the first read */
static int reading; /* recv_batch under way: a re-entry (a finalizer run by an allocation
                       inside it) would overwrite the slots being copied out */
static unsigned long long truncated, bad_address, send_errors, bad_items;

/* The last source address and its Python tuple: a client sending many requests gets the
 * same tuple object, made once. */
static struct sockaddr_storage last_sa;
static socklen_t last_len;
static PyObject *last_addr;

/* The Python address of ``sa`` (``len`` bytes), a new reference; NULL with an exception
 * set. The caller has checked the family and length. */
static PyObject *
make_addr(const struct sockaddr_storage *sa, socklen_t len)
{
    char host[INET6_ADDRSTRLEN];
    PyObject *r;

    if (last_addr != NULL && len == last_len && memcmp(sa, &last_sa, len) == 0) {
        Py_INCREF(last_addr);
        return last_addr;
    }
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        if (inet_ntop(AF_INET, &a->sin_addr, host, sizeof host) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        r = Py_BuildValue("(si)", host, (int)ntohs(a->sin_port));
    } else {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        if (inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        r = Py_BuildValue("(siII)", host, (int)ntohs(a->sin6_port),
                          (unsigned int)ntohl(a->sin6_flowinfo),
                          (unsigned int)a->sin6_scope_id);
    }
    if (r == NULL)
        return NULL;
    Py_XSETREF(last_addr, Py_NewRef(r));
    memcpy(&last_sa, sa, len);
    last_len = len;
    return r;
}

/* Whether the kernel's address ``sa`` of ``len`` bytes is a whole IPv4 or IPv6 one. */
static int
usable_addr(const struct sockaddr_storage *sa, socklen_t len)
{
    if (len > sizeof *sa || len < sizeof sa->ss_family)
        return 0;
    if (sa->ss_family == AF_INET)
        return len >= sizeof(struct sockaddr_in);
    if (sa->ss_family == AF_INET6)
        return len >= sizeof(struct sockaddr_in6);
    return 0;
}

static PyObject *
recv_batch_locked(int fd, int max, Py_ssize_t size)
{
    struct mmsghdr msgs[MAX_BATCH];
    struct iovec iov[MAX_BATCH];
    struct sockaddr_storage addrs[MAX_BATCH];
    int n;

    if (slots == NULL) {
        slots = PyMem_RawMalloc((size_t)MAX_BATCH * MAX_DATAGRAM);
        if (slots == NULL)
            return PyErr_NoMemory();
    }
    memset(msgs, 0, sizeof msgs[0] * (size_t)max);
    for (int i = 0; i < max; i++) {
        iov[i].iov_base = slots + (size_t)i * MAX_DATAGRAM;
        iov[i].iov_len = (size_t)size;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &addrs[i];
        msgs[i].msg_hdr.msg_namelen = sizeof addrs[i];
    }
    for (;;) {
        n = recvmmsg(fd, msgs, (unsigned int)max, MSG_DONTWAIT, NULL);
        if (n >= 0)
            break;
        if (errno == EINTR) {
            if (PyErr_CheckSignals() < 0)
                return NULL;
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return PyList_New(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (int i = 0; i < n; i++) {
        const struct msghdr *h = &msgs[i].msg_hdr;
        /* msg_len <= iov_len unless MSG_TRUNC: the kernel reports the datagram's own
         * length then, which is never read past the slot. */
        if ((h->msg_flags & MSG_TRUNC) || msgs[i].msg_len > (unsigned int)size) {
            truncated++;
            continue;
        }
        if (!usable_addr(&addrs[i], h->msg_namelen)) {
            bad_address++;
            continue;
        }
        PyObject *data = PyBytes_FromStringAndSize(iov[i].iov_base, (Py_ssize_t)msgs[i].msg_len);
        if (data == NULL)
            goto fail;
        PyObject *addr = make_addr(&addrs[i], h->msg_namelen);
        if (addr == NULL) {
            Py_DECREF(data);
            goto fail;
        }
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(data);
            Py_DECREF(addr);
            goto fail;
        }
        PyTuple_SET_ITEM(pair, 0, data); /* steals */
        PyTuple_SET_ITEM(pair, 1, addr);
        int rc = PyList_Append(out, pair);
        Py_DECREF(pair);
        if (rc < 0)
            goto fail;
    }
    return out;
fail:
    /* what was read is lost with the exception, as a datagram may be */
    Py_DECREF(out);
    return NULL;
}

static PyObject *
recv_batch(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"fd", "max", "size", NULL};
    int fd, max = MAX_BATCH;
    Py_ssize_t size = MAX_DATAGRAM;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "i|in:recv_batch", keywords, &fd, &max,
                                     &size))
        return NULL;
    if (max < 1 || max > MAX_BATCH)
        return PyErr_Format(PyExc_ValueError, "max must be 1-%d", MAX_BATCH);
    if (size < 1 || size > MAX_DATAGRAM)
        return PyErr_Format(PyExc_ValueError, "size must be 1-%d", MAX_DATAGRAM);
    if (reading) {
        PyErr_SetString(PyExc_RuntimeError, "recv_batch re-entered");
        return NULL;
    }
    reading = 1;
    PyObject *r = recv_batch_locked(fd, max, size);
    reading = 0;
    return r;
}

/* An unsigned int of at most ``max`` into *out; -1 with TypeError or ValueError. */
static int
get_uint(PyObject *o, unsigned long max, const char *what, unsigned long *out)
{
    int overflow;
    long v;

    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", what,
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    v = PyLong_AsLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow != 0 || v < 0 || (unsigned long)v > max) {
        PyErr_Format(PyExc_ValueError, "%s must be 0-%lu", what, max);
        return -1;
    }
    *out = (unsigned long)v;
    return 0;
}

/* A numeric address tuple of ``family`` into *sa and *len; -1 with TypeError or
 * ValueError. No name is resolved. */
static int
parse_addr(PyObject *addr, int family, struct sockaddr_storage *sa, socklen_t *len)
{
    Py_ssize_t parts, host_len;
    unsigned long port, flowinfo = 0, scope_id = 0;
    const char *host;
    char text[INET6_ADDRSTRLEN];

    if (family != AF_INET && family != AF_INET6) {
        PyErr_SetString(PyExc_ValueError, "an address needs the family AF_INET or AF_INET6");
        return -1;
    }
    if (!PyTuple_Check(addr)) {
        PyErr_Format(PyExc_TypeError, "an address must be a tuple, not %.100s",
                     Py_TYPE(addr)->tp_name);
        return -1;
    }
    parts = PyTuple_GET_SIZE(addr);
    if (family == AF_INET ? parts != 2 : parts < 2 || parts > 4) {
        PyErr_Format(PyExc_TypeError, "an %s address is (host, port%s), not %zd items",
                     family == AF_INET ? "IPv4" : "IPv6",
                     family == AF_INET ? "" : "[, flowinfo[, scope_id]]", parts);
        return -1;
    }
    PyObject *h = PyTuple_GET_ITEM(addr, 0);
    if (!PyUnicode_Check(h)) {
        PyErr_Format(PyExc_TypeError, "an address's host must be a str, not %.100s",
                     Py_TYPE(h)->tp_name);
        return -1;
    }
    host = PyUnicode_AsUTF8AndSize(h, &host_len);
    if (host == NULL)
        return -1;
    if (get_uint(PyTuple_GET_ITEM(addr, 1), 65535, "port", &port) < 0)
        return -1;
    if (parts > 2 && get_uint(PyTuple_GET_ITEM(addr, 2), MAX_FLOWINFO, "flowinfo", &flowinfo) < 0)
        return -1;
    if (parts > 3 && get_uint(PyTuple_GET_ITEM(addr, 3), 0xffffffffUL, "scope_id", &scope_id) < 0)
        return -1;
    /* the text up to a '%' (an IPv6 zone, 'fe80::1%eth0': the scope is the tuple's),
     * NUL-terminated in ``text``; longer than any numeric address: not one */
    const char *pct = family == AF_INET6 ? memchr(host, '%', (size_t)host_len) : NULL;
    Py_ssize_t keep = pct != NULL ? pct - host : host_len;
    if (keep >= (Py_ssize_t)sizeof text || memchr(host, '\0', (size_t)keep) != NULL) {
        PyErr_SetString(PyExc_ValueError, "not a numeric IP address");
        return -1;
    }
    memcpy(text, host, (size_t)keep);
    text[keep] = '\0';
    memset(sa, 0, sizeof *sa);
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)sa;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, text, &a->sin_addr) != 1) {
            PyErr_Format(PyExc_ValueError, "not a numeric IPv4 address: %.64s", text);
            return -1;
        }
        *len = sizeof *a;
        return 0;
    }
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)sa;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    a->sin6_flowinfo = htonl((uint32_t)flowinfo);
    a->sin6_scope_id = (uint32_t)scope_id;
    if (inet_pton(AF_INET6, text, &a->sin6_addr) != 1) {
        PyErr_Format(PyExc_ValueError, "not a numeric IPv6 address: %.64s", text);
        return -1;
    }
    *len = sizeof *a;
    return 0;
}

static PyObject *
send_batch(PyObject *self, PyObject *args)
{
    int fd, family;
    PyObject *seq, *items;
    Py_ssize_t start = 0, total, pos;
    struct mmsghdr msgs[MAX_BATCH];
    struct iovec iov[MAX_BATCH];
    struct sockaddr_storage addrs[MAX_BATCH];
    Py_buffer views[MAX_BATCH];
    Py_ssize_t index[MAX_BATCH]; /* the item each message was made from */
    int held = 0;

    if (!PyArg_ParseTuple(args, "iiO|n:send_batch", &fd, &family, &seq, &start))
        return NULL;
    /* A tuple of the items: Python code that runs meanwhile (a finalizer of garbage
     * collected by an allocation here) cannot change what is being read. */
    items = PySequence_Tuple(seq);
    if (items == NULL)
        return NULL;
    total = PyTuple_GET_SIZE(items);
    if (start < 0 || start > total) {
        Py_DECREF(items);
        PyErr_SetString(PyExc_ValueError, "start must be 0-len(items)");
        return NULL;
    }
    pos = start;
    while (pos < total) {
        int k = 0, off = 0, full = 0;
        Py_ssize_t next = pos; /* the next item to look at */
        PyObject *prev = NULL; /* a run of answers to one address: parsed once */

        while (k < MAX_BATCH && next < total) {
            PyObject *item = PyTuple_GET_ITEM(items, next);
            PyObject *addr;
            next++;
            if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2)
                continue; /* a bad item: counted below, once dealt with */
            addr = PyTuple_GET_ITEM(item, 1);
            if (PyObject_GetBuffer(PyTuple_GET_ITEM(item, 0), &views[k], PyBUF_SIMPLE) < 0)
                goto skip;
            held = k + 1;
            memset(&msgs[k], 0, sizeof msgs[k]);
            if (addr == Py_None) {
                msgs[k].msg_hdr.msg_name = NULL; /* a connected socket's peer */
                msgs[k].msg_hdr.msg_namelen = 0;
            } else {
                if (k > 0 && addr == prev) {
                    addrs[k] = addrs[k - 1];
                    msgs[k].msg_hdr.msg_namelen = msgs[k - 1].msg_hdr.msg_namelen;
                } else if (parse_addr(addr, family, &addrs[k], &msgs[k].msg_hdr.msg_namelen) < 0) {
                    PyBuffer_Release(&views[k]);
                    held = k;
                    goto skip;
                }
                msgs[k].msg_hdr.msg_name = &addrs[k];
            }
            prev = addr;
            iov[k].iov_base = views[k].buf;
            iov[k].iov_len = (size_t)views[k].len;
            msgs[k].msg_hdr.msg_iov = &iov[k];
            msgs[k].msg_hdr.msg_iovlen = 1;
            index[k] = next - 1;
            k++;
            continue;
        skip: /* a bad item: skipped (counted below), unless memory ran out */
            if (PyErr_ExceptionMatches(PyExc_MemoryError))
                goto fail;
            PyErr_Clear();
        }
        while (off < k) {
            int n = sendmmsg(fd, msgs + off, (unsigned int)(k - off), MSG_DONTWAIT);
            if (n > 0) {
                off += n;
                continue;
            }
            if (n == 0) { /* not documented for vlen > 0: taken as "later" */
                full = 1;
                break;
            }
            if (errno == EINTR) {
                if (PyErr_CheckSignals() < 0)
                    goto fail;
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
                full = 1;
                break;
            }
            if (errno == EBADF || errno == ENOTSOCK || errno == EOPNOTSUPP) {
                PyErr_SetFromErrno(PyExc_OSError);
                goto fail;
            }
            /* the kernel refused msgs[off] itself (sendmmsg reports the first failure of
             * a call as its error): that datagram is dropped, the rest go on */
            send_errors++;
            off++;
        }
        for (int i = 0; i < held; i++)
            PyBuffer_Release(&views[i]);
        held = 0;
        /* Items pos.. were messages or bad items; the bad ones dealt with are counted:
         * up to the first message not sent when the buffer is full (a bad item after it
         * is the caller's to offer again), else every one looked at. */
        if (full) {
            bad_items += (unsigned long long)(index[off] - pos - off);
            pos = index[off];
            break;
        }
        bad_items += (unsigned long long)(next - pos - k);
        pos = next;
    }
    Py_DECREF(items);
    return PyLong_FromSsize_t(pos);
fail:
    for (int i = 0; i < held; i++)
        PyBuffer_Release(&views[i]);
    Py_DECREF(items);
    return NULL;
}

static PyObject *
stats(PyObject *self, PyObject *unused)
{
    return Py_BuildValue("{sKsKsKsK}", "truncated", truncated, "bad_address", bad_address,
                         "send_errors", send_errors, "bad_items", bad_items);
}

static PyMethodDef methods[] = {
    {"recv_batch", (PyCFunction)(void (*)(void))recv_batch, METH_VARARGS | METH_KEYWORDS,
     "recv_batch(fd, max=64, size=65536) -> [(bytes, address), ...]: the datagrams waiting "
     "on a non-blocking UDP socket, read with one recvmmsg call"},
    {"send_batch", send_batch, METH_VARARGS,
     "send_batch(fd, family, items, start=0) -> int: items[start:] sent with sendmmsg; the "
     "index past the last item dealt with (less than len(items) when the send buffer is full)"},
    {"stats", stats, METH_NOARGS, "stats() -> {'truncated', 'bad_address', 'send_errors', 'bad_items'}"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "_udp_batch_io",
    "UDP datagrams read and sent in batches (recvmmsg/sendmmsg), for the Handle UDP door.",
    -1,
    methods,
};

PyMODINIT_FUNC
PyInit__udp_batch_io(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "MAX_BATCH", MAX_BATCH) < 0 ||
        PyModule_AddIntConstant(m, "MAX_DATAGRAM", MAX_DATAGRAM) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
