/* codedml.runtime._wire: the MPI runtime's per-message path in C (optional).
 *
 * The Python transport (codedml/runtime/mpi.py) spent most of a request's time in Python
 * around a few MPI calls: poll loops of mpi4py Testsome/Iprobe and sched_yield, reply
 * headers parsed into Python ints, one mpi4py call per message. On ranks that share cores
 * that Python work is the latency. Two engines move it here; mpi.py drives them:
 *
 *   Root(fcomm, ranks, tags, failed)     the master: the posted header receive of every
 *       worker (header buffers owned here), its outgoing sends (buffers held until they
 *       complete), a poll that waits with the GIL released and returns parsed headers.
 *   Worker(fcomm, root, tags)            a worker: waits for the next request with the GIL
 *       released (looking for cancels and finished sends meanwhile), receives and parses it
 *       and its arrays, skips cancelled ones, and sends replies.
 *
 * The wire format is exactly protocol.py's (a Request's binary header and array records, the
 * int64 ReplyHeader); a message this code refuses is handed back raw, so protocol.py's parser
 * names its defect (one wording of every error). Every message here is MPI_BYTE on both
 * ends. Communicators come in as Fortran handles (mpi4py's py2f()), the one portable way to
 * pass them; the module must run against the MPI it was compiled with (mpi.py checks
 * VENDOR against mpi4py's library before it uses an engine).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <mpi.h>
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define MAX_NDIM 8
#define HEADER_LEN (8 + MAX_NDIM)
#define HEADER_BYTES (HEADER_LEN * 8)
/* A payload of at most this many bytes travels inside the message before or after it: a
 * reply's after its header (one message on tag HDR), a request's arrays after its control
 * bytes (one message on tag CTRL, flag bit 3). Larger ones travel as messages of their own.
 * The root's header receives are HEADER_BYTES + INLINE_MAX long. */
#define INLINE_MAX 16384
#define SLOT_LEN (HEADER_LEN + INLINE_MAX / 8)   /* int64 per worker at the root */
_Static_assert(INLINE_MAX % 8 == 0, "a slot is whole int64s");
#define REPLY_MAGIC 0xC0DED1
#define REQ_MAGIC 0xC0DE0002u
#define REQ_HEAD 36                   /* struct "<IBBBxqqqI" */
#define JOB_AT 8                      /* the job's offset in it ("<IBBBx" before it) */
#define MAX_ARRAYS 16
#define NDTYPES 9
#define MAX_BYTES ((int64_t)1 << 40)
#define NOPS 9                        /* Op: 1..9 */
#define KIND_RESULT 0
#define KIND_ERROR 1
#define KIND_ACK 3

/* protocol.DTYPES' item sizes, in their wire-code order (checked against protocol.py at
 * import by mpi.py): float64 float32 complex128 complex64 int64 uint8 float16 int32 bool */
static const int64_t ITEMSIZE[NDTYPES] = {8, 4, 16, 8, 8, 1, 2, 4, 1};
#define UINT8_CODE 5

static PyObject *WireError;           /* args: (MPI error class, message) */

static double mono(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);   /* time.perf_counter's clock on Linux */
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void nap(double s)
{
    struct timespec t;
    t.tv_sec = (time_t)s;
    t.tv_nsec = (long)((s - (double)t.tv_sec) * 1e9);
    while (nanosleep(&t, &t) == -1 && errno == EINTR) {
    }
}

/* Raise WireError(error class, text) for an MPI return code; returns NULL. */
static int LAST_FAIL_CLASS = -1;   /* the error class of the last WireError raised */

static PyObject *mpi_fail(int rc, const char *what)
{
    int cls = rc, len = 0;
    char text[MPI_MAX_ERROR_STRING + 1];
    MPI_Error_class(rc, &cls);
    LAST_FAIL_CLASS = cls;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS || len < 0 || len > MPI_MAX_ERROR_STRING)
        len = 0;
    text[len] = 0;
    PyObject *v = Py_BuildValue("(is)", cls, "");
    if (v) {
        PyObject *t = PyUnicode_DecodeUTF8(text, len, "replace");
        PyObject *msg = t ? PyUnicode_FromFormat("%s failed: %U (MPI error class %d)", what, t, cls) : NULL;
        Py_XDECREF(t);
        if (msg) {
            PyTuple_SetItem(v, 1, msg);   /* steals msg, replaces "" */
            PyErr_SetObject(WireError, v);
        }
        Py_DECREF(v);
    }
    return NULL;
}

/* ------------------------------------------------------------------ outgoing sends */
/* A send in flight and what keeps its buffer alive: a Python buffer view, or memory owned
 * here (a header, a cancel). Requests sit in their own array for MPI_Testsome. */
typedef struct {
    Py_buffer view;
    int has_view;
    void *own;
} Hold;

typedef struct {
    MPI_Request *req;
    Hold *hold;
    int *idx;
    MPI_Status *st;
    Py_ssize_t n, cap;
    Py_ssize_t done;          /* requests found complete (set null) since the last compact */
    int err;                  /* the first MPI error code a send completed with (0: none) */
    char *failed;             /* per slot: the send failed (its request and buffer are left
                                 to MPI: see sends_test) */
} Sends;

/* Messages longer than this many bytes travel as consecutive pieces of at most this size on
 * the same tag (MPI keeps their order): MPI counts are C ints, and MPI_BYTE counts bytes.
 * Both ends must use the same size: set_chunk() changes it for tests only. */
static Py_ssize_t CHUNK = (Py_ssize_t)1 << 30;
static long long SPLIT = 0;   /* messages sent in more than one piece (split_messages()) */
/* messages this process sent and received with their payload inline (inline_messages()) */
static long long INLINE_OUT = 0, INLINE_IN = 0;

static Py_ssize_t pieces(Py_ssize_t len)
{
    return len <= CHUNK ? 1 : (len + CHUNK - 1) / CHUNK;
}

/* Room for k more sends, so that a message is never half posted for want of memory. */
static int sends_reserve(Sends *s, Py_ssize_t k)
{
    if (s->n + k <= s->cap)
        return 0;
    Py_ssize_t cap = s->cap ? 2 * s->cap : 16;
    while (cap < s->n + k)
        cap *= 2;
    MPI_Request *r = PyMem_Realloc(s->req, cap * sizeof *r);
    if (!r) goto oom;
    s->req = r;
    Hold *h = PyMem_Realloc(s->hold, cap * sizeof *h);
    if (!h) goto oom;
    s->hold = h;
    int *i = PyMem_Realloc(s->idx, cap * sizeof *i);
    if (!i) goto oom;
    s->idx = i;
    MPI_Status *st = PyMem_Realloc(s->st, cap * sizeof *st);
    if (!st) goto oom;
    s->st = st;
    char *f = PyMem_Realloc(s->failed, (size_t)cap);
    if (!f) goto oom;
    s->failed = f;
    s->cap = cap;
    return 0;
oom:
    PyErr_NoMemory();
    return -1;
}

/* Test the sends in flight (no GIL needed): completed ones become MPI_REQUEST_NULL. A send
 * that failed counts as done, its error kept in s->err for the owner to judge (a failed
 * process's is expected under ULFM; the failure also shows in that worker's receive). A
 * failed send's request is not freed and its buffer is never released (sends_compact): Open
 * MPI's ob1 may still hold fragments of it, and one that fails after MPI_Request_free aborts
 * the whole job ("Send error after request freed", seen in a soak when a worker died). What
 * is left so is bounded: the sends in flight to a worker when it failed, once per worker. */
/* Test the sends in flight; returns whether it called MPI (none in flight: no call). */
static int sends_test(Sends *s)
{
    if (s->n == 0 || s->done == s->n)
        return 0;
    int out = 0;
    int rc = MPI_Testsome((int)s->n, s->req, &out, s->idx, s->st);
    if (rc == MPI_SUCCESS) {
        if (out != MPI_UNDEFINED)
            s->done += out;
        return 1;
    }
    s->done = 0;   /* an error among them: count again, one by one */
    for (Py_ssize_t i = 0; i < s->n; i++) {
        if (s->req[i] == MPI_REQUEST_NULL) {
            s->done++;
            continue;
        }
        int flag = 0;
        int r1 = MPI_Test(&s->req[i], &flag, MPI_STATUS_IGNORE);
        if (r1 != MPI_SUCCESS) {
            s->failed[i] = 1;
            s->req[i] = MPI_REQUEST_NULL;   /* left to MPI, not freed */
            if (!s->err)
                s->err = r1;
            flag = 1;
        }
        if (flag)
            s->done++;
    }
    return 1;
}

static void hold_release(Hold *h)
{
    if (h->has_view)
        PyBuffer_Release(&h->view);
    h->has_view = 0;
    PyMem_Free(h->own);
    h->own = NULL;
}

/* Drop the completed sends (with the GIL). The buffers are released after the arrays are
 * consistent again: a release may run Python code (a buffer's owner freed) that re-enters. */
static void sends_compact(Sends *s)
{
    if (s->done == 0)
        return;
    Hold gone[64];
    int ngone = 0;
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < s->n; i++) {
        if (s->req[i] == MPI_REQUEST_NULL) {
            if (s->failed[i])   /* MPI may still read its buffer: never released */
                continue;
            if (ngone < 64)
                gone[ngone++] = s->hold[i];
            else
                hold_release(&s->hold[i]);
            continue;
        }
        s->req[k] = s->req[i];
        s->hold[k] = s->hold[i];
        s->failed[k] = 0;
        k++;
    }
    s->n = k;
    s->done = 0;
    for (int i = 0; i < ngone; i++)
        hold_release(&gone[i]);
}

/* Post the MPI_BYTE send of one message, in pieces of at most CHUNK bytes: `view` (a Python
 * buffer's view, owned from here on: held until the send completes, each further piece
 * holding a view of its own of `obj`) or `own` (owned memory of `len` bytes, freed when
 * done). Room must have been reserved (sends_reserve: pieces(len)). Returns -1 with an
 * exception set on failure (pieces already posted stay posted and held). */
static int sends_post(Sends *s, MPI_Comm comm, int dest, int tag, Py_buffer *view,
                      PyObject *obj, void *own, Py_ssize_t len)
{
    const char *ptr = own;
    if (view != NULL) {
        ptr = view->buf;
        len = view->len;
    }
    Py_ssize_t k = pieces(len);
    SPLIT += k > 1;
    for (Py_ssize_t i = 0; i < k; i++) {
        Hold *h = &s->hold[s->n];
        h->has_view = 0;
        h->own = NULL;
        if (i == 0) {
            if (view != NULL) {
                h->view = *view;
                h->has_view = 1;
            } else {
                h->own = own;
            }
        } else if (PyObject_GetBuffer(obj, &h->view, PyBUF_C_CONTIGUOUS) < 0) {
            return -1;
        } else {
            h->has_view = 1;
        }
        Py_ssize_t at = i * CHUNK, m = len - at < CHUNK ? len - at : CHUNK;
        s->failed[s->n] = 0;
        int rc = MPI_Isend(ptr + at, (int)m, MPI_BYTE, dest, tag, comm, &s->req[s->n]);
        if (rc != MPI_SUCCESS) {
            hold_release(h);
            mpi_fail(rc, "MPI_Isend");
            return -1;
        }
        s->n++;
    }
    return 0;
}

/* Receive one message sent by sends_post (no GIL needed): its pieces into p[0:len].
 * *got: the bytes received (short when the sender's message was shorter). */
static int recv_bytes(MPI_Comm comm, int src, int tag, char *p, Py_ssize_t len, Py_ssize_t *got)
{
    *got = 0;
    Py_ssize_t k = pieces(len);
    for (Py_ssize_t i = 0; i < k; i++) {
        Py_ssize_t at = i * CHUNK, m = len - at < CHUNK ? len - at : CHUNK;
        MPI_Status st;
        int count = 0;
        int rc = MPI_Recv(p + at, (int)m, MPI_BYTE, src, tag, comm, &st);
        if (rc != MPI_SUCCESS)
            return rc;
        MPI_Get_count(&st, MPI_BYTE, &count);
        *got += count;
        if (count < m)
            break;
    }
    return MPI_SUCCESS;
}

static void sends_free(Sends *s)
{
    for (Py_ssize_t i = 0; i < s->n; i++) {
        if (s->req[i] != MPI_REQUEST_NULL || s->failed[i]) {
            /* still in flight at the engine's end, or failed: leave the request and its
             * buffer alone (MPI may still read it); only a finished one is released */
            continue;
        }
        hold_release(&s->hold[i]);
    }
    PyMem_Free(s->req);
    PyMem_Free(s->hold);
    PyMem_Free(s->idx);
    PyMem_Free(s->st);
    PyMem_Free(s->failed);
    memset(s, 0, sizeof *s);
}

/* The header of a reply as int64[HEADER_LEN], with `room` bytes after it (an inline payload's). */
static int64_t *reply_header(int64_t job, int kind, int op, int code, int ndim,
                             const Py_ssize_t *shape, int64_t elapsed_ns, int64_t nbytes,
                             Py_ssize_t room)
{
    int64_t *h = PyMem_Calloc(1, HEADER_BYTES + room);
    if (!h) {
        PyErr_NoMemory();
        return NULL;
    }
    h[0] = REPLY_MAGIC;
    h[1] = job;
    h[2] = kind;
    h[3] = op;
    h[4] = code;
    h[5] = ndim;
    for (int i = 0; i < ndim; i++)
        h[6 + i] = shape[i];
    h[6 + MAX_NDIM] = elapsed_ns;
    h[7 + MAX_NDIM] = nbytes;
    return h;
}

/* ================================================================== the root */
typedef struct {
    PyObject_HEAD
    MPI_Comm comm;
    int n;
    int *ranks;
    int tag_ctrl, tag_task, tag_hdr, tag_res, tag_cancel;
    int64_t *hdr;              /* n * SLOT_LEN: one header (and inline payload) buffer per worker */
    MPI_Request *hreq;         /* the posted header receives (null: none posted) */
    int *hidx;
    MPI_Status *hst;
    int *failed;               /* MPI error classes that mean "a process failed" */
    int nfailed;
    int busy;                  /* a method runs with the GIL released: no other may start */
    int pinned;                /* an active header receive was let go: hdr must outlive us */
    int spin_yield;            /* yield the core between tests while spinning (see mpi_yields) */
    Sends out;
} Root;

static int is_failed(const int *failed, int nfailed, int cls)
{
    for (int i = 0; i < nfailed; i++)
        if (failed[i] == cls)
            return 1;
    return 0;
}

/* A sequence of ints from lo to hi into a new PyMem array (*out, *n items); -1 with an
 * exception naming `what`[i] otherwise (nothing left allocated). */
static int read_ints(PyObject *seq, const char *what, long lo, long hi, int **out, Py_ssize_t *n)
{
    char msg[64];
    snprintf(msg, sizeof msg, "`%s` must be a sequence of ints", what);
    PyObject *f = PySequence_Fast(seq, msg);
    if (!f)
        return -1;
    Py_ssize_t m = PySequence_Fast_GET_SIZE(f);
    int *v = PyMem_Calloc(m ? m : 1, sizeof(int));
    if (!v) {
        Py_DECREF(f);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < m; i++) {
        long x = PyLong_AsLong(PySequence_Fast_GET_ITEM(f, i));
        if ((x == -1 && PyErr_Occurred()) || x < lo || x > hi) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "`%s[%zd]` must be from %ld to %ld, got %ld", what,
                             i, lo, hi, x);
            PyMem_Free(v);
            Py_DECREF(f);
            return -1;
        }
        v[i] = (int)x;
    }
    Py_DECREF(f);
    *out = v;
    *n = m;
    return 0;
}

static int comm_from(PyObject *fcomm, MPI_Comm *comm)
{
    long f = PyLong_AsLong(fcomm);
    if (f == -1 && PyErr_Occurred())
        return -1;
    if (f < INT_MIN || f > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "`fcomm` must be a Fortran communicator handle, got %ld", f);
        return -1;
    }
    *comm = MPI_Comm_f2c((MPI_Fint)f);
    if (*comm == MPI_COMM_NULL) {
        PyErr_SetString(PyExc_ValueError, "`fcomm` is the null communicator");
        return -1;
    }
    return 0;
}

static PyObject *Root_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    Root *self = (Root *)PyType_GenericNew(type, args, kw);
    if (self)
        self->comm = MPI_COMM_NULL;
    return (PyObject *)self;
}

static int Root_init(Root *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"fcomm", "ranks", "tags", "failed", "spin_yield", NULL};
    PyObject *fcomm, *ranks, *failed;
    int tags[5], spin_yield = 1;
    if (self->ranks) {
        PyErr_SetString(PyExc_RuntimeError, "Root is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO(iiiii)O|p", names, &fcomm, &ranks, &tags[0],
                                     &tags[1], &tags[2], &tags[3], &tags[4], &failed,
                                     &spin_yield))
        return -1;
    self->spin_yield = spin_yield;
    if (comm_from(fcomm, &self->comm) < 0)
        return -1;
    int size = 0;
    MPI_Comm_size(self->comm, &size);
    int *rk = NULL, *fc = NULL, *hidx = NULL;
    int64_t *hdr = NULL;
    MPI_Request *hreq = NULL;
    MPI_Status *hst = NULL;
    Py_ssize_t n = 0, nf = 0;
    if (read_ints(ranks, "ranks", 0, size - 1, &rk, &n) < 0 ||
        read_ints(failed, "failed", INT_MIN, INT_MAX, &fc, &nf) < 0)
        goto fail;
    if (n < 1 || n >= size) {
        PyErr_Format(PyExc_ValueError, "`ranks` must list 1 to %d workers, got %zd", size - 1, n);
        goto fail;
    }
    hdr = PyMem_Calloc(n * SLOT_LEN, sizeof(int64_t));
    hreq = PyMem_Calloc(n, sizeof(MPI_Request));
    hidx = PyMem_Calloc(n, sizeof(int));
    hst = PyMem_Calloc(n, sizeof(MPI_Status));
    if (!hdr || !hreq || !hidx || !hst) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        hreq[i] = MPI_REQUEST_NULL;
    self->n = (int)n;
    self->ranks = rk;
    self->hdr = hdr;
    self->hreq = hreq;
    self->hidx = hidx;
    self->hst = hst;
    self->failed = fc;
    self->nfailed = (int)nf;
    self->tag_ctrl = tags[0];
    self->tag_task = tags[1];
    self->tag_hdr = tags[2];
    self->tag_res = tags[3];
    self->tag_cancel = tags[4];
    return 0;
fail:
    PyMem_Free(rk), PyMem_Free(fc), PyMem_Free(hdr), PyMem_Free(hreq), PyMem_Free(hidx);
    PyMem_Free(hst);
    return -1;
}

static void Root_dealloc(Root *self)
{
    int fin = 0;
    MPI_Finalized(&fin);
    int live = self->pinned;
    for (int i = 0; self->hreq && i < self->n; i++)
        live |= self->hreq[i] != MPI_REQUEST_NULL;
    if (live && !fin)
        self->hdr = NULL;   /* leaked on purpose: a receive may still write into it */
    sends_free(&self->out);
    PyMem_Free(self->ranks);
    PyMem_Free(self->hdr);
    PyMem_Free(self->hreq);
    PyMem_Free(self->hidx);
    PyMem_Free(self->hst);
    PyMem_Free(self->failed);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Every method of an engine starts here: initialised, and not in use by another thread (a
 * method that releases the GIL sets busy; the cluster's lock should make this impossible). */
static int engine_ready(int initialised, int busy, const char *name)
{
    if (!initialised) {
        PyErr_Format(PyExc_RuntimeError, "%s is not initialised", name);
        return -1;
    }
    if (busy) {
        PyErr_Format(PyExc_RuntimeError, "%s is in use by another thread (use it under the "
                     "cluster's lock)", name);
        return -1;
    }
    return 0;
}

static int root_ready(Root *self)
{
    return engine_ready(self->ranks != NULL, self->busy, "Root");
}

static int worker_index(Root *self, PyObject *arg, int *w)
{
    long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0 || v >= self->n) {
        PyErr_Format(PyExc_IndexError, "worker %ld is not between 0 and %d", v, self->n - 1);
        return -1;
    }
    *w = (int)v;
    return 0;
}

static int repost(Root *self, int w)
{
    return MPI_Irecv(self->hdr + (size_t)w * SLOT_LEN, SLOT_LEN * 8, MPI_BYTE, self->ranks[w],
                     self->tag_hdr, self->comm, &self->hreq[w]);
}

static PyObject *Root_post(Root *self, PyObject *arg)
{
    int w;
    if (root_ready(self) < 0 || worker_index(self, arg, &w) < 0)
        return NULL;
    if (self->hreq[w] != MPI_REQUEST_NULL) {
        PyErr_Format(PyExc_RuntimeError, "worker %d already has a posted header receive", w);
        return NULL;
    }
    int rc = repost(self, w);
    if (rc != MPI_SUCCESS)
        return mpi_fail(rc, "MPI_Irecv (reply header)");
    Py_RETURN_NONE;
}

/* drop(w, cancel=False): forget worker w's header receive (it is dead, or said goodbye). A
 * posted one is cancelled first when asked, and waited for 10 ms at most; one not done by
 * then, or not cancelled, is let go while still active, and the header buffers are kept for
 * good. */
static PyObject *Root_drop(Root *self, PyObject *args)
{
    PyObject *wo;
    int w, cancel = 0;
    if (root_ready(self) < 0 || !PyArg_ParseTuple(args, "O|p", &wo, &cancel) ||
        worker_index(self, wo, &w) < 0)
        return NULL;
    if (self->hreq[w] != MPI_REQUEST_NULL) {
        int done = 0;
        if (cancel) {
            /* a receive already matched by a reply with an inline payload (past MPI's eager
               size) cannot be cancelled and completes only with the sender's progress: wait
               10 ms at most, then let it go as below */
            MPI_Cancel(&self->hreq[w]);
            double until = mono() + 0.01;
            while (!done && MPI_Test(&self->hreq[w], &done, MPI_STATUS_IGNORE) == MPI_SUCCESS &&
                   mono() < until)
                ;
        }
        if (!done) {
            /* left to MPI, not freed: under ULFM a receive from a failed process may still
             * complete in error, and one freed by then aborts the job ("Recv error after
             * request freed"); its header buffer stays (pinned). One per dropped worker. */
            self->pinned = 1;
        }
        self->hreq[w] = MPI_REQUEST_NULL;
    }
    Py_RETURN_NONE;
}

/* One message on tag CTRL to worker w: the `parts` pieces (ptr[i], len[i]) copied one after
 * another (the first a request's control bytes, at least REQ_HEAD of them, the rest its
 * arrays), flag bit 3 (inline arrays) set in the copy and, where `job` is given, that job id
 * written over the copy's. -1 with an exception set on failure (nothing posted). */
static int post_inline(Root *self, int w, const void *const *ptr, const Py_ssize_t *len,
                       int parts, const int64_t *job)
{
    Py_ssize_t total = 0;
    for (int i = 0; i < parts; i++)
        total += len[i];
    if (sends_reserve(&self->out, 1) < 0)
        return -1;
    char *b = PyMem_Malloc(total);
    if (!b) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t at = 0;
    for (int i = 0; i < parts; i++) {
        if (len[i])
            memcpy(b + at, ptr[i], len[i]);
        at += len[i];
    }
    b[5] |= 8;
    if (job) {   /* little-endian, as protocol.py packs it */
        uint64_t j = (uint64_t)*job;
        for (int i = 0; i < 8; i++)
            b[JOB_AT + i] = (char)(unsigned char)(j >> (8 * i));
    }
    INLINE_OUT++;
    return sends_post(&self->out, self->comm, self->ranks[w], self->tag_ctrl, NULL, NULL, b, total);
}

/* A request's control bytes (tag CTRL) and each of its arrays (tag TASK) to worker w; arrays
 * of at most INLINE_MAX bytes in all ride in the control message instead (flag bit 3), one
 * message. `a` is a PySequence_Fast of m buffers. Every buffer is checked and room for every
 * send reserved before the first is posted. -1 with an exception set on failure. */
static int request_one(Root *self, int w, PyObject *ctrl, PyObject *a, Py_ssize_t m)
{
    Py_buffer views[1 + MAX_ARRAYS];
    PyObject *objs[1 + MAX_ARRAYS];
    Py_ssize_t got = 0, k = 0;
    for (Py_ssize_t i = 0; i <= m; i++, got++) {
        objs[i] = i == 0 ? ctrl : PySequence_Fast_GET_ITEM(a, i - 1);
        if (PyObject_GetBuffer(objs[i], &views[i], PyBUF_C_CONTIGUOUS) < 0)
            goto fail;
        k += pieces(views[i].len);
    }
    int dest = self->ranks[w];
    Py_ssize_t total = views[0].len;
    for (Py_ssize_t i = 1; i <= m; i++)
        total += views[i].len;
    if (views[0].len >= REQ_HEAD && ((const unsigned char *)views[0].buf)[5] & 8) {
        PyErr_SetString(PyExc_ValueError, "a request's control bytes must not set flag bit 3 "
                        "(inline arrays): this engine sets it where the arrays travel inline");
        goto fail;
    }
    if (m > 0 && total - views[0].len <= INLINE_MAX && total <= CHUNK && views[0].len >= REQ_HEAD) {
        /* small arrays ride inline: one message, flag bit 3 set in its copy of the header */
        const void *ptr[1 + MAX_ARRAYS];
        Py_ssize_t len[1 + MAX_ARRAYS];
        for (Py_ssize_t i = 0; i <= m; i++) {
            ptr[i] = views[i].buf;
            len[i] = views[i].len;
        }
        int rc = post_inline(self, w, ptr, len, (int)m + 1, NULL);
        for (Py_ssize_t i = 0; i <= m; i++)
            PyBuffer_Release(&views[i]);
        return rc;
    }
    if (sends_reserve(&self->out, k) < 0)
        goto fail;
    for (Py_ssize_t i = 0; i <= m; i++) {
        Py_buffer v = views[i];
        got = i + 1;   /* views[i] is the sends' from here on */
        if (sends_post(&self->out, self->comm, dest, i == 0 ? self->tag_ctrl : self->tag_task,
                       &v, objs[i], NULL, 0) < 0)
            goto fail_from;
    }
    return 0;
fail_from:
    for (Py_ssize_t i = got; i <= m; i++)
        PyBuffer_Release(&views[i]);
    return -1;
fail:
    for (Py_ssize_t i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    return -1;
}

static PyObject *fast_arrays(PyObject *arrays, Py_ssize_t *m)
{
    PyObject *a = PySequence_Fast(arrays, "`arrays` must be a sequence of buffers");
    if (!a)
        return NULL;
    *m = PySequence_Fast_GET_SIZE(a);
    if (*m > MAX_ARRAYS) {
        Py_DECREF(a);
        PyErr_Format(PyExc_ValueError, "a request carries at most %d arrays, got %zd", MAX_ARRAYS, *m);
        return NULL;
    }
    return a;
}

/* request(w, ctrl, arrays): request_one to worker w. */
static PyObject *Root_request(Root *self, PyObject *args)
{
    PyObject *wo, *ctrl, *arrays;
    int w;
    Py_ssize_t m;
    if (root_ready(self) < 0 || !PyArg_ParseTuple(args, "OOO", &wo, &ctrl, &arrays) ||
        worker_index(self, wo, &w) < 0)
        return NULL;
    PyObject *a = fast_arrays(arrays, &m);
    if (!a)
        return NULL;
    int rc = request_one(self, w, ctrl, a, m);
    Py_DECREF(a);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* After a failed post to worker `wo` (request_many's, request_stack's): a WireError (mpi_fail's)
 * whose class says a process failed lists the worker in `dead` and is cleared (0: the others
 * still get theirs); any other error stays raised, with the workers listed dead before it as
 * the exception's `dead` (-1). */
static int dead_or_raise(Root *self, PyObject *dead, PyObject *wo)
{
    if (PyErr_ExceptionMatches(WireError) &&
        is_failed(self->failed, self->nfailed, LAST_FAIL_CLASS)) {
        PyErr_Clear();
        return PyList_Append(dead, wo);
    }
    if (PyList_GET_SIZE(dead)) {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        PyErr_NormalizeException(&et, &ev, &tb);
        if (ev && PyObject_SetAttrString(ev, "dead", dead) < 0)
            PyErr_Clear();
        PyErr_Restore(et, ev, tb);
    }
    return -1;
}

/* request_many(workers, ctrl, arrays[, each]) -> [w, ...]: request_one to each worker
 * listed, in order, with `arrays` (each, a positional flag, true: `arrays[i]`, the arrays
 * of the i-th worker listed, every one announced by the same `ctrl`). Checked before the
 * first send: every index, the number of lists and that each holds as many arrays; each
 * worker's buffers are taken when its request is posted (the callers pass contiguous
 * arrays). A worker whose send failed with an error class that means "a process failed"
 * is listed in the result (and the others still get theirs); any other error raises, the
 * workers listed dead before it in the exception's `dead`. */
static PyObject *Root_request_many(Root *self, PyObject *args)
{
    PyObject *ws, *ctrl, *arrays, *per = NULL;
    int each = 0;
    Py_ssize_t m;
    if (root_ready(self) < 0 || !PyArg_ParseTuple(args, "OOO|p", &ws, &ctrl, &arrays, &each))
        return NULL;
    PyObject *wl = PySequence_Fast(ws, "`workers` must be a sequence of worker indices");
    if (!wl)
        return NULL;
    const Py_ssize_t nw = PySequence_Fast_GET_SIZE(wl);
    PyObject *a = NULL, *dead = NULL;
    if (each) {   /* one list of arrays per worker listed, each as a fast sequence */
        PyObject *pl = PySequence_Fast(arrays, "`arrays` must be a sequence of array lists");
        if (!pl)
            goto fail;
        if (PySequence_Fast_GET_SIZE(pl) != nw) {
            PyErr_Format(PyExc_ValueError, "`arrays` must have one list per worker listed (%zd), "
                         "got %zd", nw, PySequence_Fast_GET_SIZE(pl));
            Py_DECREF(pl);
            goto fail;
        }
        per = PyList_New(nw);
        if (!per) {
            Py_DECREF(pl);
            goto fail;
        }
        Py_ssize_t m0 = -1;
        for (Py_ssize_t i = 0; i < nw; i++) {
            Py_ssize_t mi;
            PyObject *ai = fast_arrays(PySequence_Fast_GET_ITEM(pl, i), &mi);
            if (!ai) {
                Py_DECREF(pl);
                goto fail;
            }
            PyList_SET_ITEM(per, i, ai);
            if (m0 >= 0 && mi != m0) {
                PyErr_Format(PyExc_ValueError, "every worker's request must carry as many arrays "
                             "(one control message announces them): %zd and %zd", m0, mi);
                Py_DECREF(pl);
                goto fail;
            }
            m0 = mi;
        }
        Py_DECREF(pl);
    } else {
        a = fast_arrays(arrays, &m);
        if (!a)
            goto fail;
    }
    dead = PyList_New(0);
    if (!dead)
        goto fail;
    for (Py_ssize_t i = 0; i < nw; i++) {   /* every index checked before the first send */
        int w;
        if (worker_index(self, PySequence_Fast_GET_ITEM(wl, i), &w) < 0)
            goto fail;
    }
    for (Py_ssize_t i = 0; i < nw; i++) {
        PyObject *wo = PySequence_Fast_GET_ITEM(wl, i);
        int w;
        if (worker_index(self, wo, &w) < 0)
            goto fail;
        PyObject *ai = each ? PyList_GET_ITEM(per, i) : a;
        if (each)
            m = PySequence_Fast_GET_SIZE(ai);
        if (request_one(self, w, ctrl, ai, m) < 0 && dead_or_raise(self, dead, wo) < 0)
            goto fail;
    }
    Py_DECREF(wl);
    Py_XDECREF(a);
    Py_XDECREF(per);
    return dead;
fail:
    Py_DECREF(wl);
    Py_XDECREF(a);
    Py_XDECREF(per);
    Py_XDECREF(dead);
    return NULL;
}

/* obj's buffer with `flags` into *v; a TypeError naming the argument (`fn`: `name` must be
 * a C-contiguous array (writable where asked), got ...) where it has none (-1). */
static int take_buffer(const char *fn, const char *name, PyObject *obj, Py_buffer *v, int flags)
{
    if (PyObject_GetBuffer(obj, v, flags) == 0)
        return 0;
    PyErr_Clear();
    PyErr_Format(PyExc_TypeError, "%s: `%s` must be a C-contiguous %sarray, got %s", fn, name,
                 flags & PyBUF_WRITABLE ? "writable " : "", Py_TYPE(obj)->tp_name);
    return -1;
}

/* request_stack(workers, ctrl, job, tasks, b) -> [w, ...] or None: to each worker w listed,
 * in order, one message: `ctrl` (a request's control bytes announcing two arrays, its job id
 * left to this call) with `job` written over its id, then tasks[w] and `b` inline (flag bit
 * 3). `tasks` is a C-contiguous stack of one task per worker (its first axis indexed by
 * worker): a small encode's, sent without a list of arrays per worker or a control message
 * per job. None, nothing sent, where a task and `b` do not fit one message (more than
 * INLINE_MAX bytes, or the control bytes and they past the piece size): the caller sends
 * them another way. Checked before the first send: the buffers, the sizes, every index
 * (and that `tasks` has a task for it). The dead and an error as request_many's. */
static PyObject *Root_request_stack(Root *self, PyObject *args)
{
    PyObject *ws, *ctrl, *tasks, *b;
    long long job;
    if (root_ready(self) < 0 ||
        !PyArg_ParseTuple(args, "OOLOO", &ws, &ctrl, &job, &tasks, &b))
        return NULL;
    if (job < -1) {
        PyErr_Format(PyExc_ValueError, "request_stack: `job` must be at least -1, got %lld", job);
        return NULL;
    }
    Py_buffer vc, vt, vb;
    if (take_buffer("request_stack", "ctrl", ctrl, &vc, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (take_buffer("request_stack", "tasks", tasks, &vt, PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&vc);
        return NULL;
    }
    if (take_buffer("request_stack", "b", b, &vb, PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&vc);
        PyBuffer_Release(&vt);
        return NULL;
    }
    PyObject *wl = NULL, *dead = NULL;
    int declined = 0;
    Py_ssize_t per = 0, count = vt.ndim >= 1 ? vt.shape[0] : 0;
    if (vt.ndim < 2 || count < 1) {
        PyErr_Format(PyExc_ValueError, "request_stack: `tasks` must stack one task per worker "
                     "(2 dimensions or more), got %d dimension(s)", vt.ndim);
        goto done;
    }
    per = vt.len / count;
    if (vc.len < REQ_HEAD) {
        PyErr_Format(PyExc_ValueError, "request_stack: `ctrl` must be a request's control bytes "
                     "(%d or more), got %zd bytes", REQ_HEAD, vc.len);
        goto done;
    }
    if (((const unsigned char *)vc.buf)[5] & 8) {
        PyErr_Format(PyExc_ValueError, "request_stack: `ctrl` must leave flag bit 3 (inline "
                     "arrays) clear, got flags 0x%x", (int)((const unsigned char *)vc.buf)[5]);
        goto done;
    }
    if (per + vb.len > INLINE_MAX || vc.len + per + vb.len > CHUNK) {
        declined = 1;   /* not one message: the caller's way, nothing sent */
        goto done;
    }
    wl = PySequence_Fast(ws, "`workers` must be a sequence of worker indices");
    if (!wl)
        goto done;
    const Py_ssize_t nw = PySequence_Fast_GET_SIZE(wl);
    for (Py_ssize_t i = 0; i < nw; i++) {   /* every index checked before the first send */
        int w;
        if (worker_index(self, PySequence_Fast_GET_ITEM(wl, i), &w) < 0)
            goto done;
        if (w >= count) {
            PyErr_Format(PyExc_IndexError, "request_stack: `tasks` holds %zd tasks, no task "
                         "for worker %d", count, w);
            goto done;
        }
    }
    dead = PyList_New(0);
    if (!dead)
        goto done;
    const int64_t j = (int64_t)job;
    for (Py_ssize_t i = 0; i < nw; i++) {
        PyObject *wo = PySequence_Fast_GET_ITEM(wl, i);
        int w = (int)PyLong_AsLong(wo);
        const void *ptr[3] = {vc.buf, (const char *)vt.buf + (Py_ssize_t)w * per, vb.buf};
        const Py_ssize_t len[3] = {vc.len, per, vb.len};
        if (post_inline(self, w, ptr, len, 3, &j) < 0 && dead_or_raise(self, dead, wo) < 0) {
            Py_CLEAR(dead);
            goto done;
        }
    }
done:
    Py_XDECREF(wl);
    PyBuffer_Release(&vc);
    PyBuffer_Release(&vt);
    PyBuffer_Release(&vb);
    if (declined)
        return Py_NewRef(Py_None);
    if (!dead && !PyErr_Occurred())
        PyErr_SetString(PyExc_SystemError, "request_stack: no result");
    return dead;
}

static PyObject *Root_cancel(Root *self, PyObject *args)
{
    PyObject *wo;
    int w;
    long long job;
    if (root_ready(self) < 0 || !PyArg_ParseTuple(args, "OL", &wo, &job) ||
        worker_index(self, wo, &w) < 0)
        return NULL;
    if (sends_reserve(&self->out, 1) < 0)
        return NULL;
    int64_t *b = PyMem_Malloc(sizeof(int64_t));
    if (!b)
        return PyErr_NoMemory();
    *b = (int64_t)job;
    if (sends_post(&self->out, self->comm, self->ranks[w], self->tag_cancel, NULL, NULL, b, 8) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Validate a reply header (protocol.ReplyHeader.from_array's checks). 0: valid. */
static int header_ok(const int64_t *v)
{
    int64_t kind = v[2], op = v[3], code = v[4], ndim = v[5];
    if (v[0] != REPLY_MAGIC || kind < 0 || kind > 3 || v[1] < -1)
        return 0;
    if (op < 0 || op > NOPS)   /* a BYE's too: a field left unchecked was cut to an int */
        return 0;
    if (ndim < 0 || ndim > MAX_NDIM || code < 0 || code >= NDTYPES)
        return 0;
    int64_t count = 1;
    for (int64_t i = 0; i < ndim; i++) {
        int64_t d = v[6 + i];
        if (d < 0)
            return 0;
        if (d && count > MAX_BYTES / d)
            count = MAX_BYTES + 1;    /* past the bound: refused below */
        else
            count *= d;
    }
    for (int64_t i = ndim; i < MAX_NDIM; i++)
        if (v[6 + i])
            return 0;
    if (count > MAX_BYTES / ITEMSIZE[code])
        return 0;
    int64_t nbytes = v[7 + MAX_NDIM];
    if (kind == KIND_RESULT || kind == KIND_ERROR) {
        if (nbytes != count * ITEMSIZE[code])
            return 0;
        if (kind == KIND_ERROR && code != UINT8_CODE)
            return 0;
    } else if (nbytes != 0) {
        return 0;
    }
    return 1;
}

/* A tuple of ndim dimensions (a new reference, NULL with an exception set). */
static PyObject *shape_tuple(int ndim, const int64_t *dims)
{
    PyObject *shape = PyTuple_New(ndim);
    if (!shape)
        return NULL;
    for (int i = 0; i < ndim; i++) {
        PyObject *d = PyLong_FromLongLong(dims[i]);
        if (!d) {
            Py_DECREF(shape);
            return NULL;
        }
        PyTuple_SET_ITEM(shape, i, d);
    }
    return shape;
}

/* The header of a reply message of `count` bytes that reply_layout accepted, as a tuple
 * whose last item is its payload when it came in the same message (a bytearray), else None. */
static PyObject *parsed_header(const int64_t *v, Py_ssize_t count)
{
    PyObject *pay = count > HEADER_BYTES ?
        PyByteArray_FromStringAndSize((const char *)(v + HEADER_LEN), count - HEADER_BYTES) :
        Py_NewRef(Py_None);
    PyObject *shape = pay ? shape_tuple((int)v[5], v + 6) : NULL;
    if (!shape) {
        Py_XDECREF(pay);
        return NULL;
    }
    return Py_BuildValue("(LiiiNLLN)", (long long)v[1], (int)v[2], (int)v[3], (int)v[4], shape,
                         (long long)v[6 + MAX_NDIM], (long long)v[7 + MAX_NDIM], pay);
}

/* How a reply message of `count` bytes is laid out: 1, a header alone (any payload follows
 * as its own message); 2, a header and its whole payload; 0, neither (refused). */
static int reply_layout(const int64_t *v, int count)
{
    if (count < HEADER_BYTES || !header_ok(v))
        return 0;
    if (count == HEADER_BYTES)
        return 1;
    int64_t kind = v[2], nbytes = v[7 + MAX_NDIM];
    if ((kind == KIND_RESULT || kind == KIND_ERROR) && nbytes > 0 && nbytes <= INLINE_MAX &&
        count == HEADER_BYTES + nbytes)
        return 2;
    return 0;
}

/* Worker w's header receive failed: it is let go (Open MPI leaves a failed request
 * allocated; it is not freed, as in sends_test, and its header buffer stays: pinned), then
 * a (w, 2, class) event when the class says a process failed; anything else raises WireError
 * (and drops `res`). Returns -1 after raising. */
static int failed_event(Root *self, PyObject *res, int w, int err)
{
    if (self->hreq[w] != MPI_REQUEST_NULL)
        self->pinned = 1;
    self->hreq[w] = MPI_REQUEST_NULL;
    int cls = err;
    MPI_Error_class(err, &cls);
    if (!is_failed(self->failed, self->nfailed, cls)) {
        Py_DECREF(res);
        mpi_fail(err, "receiving a reply header");
        return -1;
    }
    PyObject *ev = Py_BuildValue("(iii)", w, 2, cls);
    if (!ev || PyList_Append(res, ev) < 0) {
        Py_XDECREF(ev);
        Py_DECREF(res);
        return -1;
    }
    Py_DECREF(ev);
    return 0;
}

/* Where poll lands the inline results of the job a caller waits for (see Root_poll). */
typedef struct {
    int64_t job;
    char *land;            /* one slot of `slot` bytes per worker */
    Py_ssize_t slot, count;
    int ndim;              /* of a slot: the result's dimensions */
    const Py_ssize_t *dims;
    int64_t *got;          /* got[0]: results landed; got[1:]: their workers, in order */
} Hot;

/* Whether the reply header v (whose payload came inline) is a float64 result of the hot job
 * that fits its slot, from a worker not landed yet. */
static int lands(const Hot *hot, const int64_t *v, int w)
{
    if (v[1] != hot->job || v[2] != KIND_RESULT || v[4] != 0 || v[5] != hot->ndim ||
        w >= hot->count || v[7 + MAX_NDIM] != hot->slot || hot->got[0] < 0 ||
        hot->got[0] >= hot->count)
        return 0;   /* (got full, or its count not one: nothing lands outside it) */
    for (int i = 0; i < hot->ndim; i++)
        if (v[6 + i] != hot->dims[i])
            return 0;
    for (int64_t i = 1; i <= hot->got[0]; i++)
        if (hot->got[i] == w)
            return 0;
    return 1;
}

static PyObject *poll_headers(Root *self, double deadline, double spin_until, double pause,
                              double max_pause, int want, Hot *hot);

/* poll(..., want, hot): `hot`, where given, is (job, landing, got): the inline float64
 * results of that job that this poll receives are copied into landing[w] (a C-contiguous
 * float64 array, one slot per worker, of the result's shape) instead of becoming events,
 * their workers appended to got[1:] and counted in got[0] (an int64 array of 1 + landing's
 * first dimension; got[0] as the caller left it): the results of the job a caller waits
 * for, without a Python object each. A poll completes at most one header receive per
 * worker, so a landed result overtakes only other workers' replies, never its own
 * worker's. Any other reply, one from a worker already in got (a worker lands once per
 * job), or one that does not fit the slot, is an event as before. */
static PyObject *Root_poll(Root *self, PyObject *args)
{
    double deadline, spin_until, pause, max_pause;
    int want = 1;
    PyObject *hot_arg = Py_None;
    if (root_ready(self) < 0 ||
        !PyArg_ParseTuple(args, "dddd|iO", &deadline, &spin_until, &pause, &max_pause, &want,
                          &hot_arg))
        return NULL;
    if (hot_arg == Py_None)
        return poll_headers(self, deadline, spin_until, pause, max_pause, want, NULL);
    PyObject *landing, *got;
    long long job;
    if (!PyTuple_Check(hot_arg) || PyTuple_GET_SIZE(hot_arg) != 3) {
        PyErr_Format(PyExc_TypeError, "poll: `hot` must be a tuple (job, landing, got), got %s"
                     " of %zd items", Py_TYPE(hot_arg)->tp_name,
                     PyTuple_Check(hot_arg) ? PyTuple_GET_SIZE(hot_arg) : PyObject_Length(hot_arg));
        return NULL;
    }
    if (!PyArg_ParseTuple(hot_arg, "LOO;poll: `hot` must be (job, landing, got)", &job, &landing,
                          &got))
        return NULL;
    Py_buffer vl, vg;
    if (take_buffer("poll", "landing", landing, &vl,
                    PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return NULL;
    if (take_buffer("poll", "got", got, &vg,
                    PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&vl);
        return NULL;
    }
    PyObject *res = NULL;
    Hot hot;
    if (vl.ndim < 1 || vl.shape[0] < 1 || vl.itemsize != 8 || !vl.format ||
        strcmp(vl.format, "d") != 0) {
        PyErr_Format(PyExc_TypeError, "poll: `landing` must be a float64 array of one slot per "
                     "worker (1 dimension or more, format 'd'), got format '%s' with %d "
                     "dimension(s)", vl.format ? vl.format : "B", vl.ndim);
        goto done;
    }
    hot.count = vl.shape[0];
    if (vg.itemsize != 8 || !vg.format || !vg.format[0] || !strchr("ql", vg.format[0]) ||
        vg.len < 8 * (1 + hot.count)) {
        PyErr_Format(PyExc_TypeError, "poll: `got` must be an int64 array of at least %zd "
                     "items (1 + landing's first dimension), got format '%s', %zd bytes",
                     1 + hot.count, vg.format ? vg.format : "B", vg.len);
        goto done;
    }
    hot.job = (int64_t)job;
    hot.land = vl.buf;
    hot.slot = vl.len / hot.count;
    hot.ndim = vl.ndim - 1;
    hot.dims = vl.shape + 1;
    hot.got = vg.buf;
    if (hot.got[0] < 0 || hot.got[0] > hot.count) {
        PyErr_Format(PyExc_ValueError, "poll: `got[0]` must be from 0 to %zd (results landed), "
                     "got %lld", hot.count, (long long)hot.got[0]);
        goto done;
    }
    res = poll_headers(self, deadline, spin_until, pause, max_pause, want, &hot);
done:
    PyBuffer_Release(&vl);
    PyBuffer_Release(&vg);
    return res;
}

/* poll(deadline, spin_until, min_pause, max_pause, want=1) -> list of events, each
 *   (w, 0, (job, kind, op, dtype, shape, elapsed_ns, nbytes, inline))   a valid header;
 *        inline: its payload as a bytearray when it came in the same message, else None
 *   (w, 1, bytes)                                               a header refused here (raw)
 *   (w, 2, error class)                                         its receive failed
 * Tests the posted header receives and the sends in flight until `want` headers arrived (or
 * every posted one, or one with an error), or `deadline` (perf_counter seconds) passes with
 * fewer (none, or what came): a caller that waits for several replies (a call's) takes them
 * in one return, not one Python round each. With the GIL released: yielding the core between
 * tests until `spin_until`, then sleeping from min_pause growing 1.5x to max_pause. An
 * acknowledgement's header, and one with its payload inline, has its worker's receive posted
 * again at once; one that announces a payload to follow gets it posted again by recv(), once
 * the payload is in, so that a payload is never paired with a later header; a goodbye's and
 * a refused header's never. */
static PyObject *poll_headers(Root *self, double deadline, double spin_until, double pause,
                              double max_pause, int want, Hot *hot)
{
    /* out: headers completed so far (hidx/hst[0:out]); base: where the last test's began
       (only its statuses carry an error field) */
    int out = 0, base = 0, rc = MPI_SUCCESS, posted = 0;
    for (int i = 0; i < self->n; i++)
        posted += self->hreq[i] != MPI_REQUEST_NULL;
    double next_signals = mono() + 0.01;
    self->busy = 1;
    PyThreadState *ts = PyEval_SaveThread();
    for (;;) {
        int called = sends_test(&self->out);
        if (posted > out) {
            /* completed receives become MPI_REQUEST_NULL: later tests add to hidx/hst */
            called = 1;
            int more = 0;
            base = out;
            rc = MPI_Testsome(self->n, self->hreq, &more, self->hidx + out, self->hst + out);
            if (more == MPI_UNDEFINED)
                more = 0;
            out += more;
            if (rc != MPI_SUCCESS || out >= want || (out > 0 && out >= posted))
                break;
        }
        double now = mono();
        if (now >= deadline)
            break;
        if (now < spin_until) {
            if (self->spin_yield || !called)   /* no MPI call this round: none yielded */
                sched_yield();
        } else {
            double left = deadline - now;
            nap(pause < left ? pause : left);
            pause = pause * 1.5 < max_pause ? pause * 1.5 : max_pause;
        }
        if (now >= next_signals) {   /* let a Ctrl-C through a long wait */
            if (out > 0)
                break;   /* headers in hand are returned first: a signal must not drop them
                            (their receives are posted again only as they are handled) */
            PyEval_RestoreThread(ts);
            if (PyErr_CheckSignals() < 0) {
                self->busy = 0;
                return NULL;
            }
            ts = PyEval_SaveThread();
            next_signals = now + 0.01;
        }
    }
    PyEval_RestoreThread(ts);
    self->busy = 0;
    sends_compact(&self->out);
    if (self->out.err) {
        int cls = self->out.err;
        MPI_Error_class(self->out.err, &cls);
        int err = self->out.err;
        self->out.err = 0;
        if (!is_failed(self->failed, self->nfailed, cls))
            return mpi_fail(err, "a send to a worker");
    }
    PyObject *res = PyList_New(0);
    if (!res)
        return NULL;
    if (rc == MPI_ERR_IN_STATUS) {
        /* some completed with an error (e.g. a failed process under ULFM): keep the good
         * ones, name the failed workers */
        int k = base;
        for (int i = base; i < out; i++) {
            int w = self->hidx[i], err = self->hst[i].MPI_ERROR;
            if (err == MPI_SUCCESS) {
                self->hidx[k] = w;
                self->hst[k++] = self->hst[i];
                continue;
            }
            if (failed_event(self, res, w, err) < 0)
                return NULL;
        }
        out = k;
    } else if (rc != MPI_SUCCESS) {
        /* another error: test the rest one by one, which names each failed worker (those
           completed by earlier tests are kept) */
        out = base;
        for (int w = 0; w < self->n; w++) {
            if (self->hreq[w] == MPI_REQUEST_NULL)
                continue;
            int flag = 0;
            MPI_Status st;
            int r1 = MPI_Test(&self->hreq[w], &flag, &st);
            if (r1 != MPI_SUCCESS) {
                if (failed_event(self, res, w, r1) < 0)
                    return NULL;
            } else if (flag) {
                self->hidx[out] = w;
                self->hst[out++] = st;
            }
        }
    }
    for (int k = 0; k < out; k++) {
        int w = self->hidx[k];
        const int64_t *v = self->hdr + (size_t)w * SLOT_LEN;
        int count = 0;
        MPI_Get_count(&self->hst[k], MPI_BYTE, &count);
        PyObject *ev;
        int layout = reply_layout(v, count);
        if (layout == 2 && hot && lands(hot, v, w)) {
            /* the waited-for job's result: into its slot, no event. (Where events came before
               it in this poll they are other workers' (a poll completes one header receive
               a worker), so no reply of its worker is overtaken.) */
            memcpy(hot->land + (Py_ssize_t)w * hot->slot, v + HEADER_LEN, hot->slot);
            hot->got[1 + hot->got[0]++] = w;
            INLINE_IN++;
            int r2 = repost(self, w);
            if (r2 != MPI_SUCCESS) {
                Py_DECREF(res);
                return mpi_fail(r2, "MPI_Irecv (reply header)");
            }
            continue;
        }
        if (layout) {
            PyObject *h = parsed_header(v, count);
            ev = h ? Py_BuildValue("(iiN)", w, 0, h) : NULL;
            INLINE_IN += ev && layout == 2;
            /* nothing more to receive from w for this reply: its next header may come */
            if (ev && (v[2] == KIND_ACK || layout == 2)) {
                int r2 = repost(self, w);
                if (r2 != MPI_SUCCESS) {
                    Py_DECREF(ev);
                    Py_DECREF(res);
                    return mpi_fail(r2, "MPI_Irecv (reply header)");
                }
            }
        } else {
            ev = Py_BuildValue("(iiy#)", w, 1, (const char *)v, (Py_ssize_t)count);
        }
        if (!ev || PyList_Append(res, ev) < 0) {
            Py_XDECREF(ev);
            Py_DECREF(res);
            return NULL;
        }
        Py_DECREF(ev);
    }
    return res;
}

/* recv(w, buffer): receive worker w's reply payload (tag RES) into a writable contiguous
 * buffer, GIL released; returns the bytes received (the caller compares them with the
 * header's). Once the whole payload is in, w's header receive is posted again. */
static PyObject *Root_recv(Root *self, PyObject *args)
{
    PyObject *wo;
    int w;
    Py_buffer view;
    if (root_ready(self) < 0 || !PyArg_ParseTuple(args, "Ow*", &wo, &view))
        return NULL;
    if (worker_index(self, wo, &w) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    int rc;
    Py_ssize_t got = 0;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    rc = recv_bytes(self->comm, self->ranks[w], self->tag_res, view.buf, view.len, &got);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    Py_ssize_t want = view.len;
    PyBuffer_Release(&view);
    if (rc != MPI_SUCCESS)
        return mpi_fail(rc, "MPI_Recv (reply payload)");
    if (got == want && self->hreq[w] == MPI_REQUEST_NULL) {
        int r2 = repost(self, w);
        if (r2 != MPI_SUCCESS)
            return mpi_fail(r2, "MPI_Irecv (reply header)");
    }
    return PyLong_FromSsize_t(got);
}

static PyObject *Root_counts(Root *self, PyObject *Py_UNUSED(ignored))
{
    if (root_ready(self) < 0)
        return NULL;
    sends_test(&self->out);
    sends_compact(&self->out);
    int posted = 0;
    for (int i = 0; i < self->n; i++)
        posted += self->hreq[i] != MPI_REQUEST_NULL;
    return Py_BuildValue("(in)", posted, self->out.n);
}

static PyObject *Root_posted(Root *self, PyObject *arg)
{
    int w;
    if (root_ready(self) < 0 || worker_index(self, arg, &w) < 0)
        return NULL;
    return PyBool_FromLong(self->hreq[w] != MPI_REQUEST_NULL);
}

static PyMethodDef Root_methods[] = {
    {"post", (PyCFunction)Root_post, METH_O, "post(w): post worker w's header receive"},
    {"drop", (PyCFunction)Root_drop, METH_VARARGS,
     "drop(w, cancel=False): forget worker w's header receive (cancel it first if asked)"},
    {"request", (PyCFunction)Root_request, METH_VARARGS,
     "request(w, ctrl, arrays): send a request's control bytes and its arrays to worker w"},
    {"request_many", (PyCFunction)Root_request_many, METH_VARARGS,
     "request_many(workers, ctrl, arrays[, each]) -> the workers whose process failed: "
     "request() to each (each, positional: arrays[i] to the i-th worker listed)"},
    {"request_stack", (PyCFunction)Root_request_stack, METH_VARARGS,
     "request_stack(workers, ctrl, job, tasks, b) -> failed workers: tasks[w] and b inline to each"},
    {"cancel", (PyCFunction)Root_cancel, METH_VARARGS, "cancel(w, job): tell worker w job settled"},
    {"poll", (PyCFunction)Root_poll, METH_VARARGS,
     "poll(deadline, spin_until, min_pause, max_pause[, want, hot]) -> events"},
    {"recv", (PyCFunction)Root_recv, METH_VARARGS, "recv(w, buffer) -> bytes received"},
    {"counts", (PyCFunction)Root_counts, METH_NOARGS,
     "counts() -> (posted header receives, sends in flight)"},
    {"posted", (PyCFunction)Root_posted, METH_O, "posted(w) -> whether w's header receive is posted"},
    {NULL}};

static PyTypeObject RootType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "codedml.runtime._wire.Root",
    .tp_basicsize = sizeof(Root),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Root_new,
    .tp_init = (initproc)Root_init,
    .tp_dealloc = (destructor)Root_dealloc,
    .tp_methods = Root_methods,
    .tp_doc = "The root's message engine: Root(fcomm, ranks, (ctrl, task, hdr, res, cancel), failed)",
};

/* ================================================================== a worker */
typedef struct {
    PyObject_HEAD
    MPI_Comm comm;
    int root;
    int tag_ctrl, tag_task, tag_hdr, tag_res, tag_cancel;
    int64_t cbuf;
    MPI_Request creq;
    int64_t *cancelled;
    Py_ssize_t ncan, capcan;
    double last_look;
    unsigned char *raw;
    Py_ssize_t rawcap;
    Sends out;
    int started;
    int busy;                  /* a method runs with the GIL released */
    int spin_yield;            /* yield the core between probes while spinning */
    /* serve()'s calls (set by calls()): the handlers by name, protocol's memo of checked
       call parameters (bytes -> (name, params)), the handlers' context, protocol.DTYPES,
       numpy.frombuffer, Op.CALL and Kind.RESULT; the worker's plain product (a, b) -> array and
       Op.MATMUL, or NULL and -1 */
    PyObject *handlers, *memo, *ctx, *dtypes, *frombuffer, *ndarray, *product;
    int op_call, kind_result, op_matmul;
    /* the largest plain float64 product (multiply-adds) serve() computes itself (0: none;
       set by calls(), for the numpy backend) */
    long long small_macs;
} Worker;

static PyObject *Worker_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    Worker *self = (Worker *)PyType_GenericNew(type, args, kw);
    if (self) {
        self->comm = MPI_COMM_NULL;
        self->creq = MPI_REQUEST_NULL;   /* not 0: Open MPI's null request is an address */
    }
    return (PyObject *)self;
}

static int Worker_init(Worker *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"fcomm", "root", "tags", "spin_yield", NULL};
    PyObject *fcomm;
    int tags[5], root, spin_yield = 1;
    if (self->started) {
        PyErr_SetString(PyExc_RuntimeError, "Worker is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oi(iiiii)|p", names, &fcomm, &root,
                                     &tags[0], &tags[1], &tags[2], &tags[3], &tags[4],
                                     &spin_yield))
        return -1;
    self->spin_yield = spin_yield;
    if (comm_from(fcomm, &self->comm) < 0)
        return -1;
    int size = 0;
    MPI_Comm_size(self->comm, &size);
    if (root < 0 || root >= size) {
        PyErr_Format(PyExc_ValueError, "`root` must be a rank from 0 to %d, got %d", size - 1, root);
        return -1;
    }
    self->root = root;
    self->tag_ctrl = tags[0];
    self->tag_task = tags[1];
    self->tag_hdr = tags[2];
    self->tag_res = tags[3];
    self->tag_cancel = tags[4];
    int rc = MPI_Irecv(&self->cbuf, 8, MPI_BYTE, self->root, self->tag_cancel, self->comm, &self->creq);
    if (rc != MPI_SUCCESS) {
        self->creq = MPI_REQUEST_NULL;
        mpi_fail(rc, "MPI_Irecv (cancels)");
        return -1;
    }
    self->started = 1;
    return 0;
}

/* Drop what calls() gave serve() (at finish() and in dealloc). */
static void drop_calls(Worker *self)
{
    Py_CLEAR(self->handlers);
    Py_CLEAR(self->memo);
    Py_CLEAR(self->ctx);
    Py_CLEAR(self->dtypes);
    Py_CLEAR(self->frombuffer);
    Py_CLEAR(self->ndarray);
    Py_CLEAR(self->product);
}

static void Worker_dealloc(Worker *self)
{
    int fin = 0;
    MPI_Finalized(&fin);
    if (self->creq != MPI_REQUEST_NULL && !fin) {
        MPI_Cancel(&self->creq);
        MPI_Wait(&self->creq, MPI_STATUS_IGNORE);
    }
    sends_free(&self->out);
    PyMem_RawFree(self->cancelled);
    PyMem_Free(self->raw);
    drop_calls(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int worker_ready(Worker *self)
{
    return engine_ready(self->started, self->busy, "Worker");
}

/* Read every cancel that has arrived (no GIL needed: the set grows with PyMem_RawRealloc,
 * before a cancel is taken, so none is lost for want of memory). Returns an MPI code. */
static int read_cancels(Worker *self)
{
    self->last_look = mono();
    for (;;) {
        int flag = 0;
        if (self->creq == MPI_REQUEST_NULL)
            return MPI_SUCCESS;
        if (self->ncan == self->capcan) {
            Py_ssize_t cap = self->capcan ? 2 * self->capcan : 16;
            int64_t *c = PyMem_RawRealloc(self->cancelled, cap * sizeof *c);
            if (!c)
                return MPI_ERR_NO_MEM;
            self->cancelled = c;
            self->capcan = cap;
        }
        int rc = MPI_Test(&self->creq, &flag, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS)
            return rc;
        if (!flag)
            return MPI_SUCCESS;
        self->cancelled[self->ncan++] = self->cbuf;
        rc = MPI_Irecv(&self->cbuf, 8, MPI_BYTE, self->root, self->tag_cancel, self->comm, &self->creq);
        if (rc != MPI_SUCCESS) {
            self->creq = MPI_REQUEST_NULL;
            return rc;
        }
    }
}

static int take_cancel(Worker *self, int64_t job)
{
    for (Py_ssize_t i = 0; i < self->ncan; i++)
        if (self->cancelled[i] == job) {
            self->cancelled[i] = self->cancelled[--self->ncan];
            return 1;
        }
    return 0;
}

/* Parse a request's fixed header and array records (protocol.Request.from_bytes' checks
 * short of the JSON). Returns 1 when valid, filling the outputs. */
typedef struct {
    int op, flags, narr;
    int64_t job, handle, field;
    uint32_t plen;
    Py_ssize_t params_at;
    Py_ssize_t inline_at;      /* where the arrays start in the message (flag 8), else -1 */
    int code[MAX_ARRAYS], ndim[MAX_ARRAYS];
    int64_t dims[MAX_ARRAYS][MAX_NDIM];
    int64_t nbytes[MAX_ARRAYS];
} Parsed;

static int64_t le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return (int64_t)v;
}

static int parse_request(const unsigned char *b, Py_ssize_t n, Parsed *q)
{
    if (n < REQ_HEAD)
        return 0;
    uint32_t magic = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    if (magic != REQ_MAGIC)
        return 0;
    q->op = b[4];
    q->flags = b[5];
    q->narr = b[6];
    q->job = le64(b + 8);
    q->handle = le64(b + 16);
    q->field = le64(b + 24);
    q->plen = (uint32_t)b[32] | (uint32_t)b[33] << 8 | (uint32_t)b[34] << 16 | (uint32_t)b[35] << 24;
    if (q->op < 1 || q->op > NOPS || q->flags & ~15 || q->narr > MAX_ARRAYS)
        return 0;
    if (q->job < -1 || (q->flags & 2 ? q->handle < -1 : q->handle != -1) ||
        (q->flags & 4 ? q->field < -1 : q->field != -1))
        return 0;
    Py_ssize_t pos = REQ_HEAD;
    for (int a = 0; a < q->narr; a++) {
        if (pos + 2 > n)
            return 0;
        int code = b[pos], nd = b[pos + 1];
        if (nd > MAX_NDIM || code >= NDTYPES)
            return 0;
        if (pos + 2 + 8 * (Py_ssize_t)nd > n)
            return 0;
        int64_t count = 1;
        for (int i = 0; i < nd; i++) {
            int64_t d = le64(b + pos + 2 + 8 * i);
            if (d < 0)
                return 0;
            q->dims[a][i] = d;
            if (d && count > MAX_BYTES / d)
                count = MAX_BYTES + 1;
            else
                count *= d;
        }
        if (count > MAX_BYTES / ITEMSIZE[code])
            return 0;
        q->code[a] = code;
        q->ndim[a] = nd;
        q->nbytes[a] = count * ITEMSIZE[code];
        pos += 2 + 8 * (Py_ssize_t)nd;
    }
    q->params_at = pos;
    q->inline_at = -1;
    if (q->flags & 8) {   /* the arrays follow the parameters, in this message */
        int64_t all = 0;
        for (int a = 0; a < q->narr; a++)
            all += q->nbytes[a];
        if (q->narr == 0 || all > INLINE_MAX)
            return 0;
        q->inline_at = pos + (Py_ssize_t)q->plen;
        return q->inline_at + all == n;
    }
    return pos + (Py_ssize_t)q->plen == n;
}

/* Wait (GIL released) until a request is waiting; returns an MPI code, *count its bytes. */
static int wait_request(Worker *self, double spin, int *count, int *waited, PyThreadState **ts)
{
    double now = mono(), spin_until = now + spin, chores = now, pause = 5e-5;
    double next_signals = now + 0.01;
    *waited = 0;
    for (;;) {
        int flag = 0;
        MPI_Status st;
        int rc = MPI_Iprobe(self->root, self->tag_ctrl, self->comm, &flag, &st);
        if (rc != MPI_SUCCESS)
            return rc;
        if (flag)
            return MPI_Get_count(&st, MPI_BYTE, count);
        *waited = 1;
        now = mono();
        int spinning = now < spin_until;
        if (!spinning || now >= chores) {   /* cancels and finished sends: every ms */
            rc = read_cancels(self);
            if (rc != MPI_SUCCESS)
                return rc;
            sends_test(&self->out);
            chores = now + 1e-3;
        }
        if (now >= next_signals) {
            PyEval_RestoreThread(*ts);
            int bad = PyErr_CheckSignals();
            *ts = PyEval_SaveThread();
            if (bad < 0)
                return -1;
            next_signals = now + 0.01;
        }
        if (spinning) {
            if (self->spin_yield)
                sched_yield();
            continue;
        }
        nap(pause);
        pause = pause * 2 < 1e-3 ? pause * 2 : 1e-3;
    }
}

/* Receive the request's arrays (tag TASK) into fresh bytearrays: a list of (shape, code,
 * bytearray), or, when !keep (a skipped request), receive and drop them (Py_None, borrowed). */
static PyObject *arrays_of(Worker *self, const Parsed *q, int keep)
{
    INLINE_IN += q->inline_at >= 0;
    if (q->inline_at >= 0 && !keep)
        return Py_None;   /* nothing more to receive */
    PyObject *list = keep ? PyList_New(q->narr) : NULL;
    if (keep && !list)
        return NULL;
    Py_ssize_t at = q->inline_at;
    for (int a = 0; a < q->narr; a++) {
        Py_ssize_t want = (Py_ssize_t)q->nbytes[a];
        PyObject *ba;
        if (at >= 0) {   /* inline: parse_request checked that the bytes are all there */
            ba = PyByteArray_FromStringAndSize((const char *)self->raw + at, want);
            at += want;
        } else {
            ba = PyByteArray_FromStringAndSize(NULL, want);
        }
        if (!ba) {
            Py_XDECREF(list);
            return NULL;
        }
        int rc = MPI_SUCCESS;
        Py_ssize_t got = want;
        char *p = PyByteArray_AS_STRING(ba);
        if (q->inline_at < 0) {
            self->busy = 1;
            Py_BEGIN_ALLOW_THREADS
            rc = recv_bytes(self->comm, self->root, self->tag_task, p, want, &got);
            Py_END_ALLOW_THREADS
            self->busy = 0;
        }
        if (rc != MPI_SUCCESS || got != want) {
            Py_DECREF(ba);
            Py_XDECREF(list);
            if (rc != MPI_SUCCESS)
                return mpi_fail(rc, "MPI_Recv (request array)");
            return PyErr_Format(PyExc_ValueError, "request array %d: %zd bytes arrived, its "
                                "record announced %zd", a, got, want);
        }
        if (!keep) {
            Py_DECREF(ba);
            continue;
        }
        PyObject *shape = shape_tuple(q->ndim[a], q->dims[a]), *item = NULL;
        if (shape)
            item = Py_BuildValue("(NiN)", shape, q->code[a], ba);   /* steals both */
        else
            Py_DECREF(ba);
        if (!item) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, a, item);
    }
    return keep ? list : Py_None;
}

/* The next request not cancelled into *q, with its arrays (arrays_of's list) into *arrays:
 * 0; a request refused by the parser: 1 (its bytes in self->raw, *count long); -1 with an
 * exception set. */
static int next_request(Worker *self, double spin, double stale, Parsed *q, PyObject **arrays,
                        int *count_out)
{
    for (;;) {
        sends_test(&self->out);
        sends_compact(&self->out);
        int count = 0, waited = 0, rc;
        self->busy = 1;
        PyThreadState *ts = PyEval_SaveThread();
        rc = wait_request(self, spin, &count, &waited, &ts);
        PyEval_RestoreThread(ts);
        self->busy = 0;
        if (rc == -1)
            return -1;   /* a signal's exception */
        if (rc != MPI_SUCCESS) {
            mpi_fail(rc, "waiting for a request");
            return -1;
        }
        if (count > self->rawcap || !self->raw) {
            unsigned char *r = PyMem_Realloc(self->raw, count ? count : 1);
            if (!r) {
                PyErr_NoMemory();
                return -1;
            }
            self->raw = r;
            self->rawcap = count ? count : 1;
        }
        self->busy = 1;
        Py_BEGIN_ALLOW_THREADS
        rc = MPI_Recv(self->raw, count, MPI_BYTE, self->root, self->tag_ctrl, self->comm,
                      MPI_STATUS_IGNORE);
        Py_END_ALLOW_THREADS
        self->busy = 0;
        if (rc != MPI_SUCCESS) {
            mpi_fail(rc, "MPI_Recv (request)");
            return -1;
        }
        *count_out = count;
        if (!parse_request(self->raw, count, q))
            return 1;
        if (!waited || mono() - self->last_look > stale) {
            rc = read_cancels(self);
            if (rc != MPI_SUCCESS) {
                mpi_fail(rc, "reading cancels");
                return -1;
            }
        }
        int skip = 0;
        if (q->op >= 1 && q->op <= 4) {   /* ops answered by a result */
            skip = take_cancel(self, q->job);
            Py_ssize_t k = 0;             /* in order: cancels of earlier jobs are moot */
            for (Py_ssize_t i = 0; i < self->ncan; i++)
                if (self->cancelled[i] > q->job)
                    self->cancelled[k++] = self->cancelled[i];
            self->ncan = k;
        }
        *arrays = arrays_of(self, q, !skip);
        if (!*arrays)
            return -1;
        if (!skip)
            return 0;
    }
}

/* next()'s event for a request next_request returned (0) or refused (1); steals arrays */
static PyObject *request_event(Worker *self, int got, const Parsed *q, PyObject *arrays, int count)
{
    if (got == 1)
        return Py_BuildValue("(iy#)", 1, (const char *)self->raw, (Py_ssize_t)count);
    PyObject *params = PyBytes_FromStringAndSize((const char *)self->raw + q->params_at, q->plen);
    if (!params) {
        Py_DECREF(arrays);
        return NULL;
    }
    return Py_BuildValue("(iiLLLiNN)", 0, q->op, (long long)q->job, (long long)q->handle,
                         (long long)q->field, q->flags & 7, params, arrays);   /* 8: transport's */
}

/* next(spin, stale) -> (0, op, job, handle, field, flags, params bytes, [(shape, code,
 * bytearray)]) for the next request not cancelled, or (1, raw bytes) for one refused here.
 * Waits with the GIL released: yielding the core for `spin` seconds, then sleeping from
 * 50 us doubling to 1 ms; cancels and finished sends are looked at every millisecond while
 * spinning and at every poll while sleeping (and finished sends before every request, so a
 * worker that always has one waiting frees its results too). A request that was already
 * waiting, or found more than `stale` seconds after the last look at the cancels, looks at
 * them first; a cancelled result request (ops 1-4) is received and skipped. */
static PyObject *Worker_next(Worker *self, PyObject *args)
{
    double spin, stale;
    if (worker_ready(self) < 0 || !PyArg_ParseTuple(args, "dd", &spin, &stale))
        return NULL;
    Parsed q;
    PyObject *arrays = NULL;
    int count = 0;
    const int got = next_request(self, spin, stale, &q, &arrays, &count);
    return got < 0 ? NULL : request_event(self, got, &q, arrays, count);
}

/* cancelled(job) -> whether job was cancelled (reads the cancels first; forgets it). */
static PyObject *Worker_cancelled(Worker *self, PyObject *arg)
{
    if (worker_ready(self) < 0)
        return NULL;
    long long job = PyLong_AsLongLong(arg);
    if (job == -1 && PyErr_Occurred())
        return NULL;
    int rc = read_cancels(self);
    if (rc != MPI_SUCCESS)
        return mpi_fail(rc, "reading cancels");
    return PyBool_FromLong(take_cancel(self, (int64_t)job));
}

/* reply(job, kind, op, dtype code, payload or None, elapsed_ns): a reply header, and the
 * payload's bytes when there is one; both held until their sends complete. Everything is
 * checked, and room reserved, before the header is posted: a header is never sent without
 * its payload. */
static int post_reply(Worker *self, long long job, int kind, int op, int code, PyObject *payload,
                      long long elapsed)
{
    if (code < 0 || code >= NDTYPES) {
        PyErr_Format(PyExc_ValueError, "dtype code must be between 0 and %d, got %d", NDTYPES - 1, code);
        return -1;
    }
    if (self->out.n >= 64) {   /* a worker that never waits still frees its sends */
        sends_test(&self->out);
        sends_compact(&self->out);
    }
    int64_t *h;
    if (payload == Py_None) {
        if (sends_reserve(&self->out, 1) < 0)
            return -1;
        h = reply_header(job, kind, op, 0, 0, NULL, 0, 0, 0);
        if (!h || sends_post(&self->out, self->comm, self->root, self->tag_hdr, NULL, NULL, h,
                             HEADER_BYTES) < 0)
            return -1;
        return 0;
    }
    Py_buffer v;
    if (PyObject_GetBuffer(payload, &v, PyBUF_ND | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (v.ndim > MAX_NDIM) {
        PyErr_Format(PyExc_ValueError, "arrays may have at most %d dimensions, got %d", MAX_NDIM, v.ndim);
        PyBuffer_Release(&v);
        return -1;
    }
    if (v.len > MAX_BYTES || v.itemsize != ITEMSIZE[code]) {
        PyErr_Format(PyExc_ValueError, "a reply payload of %zd bytes (item size %zd) does not "
                     "fit dtype code %d's item size %lld or exceeds %lld bytes", v.len, v.itemsize,
                     code, (long long)ITEMSIZE[code], (long long)MAX_BYTES);
        PyBuffer_Release(&v);
        return -1;
    }
    /* one message, never split: header, payload */
    const int inl = v.len > 0 && v.len <= INLINE_MAX && HEADER_BYTES + v.len <= CHUNK;
    if (sends_reserve(&self->out, inl ? 1 : 1 + pieces(v.len)) < 0) {
        PyBuffer_Release(&v);
        return -1;
    }
    Py_ssize_t one = v.len / (v.itemsize ? v.itemsize : 1);
    h = reply_header(job, kind, op, code, v.ndim, v.ndim ? v.shape : &one, elapsed, v.len,
                     inl ? v.len : 0);
    if (!h) {
        PyBuffer_Release(&v);
        return -1;
    }
    if (inl) {
        const Py_ssize_t len = v.len;
        memcpy(h + HEADER_LEN, v.buf, len);
        INLINE_OUT++;
        PyBuffer_Release(&v);
        return sends_post(&self->out, self->comm, self->root, self->tag_hdr, NULL, NULL, h,
                          HEADER_BYTES + len) < 0 ? -1 : 0;
    }
    if (sends_post(&self->out, self->comm, self->root, self->tag_hdr, NULL, NULL, h, HEADER_BYTES) < 0) {
        PyBuffer_Release(&v);
        return -1;
    }
    if (sends_post(&self->out, self->comm, self->root, self->tag_res, &v, payload, NULL, 0) < 0)
        return -1;   /* v is the sends' from here on */
    return 0;
}

static PyObject *Worker_reply(Worker *self, PyObject *args)
{
    long long job, elapsed;
    int kind, op, code;
    PyObject *payload;
    if (worker_ready(self) < 0 ||
        !PyArg_ParseTuple(args, "LiiiOL", &job, &kind, &op, &code, &payload, &elapsed))
        return NULL;
    if (post_reply(self, job, kind, op, code, payload, elapsed) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* calls(handlers, memo, ctx, dtypes, frombuffer, ndarray, op_call, kind_result[, product,
 * op_matmul, small]): what serve() runs calls with (see Worker's fields); handlers and memo
 * dicts, dtypes protocol.DTYPES, ndarray numpy's array type (only a result of exactly that
 * type is sent from C: any other goes through numpy.asarray in Python, as before); product,
 * when given and not None, the worker's plain product (WorkerState.plain_product), which
 * serve() then runs for Op.MATMUL (op_matmul) requests of two sent arrays and no flags;
 * small > 0: such a product of float64 arrays that came inline, of at most `small`
 * multiply-adds, serve() computes itself (small_product). */
static PyObject *Worker_calls(Worker *self, PyObject *args)
{
    PyObject *h, *m, *c, *d, *f, *nd, *pr = Py_None;
    int oc, kr, om = -1;
    long long small = 0;
    if (worker_ready(self) < 0 ||
        !PyArg_ParseTuple(args, "O!O!OO!OO!ii|OiL", &PyDict_Type, &h, &PyDict_Type, &m, &c,
                          &PyTuple_Type, &d, &f, &PyType_Type, &nd, &oc, &kr, &pr, &om, &small))
        return NULL;
    if (PyTuple_GET_SIZE(d) != NDTYPES || !PyCallable_Check(f)
        || (pr != Py_None && (!PyCallable_Check(pr) || om < 0)) || small < 0
        || (small > 0 && pr == Py_None)) {
        PyErr_Format(PyExc_ValueError, "calls: `dtypes` must be a tuple of the %d wire dtypes, "
                     "`frombuffer` callable, `product` None or callable with `op_matmul` "
                     "given, and `small` 0 or, with `product`, positive", NDTYPES);
        return NULL;
    }
    Py_XSETREF(self->product, pr == Py_None ? NULL : Py_NewRef(pr));
    self->op_matmul = pr == Py_None ? -1 : om;
    self->small_macs = small;
    Py_XSETREF(self->handlers, Py_NewRef(h));
    Py_XSETREF(self->memo, Py_NewRef(m));
    Py_XSETREF(self->ctx, Py_NewRef(c));
    Py_XSETREF(self->dtypes, Py_NewRef(d));
    Py_XSETREF(self->frombuffer, Py_NewRef(f));
    Py_XSETREF(self->ndarray, Py_NewRef(nd));
    self->op_call = oc;
    self->kind_result = kr;
    Py_RETURN_NONE;
}

/* The wire code (protocol.DTYPES' order) of a buffer's format and item size; -1: none (a
 * byte order other than this machine's, or a type the wire does not carry). */
static int format_code(const Py_buffer *v)
{
    static const char *const fmt[NDTYPES] = {"d", "f", "Zd", "Zf", "q", "B", "e", "i", "?"};
    const char *f = v->format ? v->format : "B";
    const uint16_t probe = 1;
    if (*f == '@' || *f == '=' || (*f == '<' && *(const unsigned char *)&probe == 1))
        f++;
    for (int c = 0; c < NDTYPES; c++) {
        const int same = !strcmp(f, fmt[c]) || (c == 4 && !strcmp(f, "l"))
                         || (c == 7 && !strcmp(f, "l"));
        if (same && v->itemsize == ITEMSIZE[c])
            return c;
    }
    return -1;
}

/* The current exception, if an Exception (not KeyboardInterrupt, SystemExit...), taken as
 * an event (2, job, op, exception with its traceback); NULL otherwise (still raised). */
static PyObject *handler_error(long long job, int op)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return NULL;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    if (!value)
        return NULL;
    return Py_BuildValue("(iLiN)", 2, job, op, value);
}

/* A plain product of two float64 arrays sent inline, a (m x k) @ b (k x n, or k), computed
 * here and replied, without numpy or Python: each entry the sum of its k products in order,
 * from 0, each product and each sum rounded (setup.py builds this file without fused
 * multiply-adds): the bits may differ from BLAS's, whose kernels may order or fuse the sums
 * otherwise; both are float64 products within the same rounding bound. Overflow and
 * NaN stay quiet, as plain_product's. 1: replied; 0: not such a product (serve() goes on
 * as before); -1: an exception is set (the reply could not be posted). */
static int small_product(Worker *self, const Parsed *q, PyObject *arrays)
{
    if (q->inline_at < 0 || q->code[0] != 0 || q->code[1] != 0 || q->ndim[0] != 2
        || (q->ndim[1] != 1 && q->ndim[1] != 2))
        return 0;
    const int64_t m = q->dims[0][0], k = q->dims[0][1];
    const int64_t n = q->ndim[1] == 2 ? q->dims[1][1] : 1;
    if (q->dims[1][0] != k || m < 1 || k < 1 || n < 1 || m > self->small_macs
        || k > self->small_macs / m || n > self->small_macs / (m * k))
        return 0;
    const Py_ssize_t len = (Py_ssize_t)(m * n * 8);
    if (len > INLINE_MAX || HEADER_BYTES + len > CHUNK)
        return 0;
    const double t0 = mono();
    if (self->out.n >= 64) {   /* as post_reply: a worker that never waits frees its sends */
        sends_test(&self->out);
        sends_compact(&self->out);
    }
    if (sends_reserve(&self->out, 1) < 0)
        return -1;
    const Py_ssize_t shape[2] = {(Py_ssize_t)m, (Py_ssize_t)n};
    int64_t *h = reply_header(q->job, self->kind_result, q->op, 0, q->ndim[1], shape, 0, len, len);
    if (!h)
        return -1;
    const double *a = (const double *)PyByteArray_AS_STRING(
        PyTuple_GET_ITEM(PyList_GET_ITEM(arrays, 0), 2));
    const double *b = (const double *)PyByteArray_AS_STRING(
        PyTuple_GET_ITEM(PyList_GET_ITEM(arrays, 1), 2));
    double *c = (double *)(h + HEADER_LEN);
    for (int64_t i = 0; i < m; i++) {
        double *ci = c + i * n;
        const double *ai = a + i * k;
        for (int64_t j = 0; j < n; j++)
            ci[j] = 0.0;
        for (int64_t l = 0; l < k; l++) {
            const double x = ai[l];
            const double *bl = b + l * n;
            for (int64_t j = 0; j < n; j++)
                ci[j] += x * bl[j];
        }
    }
    h[6 + MAX_NDIM] = (int64_t)((mono() - t0) * 1e9);
    INLINE_OUT++;
    return sends_post(&self->out, self->comm, self->root, self->tag_hdr, NULL, NULL, h,
                      HEADER_BYTES + len) < 0 ? -1 : 1;
}

/* serve(spin, stale, long) -> an event for Python. A call (op_call, no handle, field or
 * flags but the inline one) whose parameter bytes protocol's memo holds, checked by a request before, is run
 * here: its arrays made by frombuffer (and reshaped), the handler called with (ctx, *arrays,
 * **params), and a result that is a numpy array exactly (not a subclass, bytes or another
 * buffer), C-contiguous, of a wire dtype and with at least one dimension, replied with its
 * time, as the Python loop would; one that took past `long`
 * seconds and was cancelled meanwhile is dropped. Then the next request. Returned to Python:
 * next()'s events for every other request (or call not in the memo); (2, job, op,
 * exception) for a handler's exception (an Exception); (3, job, op, result, elapsed_ns)
 * for a result to be made an array and sent by Python. A plain product (op_matmul: two
 * sent arrays, no handle, field, flags or parameters) is run the same way when calls() gave
 * the worker's product: product(a, b), its result replied as a call's. The Python loop runs
 * this only for a worker without a failure model (nothing to inject). */
static PyObject *Worker_serve(Worker *self, PyObject *args)
{
    double spin, stale, longs;
    if (worker_ready(self) < 0 || !PyArg_ParseTuple(args, "ddd", &spin, &stale, &longs))
        return NULL;
    if (!self->handlers) {
        PyErr_SetString(PyExc_RuntimeError, "Worker.serve needs calls() first");
        return NULL;
    }
    for (;;) {
        Parsed q;
        PyObject *arrays = NULL;
        int count = 0;
        const int got = next_request(self, spin, stale, &q, &arrays, &count);
        if (got < 0)
            return NULL;
        /* a plain product of two sent arrays (no stored operand, field, compensation or
           parameters): the worker's product, without a context */
        const int prod = got == 0 && self->product && q.op == self->op_matmul
                         && !(q.flags & 7) && q.job >= 0 && q.handle == -1 && q.field == -1
                         && !q.plen && PyList_GET_SIZE(arrays) == 2;
        if (!prod && (got == 1 || q.op != self->op_call || (q.flags & 7) || q.job < 0
                      || q.handle != -1 || q.field != -1 || !q.plen))
            return request_event(self, got, &q, arrays, count);
        if (prod && self->small_macs > 0) {
            const int done = small_product(self, &q, arrays);
            if (done) {
                Py_DECREF(arrays);
                if (done < 0)
                    return handler_error(q.job, q.op);   /* Python sends it as an error reply */
                continue;
            }
        }
        PyObject *fn = NULL, *kw = NULL;
        if (prod) {
            fn = self->product;
        } else {
            PyObject *key = PyBytes_FromStringAndSize((const char *)self->raw + q.params_at, q.plen);
            if (!key) {
                Py_DECREF(arrays);
                return NULL;
            }
            PyObject *seen = PyDict_GetItemWithError(self->memo, key);
            Py_DECREF(key);
            if (seen && PyTuple_Check(seen) && PyTuple_GET_SIZE(seen) == 2
                && PyDict_Check(PyTuple_GET_ITEM(seen, 1))) {
                fn = PyDict_GetItemWithError(self->handlers, PyTuple_GET_ITEM(seen, 0));
                kw = PyTuple_GET_ITEM(seen, 1);
            }
            if (!fn) {
                if (PyErr_Occurred()) {
                    Py_DECREF(arrays);
                    return NULL;
                }
                return request_event(self, 0, &q, arrays, count);   /* Python names the defect */
            }
        }
        Py_INCREF(fn);   /* the handler may change the memo or the handlers */
        Py_XINCREF(kw);
        const Py_ssize_t na = PyList_GET_SIZE(arrays), first = prod ? 0 : 1;
        PyObject *targs = PyTuple_New(first + na), *res = NULL;
        if (targs) {
            if (!prod)
                PyTuple_SET_ITEM(targs, 0, Py_NewRef(self->ctx));
            for (Py_ssize_t i = 0; i < na; i++) {
                PyObject *it = PyList_GET_ITEM(arrays, i);   /* (shape, code, bytearray) */
                PyObject *shape = PyTuple_GET_ITEM(it, 0);
                const long code = PyLong_AsLong(PyTuple_GET_ITEM(it, 1));
                PyObject *a = PyObject_CallFunctionObjArgs(self->frombuffer, PyTuple_GET_ITEM(it, 2),
                                                           PyTuple_GET_ITEM(self->dtypes, code), NULL);
                if (a && !(q.ndim[i] == 1 && q.dims[i][0] > 0)) {
                    PyObject *r = PyObject_CallMethod(a, "reshape", "(O)", shape);
                    Py_DECREF(a);
                    a = r;
                }
                if (!a) {
                    Py_CLEAR(targs);
                    break;
                }
                PyTuple_SET_ITEM(targs, first + i, a);
            }
        }
        Py_DECREF(arrays);
        if (!targs) {
            Py_DECREF(fn);
            Py_XDECREF(kw);
            return NULL;
        }
        const double t0 = mono();
        res = PyObject_Call(fn, targs, kw && PyDict_GET_SIZE(kw) ? kw : NULL);
        const double took = mono() - t0;
        Py_DECREF(targs);
        Py_DECREF(fn);
        Py_XDECREF(kw);
        if (!res)
            return handler_error(q.job, q.op);
        const long long ns = (long long)(took * 1e9);
        Py_buffer v;
        int code = -1;
        if ((PyObject *)Py_TYPE(res) == self->ndarray) {   /* bytes, lists...: numpy in Python */
            if (PyObject_GetBuffer(res, &v, PyBUF_ND | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) == 0) {
                code = v.ndim >= 1 ? format_code(&v) : -1;   /* 0-d: Python makes it 1-d */
                PyBuffer_Release(&v);
            } else {
                PyErr_Clear();
            }
        }
        if (code < 0)
            return Py_BuildValue("(iLiNL)", 3, (long long)q.job, q.op, res, ns);
        if (took > longs) {   /* a cancel may have come meanwhile: decoded, nobody waits */
            int rc = read_cancels(self);
            if (rc != MPI_SUCCESS) {
                Py_DECREF(res);
                return mpi_fail(rc, "reading cancels");
            }
            if (take_cancel(self, q.job)) {
                Py_DECREF(res);
                continue;
            }
        }
        const int bad = post_reply(self, q.job, self->kind_result, q.op, code, res, ns);
        Py_DECREF(res);
        if (bad)
            return handler_error(q.job, q.op);   /* Python sends it as an error reply */
    }
}

/* finish(): wait for every send in flight, read the last cancels and cancel the cancel
 * receive (a worker's goodbye). */
static PyObject *Worker_finish(Worker *self, PyObject *Py_UNUSED(ignored))
{
    if (worker_ready(self) < 0)
        return NULL;
    int rc = MPI_SUCCESS;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < self->out.n && rc == MPI_SUCCESS; i++)
        if (self->out.req[i] != MPI_REQUEST_NULL) {
            rc = MPI_Wait(&self->out.req[i], MPI_STATUS_IGNORE);
            if (rc == MPI_SUCCESS)
                self->out.done++;
        }
    if (rc == MPI_SUCCESS)
        rc = read_cancels(self);
    if (rc == MPI_SUCCESS && self->creq != MPI_REQUEST_NULL) {
        MPI_Cancel(&self->creq);
        rc = MPI_Wait(&self->creq, MPI_STATUS_IGNORE);
    }
    Py_END_ALLOW_THREADS
    self->busy = 0;
    sends_compact(&self->out);
    drop_calls(self);   /* serve() is over: no cycle through the handlers is kept */
    if (rc != MPI_SUCCESS)
        return mpi_fail(rc, "finishing the worker's sends");
    Py_RETURN_NONE;
}

static PyObject *Worker_pending(Worker *self, PyObject *Py_UNUSED(ignored))
{
    if (worker_ready(self) < 0)
        return NULL;
    sends_test(&self->out);
    sends_compact(&self->out);
    return Py_BuildValue("(nn)", self->out.n, self->ncan);
}

static PyMethodDef Worker_methods[] = {
    {"next", (PyCFunction)Worker_next, METH_VARARGS,
     "next(spin, stale) -> the next request not cancelled (see the C source)"},
    {"calls", (PyCFunction)Worker_calls, METH_VARARGS,
     "calls(handlers, memo, ctx, dtypes, frombuffer, ndarray, op_call, kind_result[, product, "
     "op_matmul]): serve()'s calls and plain products"},
    {"serve", (PyCFunction)Worker_serve, METH_VARARGS,
     "serve(spin, stale, long) -> an event for Python; runs memoised calls itself (see the C source)"},
    {"cancelled", (PyCFunction)Worker_cancelled, METH_O,
     "cancelled(job) -> whether the root cancelled job (read now)"},
    {"reply", (PyCFunction)Worker_reply, METH_VARARGS,
     "reply(job, kind, op, dtype code, payload or None, elapsed_ns)"},
    {"finish", (PyCFunction)Worker_finish, METH_NOARGS, "finish(): wait for the sends in flight"},
    {"pending", (PyCFunction)Worker_pending, METH_NOARGS,
     "pending() -> (sends in flight, cancels held)"},
    {NULL}};

static PyTypeObject WorkerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "codedml.runtime._wire.Worker",
    .tp_basicsize = sizeof(Worker),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Worker_new,
    .tp_init = (initproc)Worker_init,
    .tp_dealloc = (destructor)Worker_dealloc,
    .tp_methods = Worker_methods,
    .tp_doc = "A worker's message engine: Worker(fcomm, root, (ctrl, task, hdr, res, cancel))",
};

/* ------------------------------------------------------------------ parsers, for tests */
/* format_code(obj) -> the wire dtype code serve() would send obj's buffer with, or -1 */
static PyObject *py_format_code(PyObject *m, PyObject *arg)
{
    (void)m;
    Py_buffer v;
    if (PyObject_GetBuffer(arg, &v, PyBUF_ND | PyBUF_FORMAT) < 0)
        return NULL;
    const int c = format_code(&v);
    PyBuffer_Release(&v);
    return PyLong_FromLong(c);
}

static PyObject *py_check_header(PyObject *m, PyObject *arg)
{
    Py_buffer v;
    if (PyObject_GetBuffer(arg, &v, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *r;
    const int64_t *h = (const int64_t *)v.buf;
    int layout = v.len <= SLOT_LEN * 8 ? reply_layout(h, (int)v.len) : 0;
    if (!layout) {
        r = Py_NewRef(Py_None);
    } else {
        r = parsed_header(h, v.len);
        if (r && layout == 1)   /* a header alone: its seven fields */
            Py_SETREF(r, PyTuple_GetSlice(r, 0, 7));
    }
    PyBuffer_Release(&v);
    return r;
}

static PyObject *py_parse_request(PyObject *m, PyObject *arg)
{
    Py_buffer v;
    if (PyObject_GetBuffer(arg, &v, PyBUF_SIMPLE) < 0)
        return NULL;
    Parsed q;
    PyObject *r = NULL;
    if (!parse_request(v.buf, v.len, &q)) {
        r = Py_NewRef(Py_None);
        goto done;
    }
    PyObject *arrays = PyList_New(q.narr);
    if (!arrays)
        goto done;
    for (int a = 0; a < q.narr; a++) {
        PyObject *shape = shape_tuple(q.ndim[a], q.dims[a]);
        PyObject *item = shape ? Py_BuildValue("(Ni)", shape, q.code[a]) : NULL;
        if (!item) {
            Py_DECREF(arrays);
            goto done;
        }
        PyList_SET_ITEM(arrays, a, item);
    }
    r = Py_BuildValue("(iLLLiy#N)", q.op, (long long)q.job, (long long)q.handle,
                      (long long)q.field, q.flags & 7, (const char *)v.buf + q.params_at,
                      (Py_ssize_t)q.plen, arrays);
done:
    PyBuffer_Release(&v);
    return r;
}

static PyObject *py_library_version(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    char text[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    if (MPI_Get_library_version(text, &len) != MPI_SUCCESS)
        len = 0;
    return PyUnicode_DecodeUTF8(text, len, "replace");
}

static PyObject *py_set_chunk(PyObject *m, PyObject *arg)
{
    Py_ssize_t c = PyLong_AsSsize_t(arg);
    if (c == -1 && PyErr_Occurred())
        return NULL;
    if (c < 1 || c > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "`chunk` must be from 1 to %d bytes, got %zd", INT_MAX, c);
        return NULL;
    }
    Py_ssize_t old = CHUNK;
    CHUNK = c;
    return PyLong_FromSsize_t(old);
}

/* mpi_yields() -> whether the MPI library yields the core itself while it waits (True or
 * False), or None where it does not say. Open MPI has a control variable for it,
 * mpi_yield_when_idle, which it turns on when the node is oversubscribed: its progress loop
 * (inside every MPI_Iprobe and MPI_Testsome) then calls sched_yield when it found nothing,
 * and a yield of ours after that call is a second hand-over of the core per poll. Read
 * through the MPI tool interface, after MPI_Init. */
static PyObject *py_mpi_yields(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    static int cached = -2;   /* -2: not asked yet; -1: MPI does not say; 0, 1 */
    int initialised = 0, finalised = 0;
    MPI_Initialized(&initialised);
    MPI_Finalized(&finalised);
    if (!initialised || finalised) {
        PyErr_SetString(PyExc_RuntimeError, "mpi_yields() needs MPI initialised and not finalised");
        return NULL;
    }
    if (cached != -2) {
        if (cached < 0)
            Py_RETURN_NONE;
        return PyBool_FromLong(cached);
    }
    int provided = 0, idx = -1, result = -1, level = MPI_THREAD_SINGLE;
    /* the tool interface at the thread level MPI runs at: Open MPI lowers the library's
       own level (MPI_Query_thread) to the one asked for here */
    if (MPI_Query_thread(&level) != MPI_SUCCESS ||
        MPI_T_init_thread(level, &provided) != MPI_SUCCESS)
        Py_RETURN_NONE;
    if (MPI_T_cvar_get_index("mpi_yield_when_idle", &idx) == MPI_SUCCESS) {
        char name[256], desc[256];
        int nlen = sizeof name, dlen = sizeof desc, verb = 0, bind = 0, scope = 0;
        MPI_Datatype dt = MPI_DATATYPE_NULL;
        MPI_T_enum en;
        MPI_T_cvar_handle h;
        int count = 0;
        if (MPI_T_cvar_get_info(idx, name, &nlen, &verb, &dt, &en, desc, &dlen, &bind,
                                &scope) == MPI_SUCCESS && bind == MPI_T_BIND_NO_OBJECT &&
            MPI_T_cvar_handle_alloc(idx, NULL, &h, &count) == MPI_SUCCESS) {
            union { unsigned char b[64]; int i; unsigned u; } v;   /* room for any scalar */
            memset(&v, 0, sizeof v);
            if (count == 1 && MPI_T_cvar_read(h, &v) == MPI_SUCCESS) {
                if (dt == MPI_C_BOOL || dt == MPI_CHAR || dt == MPI_UNSIGNED_CHAR)
                    result = v.b[0] != 0;
                else if (dt == MPI_INT || dt == MPI_UNSIGNED)
                    result = v.i != 0;
            }
            MPI_T_cvar_handle_free(&h);
        }
    }
    MPI_T_finalize();
    cached = result;   /* asked once a process: the answer does not change */
    if (result < 0)
        Py_RETURN_NONE;
    return PyBool_FromLong(result);
}

static PyObject *py_inline_messages(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    return Py_BuildValue("(LL)", INLINE_OUT, INLINE_IN);
}

static PyObject *py_split_messages(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLongLong(SPLIT);
}

static PyMethodDef module_methods[] = {
    {"split_messages", py_split_messages, METH_NOARGS,
     "how many messages this process sent in more than one piece"},
    {"mpi_yields", py_mpi_yields, METH_NOARGS,
     "whether the MPI library yields the core itself while it waits (None: it does not say)"},
    {"inline_messages", py_inline_messages, METH_NOARGS,
     "(sent, received): messages of this process that carried their payload inline"},
    {"set_chunk", py_set_chunk, METH_O,
     "set_chunk(bytes) -> the previous size: the largest piece a message travels in (for tests; "
     "every rank must use the same)"},
    {"check_header", py_check_header, METH_O,
     "check_header(bytes) -> the parsed reply header (and its inline payload, when the message "
     "carries one), or None where it is refused"},
    {"parse_request", py_parse_request, METH_O,
     "parse_request(bytes) -> (op, job, handle, field, flags, params, [(shape, code)]) or None"},
    {"format_code", py_format_code, METH_O,
     "format_code(obj) -> the wire dtype code of obj's buffer (Worker.serve's), or -1"},
    {"library_version", py_library_version, METH_NOARGS,
     "the MPI library this module calls (MPI_Get_library_version)"},
    {NULL}};

static int add(PyObject *m, const char *name, PyObject *v)
{
    if (!v)
        return -1;
    int rc = PyModule_AddObjectRef(m, name, v);
    Py_DECREF(v);
    return rc;
}

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_wire",
    "The MPI runtime's per-message path in C (see codedml/runtime/_wire.c).", -1, module_methods};

PyMODINIT_FUNC PyInit__wire(void)
{
    if (PyType_Ready(&RootType) < 0 || PyType_Ready(&WorkerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m)
        return NULL;
    WireError = PyErr_NewException("codedml.runtime._wire.WireError", NULL, NULL);
    if (!WireError || PyModule_AddObjectRef(m, "WireError", WireError) < 0 ||
        PyModule_AddObjectRef(m, "Root", (PyObject *)&RootType) < 0 ||
        PyModule_AddObjectRef(m, "Worker", (PyObject *)&WorkerType) < 0)
        return NULL;
#if defined(OPEN_MPI) && OPEN_MPI
    const char *vendor = "Open MPI";
    int major = OMPI_MAJOR_VERSION;
#elif defined(MPICH_VERSION)
    const char *vendor = "MPICH";
    int major = MPICH_NUMVERSION / 10000000;
#else
    const char *vendor = "unknown";
    int major = 0;
#endif
    PyObject *itemsizes = Py_BuildValue("(LLLLLLLLL)", ITEMSIZE[0], ITEMSIZE[1], ITEMSIZE[2],
        ITEMSIZE[3], ITEMSIZE[4], ITEMSIZE[5], ITEMSIZE[6], ITEMSIZE[7], ITEMSIZE[8]);
    if (add(m, "VENDOR", Py_BuildValue("(si)", vendor, major)) < 0 ||
        PyModule_AddIntConstant(m, "MAX_NDIM", MAX_NDIM) < 0 ||
        PyModule_AddIntConstant(m, "HEADER_LEN", HEADER_LEN) < 0 ||
        PyModule_AddIntConstant(m, "INLINE_MAX", INLINE_MAX) < 0 ||
        PyModule_AddIntConstant(m, "JOB_AT", JOB_AT) < 0 ||
        PyModule_AddIntConstant(m, "REPLY_MAGIC", REPLY_MAGIC) < 0 ||
        add(m, "REQ_MAGIC", PyLong_FromUnsignedLong(REQ_MAGIC)) < 0 ||
        PyModule_AddIntConstant(m, "MAX_ARRAYS", MAX_ARRAYS) < 0 ||
        PyModule_AddIntConstant(m, "UINT8_CODE", UINT8_CODE) < 0 ||
        PyModule_AddIntConstant(m, "NOPS", NOPS) < 0 ||
        PyModule_AddIntConstant(m, "NKINDS", KIND_ACK + 1) < 0 ||
        add(m, "MAX_BYTES", PyLong_FromLongLong(MAX_BYTES)) < 0 ||
        add(m, "ITEMSIZE", itemsizes) < 0)
        return NULL;
    return m;
}
